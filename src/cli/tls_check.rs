//! `danerelay tls-check DOMAIN`: the front end of
//! [`crate::delivery::tls_check`]: load the configuration, build the
//! configured resolver, run the check, print it as text or JSON. Exit 0 when
//! some host would take mail now, 1 when none would (a verdict, like
//! `dane verify`'s), sysexits codes when the check itself could not run.

use std::fmt::Write as _;

use crate::delivery::attempt::EngineOptions;
use crate::delivery::tls_check::{self, Report};

use super::config::{ConfigArg, Warnings};
use super::exit::Exit;

/// `danerelay tls-check DOMAIN [--config FILE] [--json]`
#[derive(Debug, Clone, clap::Args)]
pub struct TlsCheckArgs {
    /// The recipient domain to check.
    pub domain: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check and prints the report.
pub fn run(args: &TlsCheckArgs) -> Exit {
    let config = match args.config.load_or_exit(Warnings::Plain) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tls-check: cannot start the async runtime: {e}");
            return Exit::SOFTWARE;
        }
    };
    let report = runtime.block_on(async {
        let resolver = crate::dns::start(&config.dns).await?;
        if resolver.mode.is_none() {
            // dns.dnssec = "auto": the verdicts need the mode, so choose it first.
            resolver.settle.await;
        }
        let dns = resolver.lookup;
        let mut options = EngineOptions::from_config(&config.delivery);
        options.sts = mta_sts(&config, dns.clone());
        Ok::<_, crate::dns::DnsError>(tls_check::check(dns.as_ref(), &options, &args.domain).await)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // The configured resolver cannot be set up (no nameserver,
            // unreadable trust anchor): a configuration problem.
            eprintln!("tls-check: {e}");
            return Exit::CONFIG;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tls-check: {e}");
                return Exit::SOFTWARE;
            }
        }
    } else {
        print!("{}", render_text(&report));
    }
    if report.deliverable() {
        Exit::OK
    } else {
        Exit::TLS_CHECK_UNDELIVERABLE
    }
}

/// MTA-STS as configured, with the relay's policy cache when the queue
/// can be opened (not while the relay runs: it holds the database; then
/// the policy is fetched afresh and shown with cache age 0).
fn mta_sts(
    config: &crate::config::Config,
    dns: std::sync::Arc<dyn crate::dns::DnsLookup>,
) -> Option<crate::sts::Sts> {
    let path = &config.queue.path;
    let queue = path
        .exists()
        .then(|| danerelay_queue::Queue::open(path, crate::queue_options(&config.queue)).ok())
        .flatten();
    match crate::sts::Sts::from_config(&config.mta_sts, dns, queue, crate::metrics::Metrics::new())
    {
        Ok(sts) => sts,
        Err(e) => {
            eprintln!("tls-check: {e}; MTA-STS not checked");
            None
        }
    }
}

/// The MTA-STS part: `MTA-STS: enforce (id 2024, max_age 86400, cached 3600 s ago)`.
fn render_sts(t: &mut String, s: &tls_check::StsReport) {
    match (&s.mode, &s.id) {
        (Some(mode), Some(id)) => {
            let _ = writeln!(
                t,
                "MTA-STS: {mode} (id {id}, max_age {}, cached {} s ago)",
                s.max_age.unwrap_or(0),
                s.cache_age.unwrap_or(0)
            );
            let _ = writeln!(t, "  mx: {}", s.mx.join(", "));
        }
        _ => {
            let _ = writeln!(t, "MTA-STS: no policy");
        }
    }
    if let Some(e) = &s.error {
        let _ = writeln!(t, "  MTA-STS problem: {e}");
    }
}

/// The human-readable form.
fn render_text(r: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "domain {} (route: {}, tls level: {})",
        r.domain,
        r.route.unwrap_or("none"),
        r.level
    );
    if let Some(e) = &r.error {
        let _ = writeln!(t, "  {e}");
    }
    if let Some(s) = &r.mta_sts {
        render_sts(&mut t, s);
    }
    for h in &r.hosts {
        let _ = writeln!(
            t,
            "host {} (preference {}, port {})",
            h.name, h.preference, h.port
        );
        let _ = writeln!(t, "  MX DNSSEC: {}", h.mx_dnssec);
        let _ = writeln!(
            t,
            "  addresses ({}): {}",
            h.address_dnssec,
            h.addresses.join(", ")
        );
        let _ = writeln!(t, "  TLSA: {}", h.tlsa_lookup);
        for rec in &h.tlsa {
            let usable = if rec.usable { "usable" } else { "unusable" };
            match &rec.note {
                Some(n) => {
                    let _ = writeln!(t, "    {} — {usable}: {n}", rec.record);
                }
                None => {
                    let _ = writeln!(t, "    {} — {usable}", rec.record);
                }
            }
        }
        let _ = writeln!(t, "  policy: {}", h.decision);
        if let Some(c) = &h.connected {
            let _ = writeln!(t, "  connected: {c}");
        }
        if let Some(s) = h.starttls_offered {
            let _ = writeln!(t, "  STARTTLS offered: {}", if s { "yes" } else { "no" });
        }
        if let (Some(v), Some(c)) = (&h.tls_version, &h.tls_cipher) {
            let _ = writeln!(t, "  TLS: {v} {c}");
        }
        if let Some(m) = &h.dane_match {
            let _ = writeln!(t, "  DANE match: {m}");
        }
        let _ = writeln!(t, "  verdict: {}", h.verdict);
    }
    t
}
