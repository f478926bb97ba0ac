//! Listening sockets: binds every `[[listener]]`, accepts until shutdown,
//! enforces `limits.max_connections` (a clear `421 4.7.0` instead of the
//! greeting beyond it) and starts one [`Conn`] per client under the
//! `TaskTracker`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::conn::{Conn, Shared};
use super::session::{Session, SessionConfig};
use super::store::MessageStore;
use super::tls::{watch, ServerTls, TlsError};
use super::{ServerError, ServerOptions};
use crate::auth::{FailureThrottle, UserStore};
use crate::config::{Config, ListenerConfig, ListenerTls, TlsSource};
use crate::smtp::wire::Reply;

/// Binds all listeners and serves them with `store` until `shutdown`.
/// Returns the bound addresses (port 0 resolved), in `cfg.listeners` order.
pub async fn serve(
    cfg: Arc<Config>,
    store: Arc<dyn MessageStore>,
    opts: ServerOptions,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Vec<SocketAddr>, ServerError> {
    let needs_tls = cfg.listeners.iter().any(|l| l.tls != ListenerTls::None);
    let tls = if needs_tls {
        let tls = ServerTls::from_source(&cfg.tls, &cfg.hostname)?;
        if let TlsSource::Files {
            certificate,
            private_key,
        } = &cfg.tls
        {
            tracker.spawn(watch(
                tls.resolver.clone(),
                certificate.clone(),
                private_key.clone(),
                opts.cert_poll,
                shutdown.clone(),
            ));
        }
        Some(tls)
    } else {
        None
    };
    let users = match &cfg.auth.users_file {
        Some(path) => Some(Arc::new(UserStore::open(path)?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        tls,
        users,
        throttle: Arc::new(FailureThrottle::default()),
        store,
        shutdown: shutdown.clone(),
        command_timeout: cfg.limits.command_timeout,
    });
    let slots = Arc::new(Semaphore::new(cfg.limits.max_connections));
    let mut bound = Vec::new();
    for lc in &cfg.listeners {
        let listener = TcpListener::bind(lc.address)
            .await
            .map_err(|source| ServerError::Bind {
                address: lc.address,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            address: lc.address,
            source,
        })?;
        tracing::info!(address = %local, tls = ?lc.tls, "submission listener bound");
        bound.push(local);
        let accept = accept_loop(
            listener,
            lc.clone(),
            cfg.clone(),
            shared.clone(),
            slots.clone(),
            tracker.clone(),
        );
        tracker.spawn(accept);
    }
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    lc: ListenerConfig,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned().ok();
        let span = tracing::info_span!("smtp", peer = %peer, listener = %lc.address);
        let conn = connection(stream, peer, lc.tls, cfg.clone(), shared.clone(), permit);
        tracker.spawn(conn.instrument(span));
    }
    tracing::debug!(address = %lc.address, "listener stopped accepting");
}

fn is_trusted(cfg: &Config, ip: IpAddr) -> bool {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    cfg.auth.trusted_networks.iter().any(|n| n.contains(&ip))
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mode: ListenerTls,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
) {
    tracing::debug!("connected");
    let mut conn = Conn::new(Box::new(stream), peer.ip(), shared.clone());
    let tls = if mode == ListenerTls::Implicit {
        match conn.accept_tls().await {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::debug!(error = %e, "implicit TLS handshake failed");
                return;
            }
        }
    } else {
        None
    };
    let Some(_permit) = permit else {
        tracing::warn!(
            max = cfg.limits.max_connections,
            "connection limit reached; refusing"
        );
        let _ = conn
            .close_with(&Reply::too_many_connections(&cfg.hostname))
            .await;
        return;
    };
    let session = Session::new(
        SessionConfig {
            hostname: cfg.hostname.clone(),
            starttls: mode == ListenerTls::StartTls && shared.tls.is_some(),
            auth_available: shared.users.is_some(),
            trusted: is_trusted(&cfg, peer.ip()),
            sender_policy: cfg.auth.sender_policy,
            max_message_size: cfg.limits.max_message_size,
            max_recipients: cfg.limits.max_recipients,
            max_auth_failures: cfg.limits.max_auth_failures,
        },
        tls,
    );
    match conn.run(session).await {
        Ok(()) => tracing::debug!("disconnected"),
        Err(e) => tracing::debug!(error = %e, "connection ended"),
    }
}

impl From<TlsError> for ServerError {
    fn from(e: TlsError) -> Self {
        ServerError::Tls(e)
    }
}
