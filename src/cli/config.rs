//! `--config FILE` for every command that takes it, and `danerelay
//! check-config`: read, validate, print every problem with its key path.

use std::io::Write;
use std::path::PathBuf;

use crate::config::{self, Config};

use super::exit::Exit;

/// `--config FILE`: without it, the embedded development default.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Configuration file; without it, the embedded development default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How warnings are shown: plainly on stderr for one-shot commands, in
/// the log for `serve` (where stderr is the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warnings {
    Plain,
    Log,
}

/// Why a configuration could not be used; every message is already on
/// stderr when this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadFailure {
    /// The file could not be read.
    Unreadable,
    /// The file was read and is invalid.
    Invalid,
}

impl LoadFailure {
    /// The exit code for commands other than `check-config`.
    pub fn exit(self) -> Exit {
        match self {
            LoadFailure::Unreadable => Exit::NO_INPUT,
            LoadFailure::Invalid => Exit::CONFIG,
        }
    }
}

impl ConfigArg {
    /// Loads `--config` or the embedded default, printing every error.
    pub fn load(&self, warnings: Warnings) -> Result<Config, LoadFailure> {
        let Some(path) = &self.config else {
            return Ok(config::development());
        };
        let shown = path.display();
        let mut err = std::io::stderr().lock();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "{shown}: cannot read {shown}: {e}");
                return Err(LoadFailure::Unreadable);
            }
        };
        match config::parse(&text) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    match warnings {
                        Warnings::Plain => {
                            let _ = writeln!(err, "{shown}: warning: {w}");
                        }
                        Warnings::Log => tracing::warn!("{shown}: {w}"),
                    }
                }
                Ok(loaded.config)
            }
            Err(errors) => {
                for e in &errors {
                    let _ = writeln!(err, "{shown}: {e}");
                }
                let _ = writeln!(err, "{shown}: {} error(s)", errors.len());
                Err(LoadFailure::Invalid)
            }
        }
    }

    /// [`ConfigArg::load`] for commands other than `check-config`: a
    /// failure is already the exit code (66 unreadable, 78 invalid).
    pub fn load_or_exit(&self, warnings: Warnings) -> Result<Config, Exit> {
        self.load(warnings).map_err(LoadFailure::exit)
    }
}

/// `danerelay check-config`: 0 valid, 64 invalid or unreadable (the README
/// fixes both numbers).
pub fn check_config(arg: &ConfigArg) -> Exit {
    match arg.load(Warnings::Plain) {
        Ok(config) => {
            let what = arg
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded development default".into());
            if let Some(w) = config::tls_rpt::unsigned_warning(&config.tls_rpt) {
                eprintln!("{what}: warning: {w}");
            }
            println!("{what}: valid");
            Exit::OK
        }
        Err(_) => Exit::USAGE,
    }
}
