//! Listening sockets: binds every `[[listener]]`, accepts until shutdown,
//! enforces `limits.max_connections`, `max_connections_per_ip` and
//! `connection_rate_per_ip` (a clear `421 4.7.0` instead of the greeting
//! beyond them; trusted networks are exempt from the per-address limits),
//! starts one [`Conn`] per client under the `TaskTracker` and counts sessions
//! in the metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::conn::{Conn, Shared};
use super::limits::{ClientLimiter, IpSlot, UserRate};
use super::session::{Session, SessionConfig, SessionLimits, StorageGate};
use super::store::MessageStore;
use super::tls::{watch, ServerTls, TlsError};
use super::{ServerError, ServerOptions};
use crate::auth::{FailureThrottle, UserStore};
use crate::config::{Config, ListenerConfig, ListenerTls, TlsSource};
use crate::metrics::{LimitHit, ListenerLabel, Metrics, SessionTls};
use crate::smtp::Reply;

/// Limits shared by every listener.
struct Gate {
    slots: Arc<Semaphore>,
    clients: Arc<ClientLimiter>,
    user_rate: Arc<UserRate>,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a connection is refused before its greeting.
enum Admission {
    Admitted {
        _slot: OwnedSemaphorePermit,
        _ip: Option<IpSlot>,
    },
    Refused(LimitHit),
}

/// Binds all listeners and serves them with `store` until `shutdown`.
/// Returns the bound addresses (port 0 resolved), in `cfg.listeners` order.
pub async fn serve(
    cfg: Arc<Config>,
    store: Arc<dyn MessageStore>,
    opts: ServerOptions,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Result<Vec<SocketAddr>, ServerError> {
    let tls = server_tls(&cfg, &opts, &shutdown, &tracker)?;
    let dkim = Arc::new(crate::dkim::Signer::load(&cfg.dkim, metrics.clone())?);
    tracker.spawn(crate::dkim::watch(
        dkim.clone(),
        opts.cert_poll,
        shutdown.clone(),
    ));
    let users = match &cfg.auth.users_file {
        Some(path) => Some(Arc::new(UserStore::open(path)?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        tls,
        users,
        throttle: opts.guards.as_ref().map_or_else(
            || Arc::new(FailureThrottle::default()),
            |g| g.throttle.clone(),
        ),
        store,
        dkim,
        shutdown: shutdown.clone(),
        command_timeout: cfg.limits.command_timeout,
        session_timeout: cfg.limits.session_timeout,
        data_timeout: cfg.limits.data_timeout,
        max_header_size: cfg.limits.max_header_size,
        max_header_fields: cfg.limits.max_header_fields,
        metrics,
    });
    let gate = Arc::new(Gate {
        slots: Arc::new(Semaphore::new(cfg.limits.max_connections)),
        clients: ClientLimiter::new(
            cfg.limits.max_connections_per_ip,
            cfg.limits.connection_rate_per_ip,
        ),
        user_rate: opts.guards.as_ref().map_or_else(
            || UserRate::per_hour(cfg.limits.messages_per_user_per_hour),
            |g| g.user_rate.clone(),
        ),
        draining: opts
            .guards
            .as_ref()
            .map(|g| g.draining.clone())
            .unwrap_or_default(),
    });
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
            gate.clone(),
            tracker.clone(),
        );
        tracker.spawn(accept);
    }
    Ok(bound)
}

/// The listeners' TLS (certificate hot-reloaded when it comes from files),
/// `None` when no listener uses TLS.
fn server_tls(
    cfg: &Config,
    opts: &ServerOptions,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<ServerTls>, ServerError> {
    if cfg.listeners.iter().all(|l| l.tls == ListenerTls::None) {
        return Ok(None);
    }
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
    Ok(Some(tls))
}

async fn accept_loop(
    listener: TcpListener,
    lc: ListenerConfig,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
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
        if gate.draining.load(std::sync::atomic::Ordering::Acquire) {
            // Draining (`queue drain`): like shutdown, 421 4.3.2 and close.
            tracker.spawn(refuse_draining(stream, cfg.hostname.clone()));
            continue;
        }
        let admission = admit(&cfg, &gate, peer.ip());
        let span = tracing::info_span!("smtp", peer = %peer, listener = %lc.address);
        let conn = connection(
            stream,
            peer,
            lc.tls,
            cfg.clone(),
            shared.clone(),
            admission,
            gate.user_rate.clone(),
        );
        tracker.spawn(conn.instrument(span));
    }
    tracing::debug!(address = %lc.address, "listener stopped accepting");
}

async fn refuse_draining(mut stream: TcpStream, host: String) {
    use tokio::io::AsyncWriteExt;
    let reply = Reply::shutting_down(&host).to_bytes();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = stream.write_all(&reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Rate first (every attempt counts), then the per-address and total slots.
fn admit(cfg: &Config, gate: &Gate, ip: IpAddr) -> Admission {
    let ip_slot = if is_trusted(cfg, ip) {
        None
    } else {
        match gate.clients.admit(ip) {
            Ok(slot) => Some(slot),
            Err(hit) => return Admission::Refused(hit),
        }
    };
    match gate.slots.clone().try_acquire_owned() {
        Ok(slot) => Admission::Admitted {
            _slot: slot,
            _ip: ip_slot,
        },
        Err(_) => Admission::Refused(LimitHit::Connections),
    }
}

fn refusal(hit: LimitHit, host: &str) -> Reply {
    match hit {
        LimitHit::ConnectionsPerIp => Reply::too_many_connections_from_ip(host),
        LimitHit::ConnectionRate => Reply::connection_rate_exceeded(host),
        _ => Reply::too_many_connections(host),
    }
}

/// Keeps `danerelay_smtp_sessions_active` right on every exit path.
struct ActiveGuard(Metrics);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.smtp_sessions_active.dec();
    }
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
    admission: Admission,
    user_rate: Arc<UserRate>,
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
    let _admitted = match admission {
        Admission::Refused(hit) => {
            tracing::warn!(limit = ?hit, "connection limit reached; refusing");
            shared.metrics.limit_hit(hit);
            let _ = conn.close_with(&refusal(hit, &cfg.hostname)).await;
            return;
        }
        admitted @ Admission::Admitted { .. } => admitted,
    };
    let metrics = shared.metrics.clone();
    metrics.smtp_sessions_active.inc();
    let active = ActiveGuard(metrics.clone());
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
            limits: SessionLimits {
                max_junk_commands: cfg.limits.max_junk_commands,
                max_recipients_per_session: cfg.limits.max_recipients_per_session,
                user_rate: Some(user_rate),
                storage: Some(StorageGate(shared.store.clone())),
            },
        },
        tls,
    );
    match conn.run(session).await {
        Ok(()) => tracing::debug!("disconnected"),
        Err(e) => tracing::debug!(error = %e, "connection ended"),
    }
    let listener = match mode {
        ListenerTls::StartTls => ListenerLabel::StartTls,
        ListenerTls::Implicit => ListenerLabel::Implicit,
        ListenerTls::None => ListenerLabel::None,
    };
    let tls = if conn.tls_used() {
        SessionTls::Tls
    } else {
        SessionTls::Plaintext
    };
    metrics.session_finished(listener, tls);
    drop(active);
}

impl From<TlsError> for ServerError {
    fn from(e: TlsError) -> Self {
        ServerError::Tls(e)
    }
}
