//! `danerelay serve`: load the configuration, start a multi-threaded
//! runtime, run [`crate::serve`] until SIGTERM.

use super::config::{ConfigArg, Warnings};
use super::exit::Exit;

/// Runs the relay; 0 after a clean drain.
pub fn run(arg: &ConfigArg) -> Exit {
    let config = match arg.load_or_exit(Warnings::Log) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if arg.config.is_none() {
        tracing::info!("no --config: running on the embedded development default (loopback only)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return Exit::SOFTWARE;
        }
    };
    match runtime.block_on(crate::serve(config)) {
        Ok(()) => Exit::OK,
        Err(e) => {
            // A listener that cannot bind, a queue that cannot open, a
            // DNSSEC probe that fails: the relay is unavailable.
            tracing::error!("{e:#}");
            Exit::UNAVAILABLE
        }
    }
}
