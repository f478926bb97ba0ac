//! The sender on paused time and FakeDns: nothing before the day (plus its
//! delay) is over, one report per rua after, outbox state durable, the
//! no-DKIM case, and policy-less domains dropped.

use std::io::Read;
use std::time::Duration;

use super::*;
use crate::delivery::clock::PausedClock;
use crate::dns::{FakeDns, Security};
use crate::tlsrpt::{Policy, SessionResult};

fn opts() -> danerelay_queue::QueueOptions {
    danerelay_queue::QueueOptions {
        retry: vec![Duration::from_secs(60)],
        max_age: Duration::from_secs(3600),
        lease: Duration::from_secs(60),
    }
}

struct World {
    _dir: tempfile::TempDir,
    queue: Queue,
    recorder: Arc<Recorder>,
    dns: Arc<FakeDns>,
    metrics: Metrics,
    clock: Arc<PausedClock>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path(), opts()).unwrap();
    let clock = Arc::new(PausedClock::new());
    World {
        _dir: dir,
        queue,
        recorder: Recorder::new(clock.clone()),
        dns: Arc::new(FakeDns::new()),
        metrics: Metrics::new(),
        clock,
    }
}

fn sender(w: &World, from_signed: bool) -> Sender {
    let mut config = TlsRptConfig::defaults("relay.test");
    config.from_signed = from_signed;
    config.max_delay = Duration::from_secs(3600);
    Sender {
        queue: w.queue.clone(),
        dns: w.dns.clone(),
        config,
        submitter: "relay.test".into(),
        signer: Arc::new(Signer::disabled(w.metrics.clone())),
        recorder: w.recorder.clone(),
        metrics: w.metrics.clone(),
        tls: super::super::https::client_config(&[]),
        clock: w.clock.clone(),
    }
}

fn session(domain: &str) -> SessionResult {
    SessionResult {
        domain: domain.into(),
        policy: Policy::no_policy(),
        failure: None,
    }
}

fn metric(w: &World, transport: &str, result: &str) -> bool {
    w.metrics.render().contains(&format!(
        "danerelay_tls_rpt_reports_total{{result=\"{result}\",transport=\"{transport}\"}} 1"
    ))
}

#[test]
fn the_delay_is_stable_per_domain_and_below_the_maximum() {
    let day = Day::parse("2026-12-04").unwrap();
    let max = Duration::from_secs(3600);
    let a = due_at(day, "a.test", max);
    assert_eq!(a, due_at(day, "a.test", max));
    assert!(a >= day.end() && a < day.end() + max);
    let spread: std::collections::HashSet<_> = (0..20)
        .map(|i| due_at(day, &format!("d{i}.test"), max))
        .collect();
    assert!(spread.len() > 10, "delays should differ between domains");
    assert_eq!(due_at(day, "a.test", Duration::ZERO), day.end());
}

#[test]
fn backoff_grows_and_is_capped() {
    assert_eq!(backoff(0), Duration::from_secs(300));
    assert_eq!(backoff(1), Duration::from_secs(600));
    assert_eq!(backoff(30), Duration::from_secs(4 * 3600));
}

#[tokio::test(start_paused = true)]
async fn reports_wait_for_the_day_to_end_then_go_once_per_rua() {
    let w = world();
    w.dns.txt(
        "_smtp._tls.a.test",
        Security::Insecure,
        &["v=TLSRPTv1; rua=mailto:rpt@reports.test"],
    );
    w.recorder.record(session("a.test"));
    w.recorder.record(session("a.test"));
    let day = w.recorder.today();
    let s = sender(&w, false);
    s.round().await;
    assert!(w
        .queue
        .state_scan(NS)
        .unwrap()
        .iter()
        .all(|(k, _)| k.starts_with("c/")));
    // Still the same day: nothing prepared.
    let to_end = day.end().duration_since(w.clock.now()).unwrap();
    tokio::time::advance(to_end - Duration::from_secs(1)).await;
    assert_eq!(s.prepare_due().await.unwrap(), 0);
    // The day is over and its delay has passed (at most max_delay).
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(Day::of(w.clock.now()), day.next());
    assert_eq!(s.prepare_due().await.unwrap(), 1);
    let records = w.queue.state_scan(NS).unwrap();
    assert_eq!(records.len(), 1, "counts moved to the outbox");
    let out: Outgoing = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(out.report_id, format!("{day}_a.test@relay.test"));
    use base64::Engine as _;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(&out.gzip)
        .unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["policies"][0]["summary"]["total-successful-session-count"],
        2
    );
    // Without a DKIM key for tls_rpt.from the mailto: report is skipped,
    // counted, and not tried again.
    assert_eq!(s.send_due().await.unwrap(), 0);
    assert!(metric(&w, "mailto", "skipped"));
    assert!(w.queue.state_scan(NS).unwrap().is_empty());
    assert_eq!(w.queue.counts().total(), 0, "nothing queued");
}

#[tokio::test(start_paused = true)]
async fn a_domain_without_a_policy_loses_its_counts_and_a_failing_lookup_keeps_them() {
    let w = world();
    w.dns
        .nxdomain("_smtp._tls.none.test", RecordType::Txt, Security::Insecure);
    w.dns.servfail("_smtp._tls.flaky.test", RecordType::Txt);
    w.recorder.record(session("none.test"));
    w.recorder.record(session("flaky.test"));
    let day = w.recorder.today();
    let s = sender(&w, true);
    tokio::time::advance(
        day.end().duration_since(w.clock.now()).unwrap() + Duration::from_secs(3600),
    )
    .await;
    assert_eq!(s.prepare_due().await.unwrap(), 0);
    let keys: Vec<String> = w
        .queue
        .state_scan(NS)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![recorder::counts_key(day, "flaky.test")]);
    // After 24 h of failing lookups the report is given up.
    tokio::time::advance(GIVE_UP_AFTER).await;
    s.prepare_due().await.unwrap();
    assert!(w.queue.state_scan(NS).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_https_rua_is_retried_with_backoff_then_given_up() {
    let w = world();
    // Nothing listens on port 9 of this loopback address.
    w.dns.txt(
        "_smtp._tls.b.test",
        Security::Insecure,
        &["v=TLSRPTv1; rua=https://127.0.25.254:9/rpt"],
    );
    w.recorder.record(session("b.test"));
    let day = w.recorder.today();
    let s = sender(&w, true);
    tokio::time::advance(
        day.end().duration_since(w.clock.now()).unwrap() + Duration::from_secs(3600),
    )
    .await;
    s.prepare_due().await.unwrap();
    assert_eq!(s.send_due().await.unwrap(), 0);
    let read = |w: &World| -> Outgoing {
        serde_json::from_slice(&w.queue.state_scan(NS).unwrap()[0].1).unwrap()
    };
    let t = &read(&w).targets[0];
    assert_eq!((t.done, t.attempts), (false, 1));
    // Not due again before its backoff.
    s.send_due().await.unwrap();
    assert_eq!(read(&w).targets[0].attempts, 1);
    tokio::time::advance(backoff(0)).await;
    s.send_due().await.unwrap();
    assert_eq!(read(&w).targets[0].attempts, 2);
    tokio::time::advance(GIVE_UP_AFTER).await;
    s.send_due().await.unwrap();
    assert!(w.queue.state_scan(NS).unwrap().is_empty());
    assert!(metric(&w, "https", "failed"));
}
