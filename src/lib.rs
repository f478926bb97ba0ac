//! # danerelay
//!
//! An outbound SMTP relay: applications submit mail over authenticated,
//! encrypted SMTP; every accepted message is stored durably; delivery
//! authenticates each recipient domain's MX hosts with DANE (RFC 7672) where
//! DNSSEC-signed TLSA records exist, and uses opportunistic STARTTLS where not.
//!
//! # Layout
//! - [`config`]   — typed, validated configuration (and the dev default).
//! - [`dns`]      — lookups that carry their DNSSEC status.
//! - [`dane`]     — RFC 7672 TLSA usability, policy decision, rustls verifier.
//! - [`smtp`]     — the wire (sans-I/O) and the submission server.
//! - [`auth`]     — users file (Argon2id) and sender policy.
//! - [`dkim`]     — DKIM signing at acceptance, key loading and `dkim keygen`.
//! - [`delivery`] — the outbound side: routing, attempts, outcomes, retries,
//!   traffic shaping; `delivery::suspend`/`gate`: destinations suspended by
//!   hand, the drain switch.
//! - [`cluster`]  — `[cluster] redis_url`: destination budgets shared by replicas.
//! - [`drain`]    — `queue drain`: hand the whole queue to another relay (scale-in).
//! - [`http`]     — `/metrics`, `/healthz`, `/readyz`, admin API, HTTP submission.
//! - [`submit`]   — one message from an application (HTTP) through SMTP
//!   submission's checks, headers, DKIM and store.
//! - [`metrics`]  — every Prometheus metric, declared once.
//! - [`mime`]     — streaming MIME re-encoding: long lines at acceptance, 8BITMIME downgrade.
//! - [`cli`]      — every command's front end: arguments, output, exit codes.
//! - [`sts`]      — MTA-STS (RFC 8461): discovery, fetch, cache, per-host rule.
//! - [`sync`]     — poison-tolerant locking.
//! - [`tlsrpt`]   — RFC 8460 TLS reporting: counts per policy domain and day, reports.
//! - the queue is its own crate, `danerelay-queue` (`queue/`).
//! - `testing`  — test doubles (fake DNS, fake MX, clock, certificates);
//!   tests and the `test-util` feature only.
//!
//! This file is the composition root: it wires the parts together and owns
//! no logic of its own. Dependencies point one way:
//! `main → lib → {smtp server, delivery} → {smtp client, dane, dns, queue} →
//! {wire types, config, metrics}`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dane;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod drain;
pub mod http;
pub mod metrics;
pub mod mime;
pub mod smtp;
pub mod sts;
pub mod submit;
pub mod sync;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tlsrpt;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use danerelay_queue::{Queue, QueueOptions, QueueTuning};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::Readiness;
use crate::metrics::{DnssecModeLabel, Metrics};

/// Runs the relay until SIGTERM/SIGINT, then drains within
/// `config.shutdown_grace`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = start(config, shutdown.clone()).await?;
    wait_for_signal().await;
    tracing::info!("shutdown requested: draining");
    running.drain().await;
    Ok(())
}

/// A started relay: what [`serve`] and tests drive.
pub struct Running {
    pub config: Arc<Config>,
    pub http_address: std::net::SocketAddr,
    /// The bound submission listeners, in `config.listeners` order.
    pub smtp_addresses: Vec<std::net::SocketAddr>,
    /// `POST /api/v1/messages`, when `http.submission_address` is set.
    pub submission_address: Option<std::net::SocketAddr>,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub queue: Queue,
    /// TLS-RPT counts (`None` when `tls_rpt.enabled = false`).
    pub tls_rpt: Option<Arc<tlsrpt::Recorder>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    http_stop: CancellationToken,
    http_task: tokio::task::JoinHandle<()>,
}

/// Starts every component; returns once all listeners are bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_with(config, shutdown, true).await
}

/// [`start`] without the delivery scheduler: for tests of the other
/// components that enqueue mail and must see it stay queued (and must not
/// reach out to a resolver).
pub async fn start_without_delivery(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    start_with(config, shutdown, false).await
}

async fn start_with(
    config: Config,
    shutdown: CancellationToken,
    deliver: bool,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let tracker = TaskTracker::new();

    let queue = open_queue(&config).await?;
    readiness.queue_open.store(true, Ordering::Release);
    tracker.spawn(refresh_queue_metrics(
        queue.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    queue.set_min_free_space(config.queue.min_free_space);
    let mut storage = StorageWatch::default();
    storage.check(&queue, &readiness, &metrics).await;
    tracker.spawn(storage.run(
        queue.clone(),
        readiness.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    if let Some(w) = config::tls_rpt::unsigned_warning(&config.tls_rpt) {
        tracing::warn!("{w}");
    }
    let tls_rpt = config.tls_rpt.enabled.then(|| {
        let recorder = tlsrpt::Recorder::new(tlsrpt::wall_clock());
        tracker.spawn(tlsrpt::recorder::run_persist(
            recorder.clone(),
            queue.clone(),
            config.tls_rpt.persist_every,
            shutdown.clone(),
        ));
        recorder
    });

    let mut shaper = delivery::shaping::Shaper::new(Default::default(), metrics.clone());
    if let Some(url) = &config.cluster.redis_url {
        let cluster = cluster::Cluster::new(url, metrics.clone())
            .context("cluster.redis_url: cannot use it")?;
        tracker.spawn(cluster.clone().watch(shutdown.clone()));
        shaper = shaper.with_cluster(cluster);
        tracing::info!("cluster: destination limits shared through Redis");
    }
    let q = queue.clone();
    let suspensions = tokio::task::spawn_blocking(move || delivery::suspend::Suspensions::load(q))
        .await?
        .context("queue: cannot read the suspended destinations")?;
    tracker.spawn(suspensions.clone().run_expiry(shutdown.clone()));
    let gate = delivery::gate::Gate::new(suspensions);
    let guards = smtp::server::Guards::new(&config.limits);
    let (r, refuse) = (readiness.clone(), guards.draining.clone());
    let announce: drain::Announce = Arc::new(move |on| {
        r.draining.store(on, Ordering::Release);
        refuse.store(on, Ordering::Release);
    });
    let (q, g, h) = (queue.clone(), gate.clone(), config.hostname.clone());
    let drain = tokio::task::spawn_blocking(move || drain::Drain::load(q, g, announce, h))
        .await?
        .context("queue: cannot read the drain mark")?;
    let admin = http::admin::AdminState {
        queue: queue.clone(),
        token: config.http.admin_token.clone(),
        tls_rpt: config
            .tls_rpt
            .enabled
            .then(|| tlsrpt::preview::Source::new(&config, tls_rpt.clone())),
        shaper: Some(shaper.clone()),
        gate: gate.clone(),
        drain: Some(drain),
    };
    // HTTP outlives the drain, so that probes see /readyz turn 503 and
    // Prometheus can scrape while sessions and deliveries finish.
    let http_stop = CancellationToken::new();
    let (http_address, http) = http::bind(
        config.http.address,
        metrics.clone(),
        readiness.clone(),
        Some(admin),
        http_stop.clone(),
    )
    .await?;
    let http_task = tokio::spawn(http);
    tracing::info!(address = %http_address, "http listening (/metrics, /healthz, /readyz)");

    if deliver && config.delivery.paused {
        tracing::warn!("delivery.paused = true: mail is accepted and queued, nothing is delivered");
    } else if deliver {
        let parts = (&queue, &metrics, &tls_rpt);
        start_delivery(&config, parts, shaper, &shutdown, &tracker, gate).await?;
    }

    let smtp_addresses = smtp::server::run(
        config.clone(),
        queue.clone(),
        guards.clone(),
        metrics.clone(),
        shutdown.clone(),
        tracker.clone(),
    )
    .await?;
    // Stopped with HTTP (after the drain), so clients see 503 while draining.
    let submission_address = http::submit::start(
        &config,
        queue.clone(),
        guards,
        readiness.clone(),
        metrics.clone(),
        http_stop.clone(),
    )
    .await?;
    readiness.listeners_bound.store(true, Ordering::Release);
    metrics.ready.set(1);
    tracing::info!(hostname = %config.hostname, "danerelay started");
    Ok(Running {
        config,
        http_address,
        smtp_addresses,
        submission_address,
        readiness,
        metrics,
        queue,
        tls_rpt,
        shutdown,
        tracker,
        http_stop,
        http_task,
    })
}

/// The resolver (`dns::start`), the start-up DNSSEC probe — in `auto` also
/// the choice of mode — in the background (it sets
/// `danerelay_dnssec_validating` and `danerelay_dnssec_mode`; nothing
/// waits for it), and the scheduler.
async fn start_delivery(
    config: &Arc<Config>,
    (queue, metrics, tls_rpt): (&Queue, &Metrics, &Option<Arc<tlsrpt::Recorder>>),
    shaper: delivery::shaping::Shaper,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    gate: delivery::gate::Gate,
) -> anyhow::Result<()> {
    let dns::Resolver {
        lookup: resolver,
        mode,
        settle,
    } = dns::start(&config.dns)
        .await
        .context("dns: cannot set up the resolver")?;
    metrics.set_dnssec_mode(mode.map_or(DnssecModeLabel::Pending, mode_label));
    let (m, stop) = (metrics.clone(), shutdown.clone());
    tracker.spawn(async move {
        tokio::select! {
            settled = settle => {
                m.set_dnssec_mode(mode_label(settled.mode));
                if let Some(probe) = settled.probe {
                    m.dnssec_validating.set(i64::from(probe.validating));
                }
            }
            _ = stop.cancelled() => {}
        }
    });
    if let Some(recorder) = tls_rpt {
        let sender = tlsrpt::sender::Sender {
            queue: queue.clone(),
            dns: resolver.clone(),
            config: config.tls_rpt.clone(),
            submitter: config.hostname.clone(),
            signer: Arc::new(
                dkim::Signer::load(&config.dkim, metrics.clone())
                    .context("dkim: cannot load the keys TLS-RPT reports are signed with")?,
            ),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            tls: tlsrpt::https::client_config(&config.tls_rpt.extra_roots),
            clock: tlsrpt::wall_clock(),
        };
        tracker.spawn(sender.run(shutdown.clone()));
    }
    // RFC 8461 §3.3: cached MTA-STS policies are refreshed before they expire.
    let refresher = sts::Sts::from_config(
        &config.mta_sts,
        resolver.clone(),
        Some(queue.clone()),
        metrics.clone(),
    )?;
    if let Some(refresher) = refresher {
        tracker.spawn(refresher.run_refresh(shutdown.clone()));
    }
    let scheduler = delivery::scheduler(
        config,
        queue.clone(),
        resolver,
        metrics.clone(),
        tls_rpt.clone(),
    )?
    .with_shaper(shaper)
    .with_gate(gate);
    tracker.spawn(scheduler.run(shutdown.clone()));
    Ok(())
}

fn mode_label(mode: dns::ActiveMode) -> DnssecModeLabel {
    match mode {
        dns::ActiveMode::TrustAd => DnssecModeLabel::TrustAd,
        dns::ActiveMode::Validate => DnssecModeLabel::Validate,
        dns::ActiveMode::Off => DnssecModeLabel::Off,
    }
}

/// How long a delivery worker owns a leased message. Longer than any one
/// attempt can take (connect timeouts × hosts + RFC 5321 data timeouts), so a
/// live worker never loses its lease; a crashed process's leases return at open.
const DELIVERY_LEASE: Duration = Duration::from_secs(3600);

/// The options `serve` opens its queue with (also used by `benchtool prefill`,
/// so that a prefilled queue is the one the relay would have written).
pub fn queue_options(queue: &config::QueueConfig) -> QueueOptions {
    QueueOptions {
        retry: queue.retry.clone(),
        max_age: queue.max_age,
        lease: DELIVERY_LEASE,
    }
}

async fn open_queue(config: &Config) -> anyhow::Result<Queue> {
    let path = config.queue.path.clone();
    let options = queue_options(&config.queue);
    let tuning = QueueTuning {
        cache_capacity: config.queue.cache_size,
        ..QueueTuning::default()
    };
    let shown = path.display().to_string();
    let queue = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&path)?;
        Queue::open_tuned(&path, options, tuning).map_err(anyhow::Error::from)
    })
    .await?
    .with_context(|| format!("queue.path: cannot open the queue at {shown}"))?;
    // Messages queued before are counted in the background from here on (the queue
    // crate logs when that is over); delivery and new mail do not wait for it.
    let counts = queue.counts();
    tracing::info!(path = %shown, counted = counts.total(), recovered = queue.recovered(), "queue open");
    Ok(queue)
}

/// Keeps `danerelay_queue_messages{state}` and the oldest-age gauge current.
async fn refresh_queue_metrics(queue: Queue, metrics: Metrics, shutdown: CancellationToken) {
    use crate::metrics::QueueState;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counts = queue.counts();
        metrics.queue_state(QueueState::Pending, counts.pending);
        metrics.queue_state(QueueState::Deferred, counts.deferred);
        metrics.queue_state(QueueState::Held, counts.held);
        metrics.queue_state(QueueState::Active, counts.active);
        let q = queue.clone();
        let oldest = tokio::task::spawn_blocking(move || q.oldest_age(SystemTime::now()))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default();
        metrics
            .queue_oldest_message_age_seconds
            .set(i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
    }
}

/// Follows the queue's storage health once a second: `/readyz`
/// (`storage-error`, `low-disk`), `danerelay_queue_storage_ok`,
/// `danerelay_queue_free_bytes`, and a log line at each change. (The queue
/// itself refuses and repairs; MAIL asks it directly.)
#[derive(Default)]
struct StorageWatch {
    failed: bool,
    low: bool,
}

impl StorageWatch {
    async fn run(
        mut self,
        queue: Queue,
        readiness: Arc<Readiness>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.check(&queue, &readiness, &metrics).await;
        }
    }

    async fn check(&mut self, queue: &Queue, readiness: &Readiness, metrics: &Metrics) {
        use danerelay_queue::StorageHealth;
        let q = queue.clone();
        let free = tokio::task::spawn_blocking(move || q.refresh_free_space()).await;
        match free {
            Ok(Ok(free)) => metrics
                .queue_free_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot measure free space on the queue volume")
            }
            Err(_) => {}
        }
        let health = queue.health();
        let failed = matches!(health, StorageHealth::Failed { .. });
        let low = matches!(health, StorageHealth::LowSpace { .. });
        if failed != self.failed {
            match &health {
                StorageHealth::Failed { reason } => tracing::error!(
                    error = %reason,
                    "queue storage failing: not ready, new mail refused with 451 4.3.0"
                ),
                _ => tracing::info!("queue storage works again: ready"),
            }
        }
        if low != self.low {
            match &health {
                StorageHealth::LowSpace { free, min } => tracing::warn!(
                    free, min,
                    "free space on the queue volume under queue.min_free_space: not ready (low-disk), new mail refused with 452 4.3.1"
                ),
                _ if !failed => tracing::info!("free space on the queue volume above queue.min_free_space again"),
                _ => {}
            }
        }
        (self.failed, self.low) = (failed, low);
        metrics.queue_storage_ok.set(i64::from(!failed));
        readiness.storage_failed.store(failed, Ordering::Release);
        readiness.low_disk.store(low, Ordering::Release);
        if readiness.listeners_bound.load(Ordering::Acquire) {
            metrics.ready.set(i64::from(readiness.is_ready()));
        }
    }
}

impl Running {
    /// Graceful stop: readiness goes 503 first, then every component is told
    /// to stop and given `shutdown_grace` to finish.
    pub async fn drain(self) {
        self.readiness.draining.store(true, Ordering::Release);
        self.metrics.ready.set(0);
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.config.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.config.shutdown_grace,
                "shutdown grace expired; abandoning remaining tasks"
            );
        }
        // Sessions that ended during the drain, after the last periodic persist.
        if let Some(recorder) = self.tls_rpt.clone() {
            let queue = self.queue.clone();
            match tokio::task::spawn_blocking(move || recorder.persist(&queue)).await {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "TLS-RPT counts not persisted at shutdown")
                }
                Err(e) => tracing::error!(error = %e, "TLS-RPT counts not persisted at shutdown"),
                Ok(Ok(_)) => {}
            }
        }
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "queue flush at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "queue flush at shutdown failed"),
        }
        self.http_stop.cancel();
        let _ = self.http_task.await;
        tracing::info!("danerelay stopped");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
