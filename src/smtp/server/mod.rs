//! The submission server (RFC 6409, RFC 8314; README "Configuration"): `listener.rs`
//! accepts, `conn.rs` drives one connection's I/O, `session.rs` decides every
//! reply (sans I/O), `data.rs` reads DATA/BDAT content, `headers.rs` adds
//! trace and missing header fields, `store.rs` streams bodies into the queue,
//! `session_types.rs` the values it exchanges with `conn.rs`, `signing.rs` puts
//! DKIM signing in front of the store, `tls.rs` holds
//! the (reloadable) certificate, `limits.rs` the abuse limits
//! that need shared state (per-address connections and rate, per-user
//! message rate) or byte counting (header section).

pub mod conn;
pub mod data;
pub mod headers;
pub mod limits;
pub mod listener;
pub mod params;
pub mod reencode;
pub mod sasl;
pub mod session;
pub mod session_types;
pub mod signing;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
pub use store::{MessageSink, MessageStore, StoreError, Submitted};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding submission listener {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(tls::TlsError),
    #[error("users file: {0}")]
    Users(#[from] crate::auth::AuthError),
    #[error("DKIM: {0}")]
    Dkim(#[from] crate::dkim::KeyError),
}

/// Tuning that is not (yet) configuration.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How often `[tls]` certificate and `[[dkim]]` key files are checked for rotation.
    pub cert_poll: Duration,
    /// Abuse state shared with other ways in; `None` = the listeners' own.
    pub guards: Option<Guards>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            cert_poll: Duration::from_secs(10),
            guards: None,
        }
    }
}

/// Abuse state every way in shares (the SMTP listeners and HTTP
/// submission), so that switching protocol buys no extra password guesses
/// and no extra messages per hour.
#[derive(Clone)]
pub struct Guards {
    /// Delays after failed logins, per client network.
    pub throttle: Arc<crate::auth::FailureThrottle>,
    /// `limits.messages_per_user_per_hour`.
    pub user_rate: Arc<limits::UserRate>,
    /// Set while the replica drains (`queue drain`): new connections get
    /// `421 4.3.2` and are closed.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Guards {
    pub fn new(limits: &crate::config::Limits) -> Guards {
        Guards {
            throttle: Arc::new(crate::auth::FailureThrottle::default()),
            user_rate: limits::UserRate::per_hour(limits.messages_per_user_per_hour),
            draining: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guards")
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

/// The integrator's entry point: serves every `[[listener]]` into the queue.
/// See [`run_with_store`].
pub async fn run(
    cfg: Arc<Config>,
    queue: danerelay_queue::Queue,
    guards: Guards,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Vec<SocketAddr>, ServerError> {
    run_with_store(
        cfg,
        Arc::new(queue),
        ServerOptions {
            guards: Some(guards),
            ..ServerOptions::default()
        },
        metrics,
        shutdown,
        tracker,
    )
    .await
}

/// Binds every `[[listener]]` and serves until `shutdown` is cancelled, storing
/// accepted messages in `store`. Returns the bound addresses (port 0 resolved)
/// in `cfg.listeners` order. Connection tasks run under `tracker`; after
/// cancellation listeners stop accepting and idle sessions get `421 4.3.2`.
/// Sessions, messages, refusals and limit hits are counted in `metrics`.
pub async fn run_with_store(
    cfg: Arc<Config>,
    store: Arc<dyn MessageStore>,
    opts: ServerOptions,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Vec<SocketAddr>, ServerError> {
    let store: Arc<dyn MessageStore> = Arc::new(reencode::Reencoding::new(store));
    listener::serve(cfg, store, opts, metrics, shutdown, tracker).await
}
