//! Every Prometheus metric danerelay exports, declared in one place. Help
//! text is the documentation; label values come only from the enums below,
//! never from hostnames, domains, addresses or user input (unbounded
//! cardinality would take Prometheus down with the relay).

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// A fixed set of label values.
pub trait Label: Copy + 'static {
    fn label(self) -> &'static str;
    /// Every value, in declaration order: the series created at 0 at start.
    fn values() -> Vec<&'static str>;
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }
        impl Label for $name {
            fn label(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn values() -> Vec<&'static str> {
                $name::ALL.iter().map(|v| v.label()).collect()
            }
        }
    };
}

label_enum!(
    /// `listener`: the kind of listener a session arrived on.
    ListenerLabel { StartTls => "starttls", Implicit => "implicit", None => "none" }
);
label_enum!(
    /// `tls` of a finished submission session.
    SessionTls { Tls => "tls", Plaintext => "plaintext" }
);
label_enum!(
    /// `reason` a submission was refused.
    RejectReason {
        AuthRequired => "auth-required",
        SenderPolicy => "sender-policy",
        TooLarge => "too-large",
        TooManyRecipients => "too-many-recipients",
        BareLineEnding => "bare-line-ending",
        /// Content that cannot be made deliverable (over-long lines, issue #18).
        Content => "content",
        Syntax => "syntax",
        Storage => "storage",
        Shutdown => "shutdown",
        RateLimit => "rate-limit",
        /// Header section over `limits.max_header_size` or `max_header_fields`.
        HeaderLimit => "header-limit",
    }
);
label_enum!(
    /// `limit` of `[limits]` that refused a connection, command or session.
    LimitHit {
        /// `max_connections` (all clients).
        Connections => "connections",
        /// `max_connections_per_ip`.
        ConnectionsPerIp => "connections-per-ip",
        /// `connection_rate_per_ip`.
        ConnectionRate => "connection-rate",
        /// `max_junk_commands`: commands without progress.
        JunkCommands => "junk-commands",
        /// `messages_per_user_per_hour`.
        UserMessageRate => "user-message-rate",
        /// `command_timeout`: no complete input in time.
        CommandTimeout => "command-timeout",
        /// `session_timeout`: the whole-session deadline.
        SessionTimeout => "session-timeout",
        /// `data_timeout`: one message's content took too long.
        DataTimeout => "data-timeout",
        /// `max_header_size`.
        HeaderSize => "header-size",
        /// `max_header_fields`.
        HeaderFields => "header-fields",
        /// `max_recipients` (per message).
        RecipientsPerMessage => "recipients-per-message",
        /// `max_recipients_per_session`.
        RecipientsPerSession => "recipients-per-session",
        /// `max_auth_failures`.
        AuthFailures => "auth-failures",
        /// `500 5.5.6` over-long command line.
        LineLength => "line-length",
    }
);
label_enum!(
    /// `state` of queued messages (`active` = leased to a delivery worker).
    QueueState { Pending => "pending", Deferred => "deferred", Held => "held", Active => "active" }
);
label_enum!(
    /// `outcome` of one delivery attempt for one recipient.
    DeliveryOutcome { Delivered => "delivered", Deferred => "deferred", Bounced => "bounced" }
);
label_enum!(
    /// `tls` of one delivery attempt, as the delivery log line says it.
    DeliveryTls {
        DaneVerified => "dane-verified",
        DaneTrusted => "dane-trusted",
        /// MTA-STS `enforce` (RFC 8461 §4.2): PKIX-valid for the MX name.
        StsVerified => "sts-verified",
        Unauthenticated => "tls-unauthenticated",
        Plaintext => "plaintext",
        None => "none",
    }
);
label_enum!(
    /// `result` of one MTA-STS policy fetch (RFC 8461 §3.3).
    StsFetchResult {
        /// A valid policy was fetched and cached.
        Ok => "ok",
        /// The TXT id was unchanged: the cached policy was kept.
        Cached => "cached",
        /// No `_mta-sts` TXT record (or none with `v=STSv1`): no policy.
        NoPolicy => "no-policy",
        /// Malformed TXT record or policy text.
        Invalid => "invalid",
        /// Not 200, a redirect, or not `text/plain`.
        HttpError => "http-error",
        /// The policy host's certificate is not valid for its name.
        TlsError => "tls-error",
        /// `mta_sts.fetch_timeout` ran out.
        Timeout => "timeout",
        /// The body exceeded 64 KiB.
        TooLarge => "too-large",
        /// The TXT or address lookup failed.
        DnsError => "dns-error",
        /// Connection refused or reset.
        ConnectError => "connect-error",
    }
);
label_enum!(
    /// `result` of the DANE step for one MX host (RFC 7672 terms).
    DaneResult {
        /// Usable TLSA matched the peer.
        Ok => "ok",
        /// Secure TLSA, none usable: TLS required, unauthenticated (§2.2).
        Unusable => "unusable",
        /// No secure TLSA RRset: DANE does not apply.
        NotApplicable => "not-applicable",
        /// MX or host address insecure: no TLSA lookup (§2.2.2).
        Insecure => "insecure",
        /// TLSA lookup failed or bogus: defer (§2.2).
        Tempfail => "tempfail",
        /// Usable TLSA, the peer did not match: defer.
        Mismatch => "mismatch",
    }
);
label_enum!(
    /// `handshake` of an outbound TLS session: a full handshake, or a resumed session
    /// (only ever under the policy that verified it in full).
    TlsHandshake { Full => "full", Resumed => "resumed" }
);
label_enum!(
    /// `mode` of `danerelay_dnssec_mode`: how DNSSEC status is learned now.
    DnssecModeLabel {
        /// `dns.dnssec = "auto"` still probing: DANE deliveries wait.
        Pending => "pending",
        /// The resolver's AD bit is trusted.
        TrustAd => "trust-ad",
        /// Validated in process.
        Validate => "validate",
        /// Everything insecure: DANE never engages.
        Off => "off",
    }
);
label_enum!(
    /// `algorithm` of a DKIM signature (the `a=` tag, RFC 6376 §3.3, RFC 8463).
    DkimAlgorithm { RsaSha256 => "rsa-sha256", Ed25519Sha256 => "ed25519-sha256" }
);
label_enum!(
    /// `result` of making one DKIM signature.
    DkimResult {
        Signed => "signed",
        /// The key could not sign (unloadable after a change, or a signing error): `451 4.3.0`.
        Failed => "failed",
    }
);
label_enum!(
    /// `transport` of a TLS-RPT report (RFC 8460 §5: the `rua` scheme).
    TlsRptTransport { Mailto => "mailto", Https => "https" }
);
label_enum!(
    /// `result` of one TLS-RPT report to one `rua`.
    TlsRptResult {
        /// Queued for delivery (`mailto:`) or accepted with a 2xx (`https:`).
        Sent => "sent",
        /// `https:` still failing after 24 hours: given up.
        Failed => "failed",
        /// `mailto:` without a `[[dkim]]` key for `tls_rpt.from`'s domain.
        Skipped => "skipped",
    }
);
label_enum!(
    /// `type` of a DNS query.
    DnsType { Mx => "MX", A => "A", Aaaa => "AAAA", Tlsa => "TLSA", Cname => "CNAME", Soa => "SOA", Txt => "TXT" }
);
label_enum!(
    /// `status` of a DNS answer.
    DnsStatus {
        Secure => "secure",
        Insecure => "insecure",
        NxDomain => "nxdomain",
        NoData => "nodata",
        Bogus => "bogus",
        Error => "error",
    }
);

/// Declares every metric once: its field (with the doc above it), its type,
/// for a labelled metric the label enums in label order (`[Outcome, Tls]`),
/// and how it is made. The struct, its construction, its registration and
/// its series at 0 for every combination of label values all come from this
/// one table, so no metric is declared and left unregistered or absent from
/// `/metrics` until its first event.
macro_rules! metrics {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty $([$($label:ty),+])? = $make:expr ; )*) => {
        /// The registry and every handle the rest of the program updates. Cloning is
        /// cheap (reference-counted handles); passed down, never global.
        #[derive(Clone)]
        pub struct Metrics {
            pub registry: Registry,
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Metrics {
            fn declare() -> Metrics {
                Metrics {
                    registry: Registry::new(),
                    $( $field: $make, )*
                }
            }

            fn collectors(&self) -> Vec<Box<dyn Collector>> {
                vec![$( Box::new(self.$field.clone()), )*]
            }

            /// Creates every labelled series at 0, so dashboards, alerts and
            /// `rate()` see zeros rather than absent series before the first event.
            fn prefill(&self) {
                $( $( prefill(&self.$field, &[$(<$label as Label>::values()),+]); )? )*
            }
        }
    };
}

metrics! {
    /// Constant 1, labelled with the version.
    build_info: IntGaugeVec = gauge_vec(
        "danerelay_build_info",
        "Constant 1, labelled with the running danerelay version.",
        &["version"],
    );
    /// 1 while ready (listeners bound, queue open, not draining).
    ready: IntGauge = gauge(
        "danerelay_ready",
        "1 while the relay is ready to accept mail (listeners bound, queue open, not draining).",
    );
    /// Submission sessions finished, by listener kind and whether TLS was used.
    smtp_sessions_total: IntCounterVec [ListenerLabel, SessionTls] = counter_vec(
        "danerelay_smtp_sessions_total",
        "Submission sessions finished, by listener kind and whether TLS was in use.",
        &["listener", "tls"],
    );
    /// Submission sessions open now.
    smtp_sessions_active: IntGauge = gauge(
        "danerelay_smtp_sessions_active",
        "Submission sessions open now.",
    );
    /// Messages accepted (answered 250 after being made durable).
    messages_received_total: IntCounter = counter(
        "danerelay_messages_received_total",
        "Messages accepted: answered 250 after being stored durably.",
    );
    /// Submissions refused, by reason.
    messages_rejected_total: IntCounterVec [RejectReason] = counter_vec(
        "danerelay_messages_rejected_total",
        "Submissions refused, by reason.",
        &["reason"],
    );
    /// Failed AUTH attempts.
    auth_failures_total: IntCounter = counter("danerelay_auth_failures_total", "Failed AUTH attempts.");
    /// Message bytes accepted.
    received_bytes_total: IntCounter = counter(
        "danerelay_received_bytes_total",
        "Bytes of accepted messages.",
    );
    /// Abuse limits that fired, by limit.
    smtp_limit_hits_total: IntCounterVec [LimitHit] = counter_vec(
        "danerelay_smtp_limit_hits_total",
        "Abuse limits of [limits] that refused a connection, command or message, by limit.",
        &["limit"],
    );
    /// Queued messages by state.
    queue_messages: IntGaugeVec [QueueState] = gauge_vec(
        "danerelay_queue_messages",
        "Queued messages by state (active = being delivered now).",
        &["state"],
    );
    /// Age of the oldest queued message.
    queue_oldest_message_age_seconds: IntGauge = gauge(
        "danerelay_queue_oldest_message_age_seconds",
        "Age of the oldest message in the queue (0 when empty).",
    );
    /// 1 while the queue can store (no unrepaired write or sync error).
    queue_storage_ok: IntGauge = gauge(
        "danerelay_queue_storage_ok",
        "1 while the queue can store; 0 after a write or sync error (disk full, I/O error, read-only) until a write succeeds again.",
    );
    /// Free bytes on the queue's volume.
    queue_free_bytes: IntGauge = gauge(
        "danerelay_queue_free_bytes",
        "Free bytes (for unprivileged users) on the queue's volume; under queue.min_free_space new mail gets 452 4.3.1.",
    );
    /// Delivery attempts per recipient, by outcome and TLS result.
    delivery_attempts_total: IntCounterVec [DeliveryOutcome, DeliveryTls] = counter_vec(
        "danerelay_delivery_attempts_total",
        "Delivery attempts per recipient, by outcome and TLS result.",
        &["outcome", "tls"],
    );
    /// DANE results per MX host tried.
    dane_results_total: IntCounterVec [DaneResult] = counter_vec(
        "danerelay_dane_results_total",
        "DANE results per MX host tried (RFC 7672).",
        &["result"],
    );
    /// Outbound TLS sessions established, full or resumed.
    delivery_tls_handshakes_total: IntCounterVec [TlsHandshake] = counter_vec(
        "danerelay_delivery_tls_handshakes_total",
        "Outbound TLS sessions established, by handshake (full or resumed).",
        &["handshake"],
    );
    /// DNS lookups by query type and answer status.
    dns_lookups_total: IntCounterVec [DnsType, DnsStatus] = counter_vec(
        "danerelay_dns_lookups_total",
        "DNS lookups by query type and DNSSEC/answer status.",
        &["type", "status"],
    );
    /// 1 when the start-up probe proved the resolver validates DNSSEC.
    dnssec_validating: IntGauge = gauge(
        "danerelay_dnssec_validating",
        "1 when the start-up probe proved that DNSSEC validation works (DANE active), else 0.",
    );
    /// 1 for the DNSSEC mode in use (`dns.dnssec`, as `auto` chose it).
    dnssec_mode: IntGaugeVec [DnssecModeLabel] = gauge_vec(
        "danerelay_dnssec_mode",
        "1 for the DNSSEC mode in use (dns.dnssec; pending while \"auto\" is still probing), 0 for the others.",
        &["mode"],
    );
    /// Time of one delivery attempt (connect to QUIT).
    delivery_duration_seconds: Histogram = histogram(
        "danerelay_delivery_duration_seconds",
        "Duration of one delivery attempt to one host, connect to QUIT.",
        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
    );
    /// Time from acceptance to final delivery or bounce.
    queue_time_seconds: Histogram = histogram(
        "danerelay_queue_time_seconds",
        "Time from acceptance to final delivery or bounce.",
        vec![0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 432000.0],
    );
    /// MTA-STS policy fetches (RFC 8461), by result.
    mta_sts_fetch_total: IntCounterVec [StsFetchResult] = counter_vec(
        "danerelay_mta_sts_fetch_total",
        "MTA-STS policy discoveries and fetches (RFC 8461), by result (cached = TXT id unchanged).",
        &["result"],
    );
    /// DKIM signatures made at acceptance, by algorithm and result.
    dkim_signatures_total: IntCounterVec [DkimAlgorithm, DkimResult] = counter_vec(
        "danerelay_dkim_signatures_total",
        "DKIM signatures made at acceptance, by algorithm and result (failed = the message got 451).",
        &["algorithm", "result"],
    );
    /// TLS-RPT (RFC 8460) reports, one per policy domain, day and `rua`.
    tls_rpt_reports_total: IntCounterVec [TlsRptTransport, TlsRptResult] = counter_vec(
        "danerelay_tls_rpt_reports_total",
        "TLS-RPT aggregate reports by rua transport and result (sent, failed after 24 h, skipped for lack of a DKIM key).",
        &["transport", "result"],
    );
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Definitions below are static; an error is a programming mistake caught
    // by the unit test, never input-dependent.
    r.unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    must(IntCounterVec::new(Opts::new(name, help), labels))
}

fn counter(name: &str, help: &str) -> IntCounter {
    must(IntCounter::new(name, help))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    must(IntGauge::new(name, help))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    must(IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Creates the series of every combination of `sets` (one set of values per
/// label, in label order) at 0.
fn prefill<B: MetricVecBuilder>(vec: &MetricVec<B>, sets: &[Vec<&'static str>]) {
    let mut combinations: Vec<Vec<&'static str>> = vec![Vec::new()];
    for set in sets {
        combinations = combinations
            .iter()
            .flat_map(|prefix| {
                set.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push(*v);
                    c
                })
            })
            .collect();
    }
    for c in combinations {
        must(vec.get_metric_with_label_values(&c));
    }
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    must(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets),
    ))
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::declare();
        m.register();
        m.prefill();
        m
    }

    /// Registers every metric (and sets the constant build info).
    fn register(&self) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors = self.collectors();
        for c in collectors {
            must(self.registry.register(c));
        }
    }

    pub fn session_finished(&self, listener: ListenerLabel, tls: SessionTls) {
        self.smtp_sessions_total
            .with_label_values(&[listener.label(), tls.label()])
            .inc();
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.messages_rejected_total
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn limit_hit(&self, limit: LimitHit) {
        self.smtp_limit_hits_total
            .with_label_values(&[limit.label()])
            .inc();
    }

    pub fn mta_sts_fetch(&self, result: StsFetchResult) {
        self.mta_sts_fetch_total
            .with_label_values(&[result.label()])
            .inc();
    }

    pub fn delivery_attempt(&self, outcome: DeliveryOutcome, tls: DeliveryTls) {
        self.delivery_attempts_total
            .with_label_values(&[outcome.label(), tls.label()])
            .inc();
    }

    pub fn tls_handshake(&self, kind: TlsHandshake) {
        self.delivery_tls_handshakes_total
            .with_label_values(&[kind.label()])
            .inc();
    }

    pub fn dane_result(&self, result: DaneResult) {
        self.dane_results_total
            .with_label_values(&[result.label()])
            .inc();
    }

    /// Sets `danerelay_dnssec_mode`: 1 for `mode`, 0 for every other.
    pub fn set_dnssec_mode(&self, mode: DnssecModeLabel) {
        for m in DnssecModeLabel::ALL {
            self.dnssec_mode
                .with_label_values(&[m.label()])
                .set(i64::from(*m == mode));
        }
    }

    pub fn dkim_signature(&self, algorithm: DkimAlgorithm, result: DkimResult) {
        self.dkim_signatures_total
            .with_label_values(&[algorithm.label(), result.label()])
            .inc();
    }

    pub fn tls_rpt_report(&self, transport: TlsRptTransport, result: TlsRptResult) {
        self.tls_rpt_reports_total
            .with_label_values(&[transport.label(), result.label()])
            .inc();
    }

    pub fn dns_lookup(&self, kind: DnsType, status: DnsStatus) {
        self.dns_lookups_total
            .with_label_values(&[kind.label(), status.label()])
            .inc();
    }

    pub fn queue_state(&self, state: QueueState, count: u64) {
        self.queue_messages
            .with_label_values(&[state.label()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition format for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
