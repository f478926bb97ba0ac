//! Destinations that share MX hosts share connections (SPEC "Delivery";
//! issue #18 item 5): the scheduler in process, FakeDns pointing many
//! domains at one fake MX (`danerelay::testing::mx`), which counts
//! connections and the most open at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use danerelay::config::TlsLevel;
use danerelay::delivery::attempt::{Engine, EngineOptions, MAX_HOSTS};
use danerelay::delivery::report::ReportOptions;
use danerelay::delivery::retry::RetryPolicy;
use danerelay::delivery::scheduler::{Scheduler, SchedulerOptions};
use danerelay::delivery::session::SessionOptions;
use danerelay::dns::{RecordType, Security};
use danerelay::metrics::Metrics;
use danerelay::smtp::client::Timeouts;
use danerelay::testing::mx::{Script, Transcript};
use danerelay::testing::{certs, enqueue, FakeDns, FakeMx};
use danerelay_queue::{Queue, QueueOptions};
use tokio_util::sync::CancellationToken;

const MX: &str = "mx.provider.test";

fn scheduler(queue: &Queue, dns: FakeDns, port: u16, tls: TlsLevel, per: usize) -> Scheduler {
    let engine = Engine {
        dns: Arc::new(dns),
        options: EngineOptions {
            session: SessionOptions {
                helo_name: "relay.test".into(),
                connect_timeout: Duration::from_secs(5),
                timeouts: Timeouts::default(),
                tls_configs: Default::default(),
            },
            tls,
            dane_insecure_mx: Default::default(),
            routes: Vec::new(),
            mx_port: port,
            max_hosts: MAX_HOSTS,
            sts: None,
        },
        metrics: Metrics::new(),
        tls_rpt: None,
    };
    let options = SchedulerOptions {
        concurrency: 32,
        per_destination: per,
        grace: Duration::from_millis(600),
        report: ReportOptions {
            reporting_mta: "relay.test".into(),
            retry: RetryPolicy::new(
                vec![Duration::from_secs(3600)],
                Duration::from_secs(86400),
                None,
            ),
        },
    };
    Scheduler::new(queue.clone(), engine, options)
}

fn queue(dir: &tempfile::TempDir) -> Queue {
    let opts = QueueOptions {
        retry: vec![Duration::from_secs(3600)],
        max_age: Duration::from_secs(86400),
        lease: Duration::from_secs(3600),
    };
    Queue::open(dir.path(), opts).unwrap()
}

/// The MX host, its addresses (secure) and no IPv6.
fn mx_host(dns: &FakeDns) {
    dns.a(MX, Security::Secure, &["127.0.0.1"]);
    dns.nodata(MX, RecordType::Aaaa, Security::Secure);
}

async fn until_empty(queue: &Queue, mx: &FakeMx, want: usize) {
    let start = Instant::now();
    while queue.counts().total() > 0 || mx.messages().len() < want {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {want} delivered, {} queued",
            mx.messages().len(),
            queue.counts().total()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each connection's recipient domains, in order (one worker: connections
/// follow one another, each ending with QUIT).
fn domains_per_connection(t: &Transcript) -> Vec<Vec<String>> {
    let mut conns = vec![Vec::new()];
    for c in &t.commands {
        if let Some(rcpt) = c.strip_prefix("RCPT TO:<") {
            let domain = rcpt.split(['@', '>']).nth(1).unwrap_or_default();
            conns.last_mut().unwrap().push(domain.to_string());
        } else if c == "QUIT" {
            conns.push(Vec::new());
        }
    }
    conns.retain(|c| !c.is_empty());
    conns
}

/// 50 domains hosted on one MX: at most `per_destination` connections at
/// once and in all, each carrying mail of many domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_domains_on_one_mx_share_per_destination_connections() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let mx = FakeMx::start(Duration::from_millis(5)).await;
    let dns = FakeDns::new();
    mx_host(&dns);
    let domains: Vec<String> = (0..50).map(|i| format!("customer{i}.test")).collect();
    for d in &domains {
        dns.mx(d, Security::Insecure, &[(10, MX)]);
    }
    for round in 0..3 {
        for d in &domains {
            enqueue(&q, "alice@src.test", &[&format!("user{round}@{d}")]);
        }
    }
    let per = 4;
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler(&q, dns, mx.port, TlsLevel::May, per).run(stop.clone()));
    until_empty(&q, &mx, 150).await;
    let t = mx.transcript.lock().unwrap().clone();
    assert!(t.max_active <= per, "{} open at once", t.max_active);
    assert!(
        t.connections <= per,
        "150 messages to 50 domains over {} connections",
        t.connections
    );
    // Reuse across domains shows in the transcript: one session, many
    // domains (the domain pool per connection is what used to be 1).
    let mails = t
        .commands
        .iter()
        .filter(|c| c.starts_with("MAIL FROM"))
        .count();
    assert_eq!(mails, 150);
    let mut seen: Vec<&str> = t
        .received
        .iter()
        .flat_map(|r| r.rcpts.iter().filter_map(|a| a.split('@').nth(1)))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 50);
    stop.cancel();
    run.await.unwrap();
}

/// Domains on one MX with different DANE policy (one MX RRset signed, so
/// `dane-verified` with the domain as a reference identifier; two insecure,
/// so `dane-trusted` without one, RFC 7672 §2.2.1): never one connection
/// for two policies, even with a limit of one; the two insecure-MX domains,
/// whose policy is identical, do share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_tls_policy_on_one_mx_does_not_share_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(&dir);
    let cert = certs::self_signed(&[MX]);
    let script = Script {
        tls: Some(cert.acceptor()),
        ..Script::default()
    };
    let mx = FakeMx::listen(script).await;
    let dns = FakeDns::new();
    mx_host(&dns);
    dns.mx("signed.test", Security::Secure, &[(10, MX)]);
    dns.mx("unsigned.test", Security::Insecure, &[(10, MX)]);
    dns.mx("unsigned2.test", Security::Insecure, &[(10, MX)]);
    let owner = format!("_{}._tcp.{MX}", mx.port);
    dns.tlsa(
        &owner,
        Security::Secure,
        vec![crate::dane::tlsa(3, 1, 1, &cert.cert)],
    );
    for i in 0..3 {
        for d in ["signed.test", "unsigned.test", "unsigned2.test"] {
            enqueue(&q, "alice@src.test", &[&format!("user{i}@{d}")]);
        }
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(scheduler(&q, dns, mx.port, TlsLevel::Dane, 1).run(stop.clone()));
    until_empty(&q, &mx, 9).await;
    let t = mx.transcript.lock().unwrap().clone();
    assert_eq!(t.max_active, 1);
    let conns = domains_per_connection(&t);
    for c in &conns {
        let signed = c.iter().filter(|d| *d == "signed.test").count();
        assert!(
            signed == 0 || signed == c.len(),
            "a connection carried both policies: {c:?}"
        );
    }
    assert_eq!(conns.len(), 2, "one connection per policy: {conns:?}");
    assert!(conns
        .iter()
        .any(|c| c.contains(&"unsigned.test".to_string())
            && c.contains(&"unsigned2.test".to_string())));
    assert_eq!(t.commands.iter().filter(|c| *c == "<TLS>").count(), 2);
    stop.cancel();
    run.await.unwrap();
}
