//! Scheduler tests: FakeDns routes every domain to the in-process fake MX,
//! the queue is a real one in a temp dir. Tests of retry timing run on
//! tokio's paused time, which moves only when they `advance` it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use danerelay_queue::{Envelope, Notify, Queue, QueueId, QueueOptions, RecipientState};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::TlsLevel;
use crate::delivery::attempt::{Engine, EngineOptions, MAX_HOSTS};
use crate::delivery::report::ReportOptions;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::session::SessionOptions;
use crate::dns::Security;
use crate::metrics::Metrics;
use crate::smtp::client::Timeouts;
use crate::testing::{enqueue_with, FakeDns, FakeMx, PausedClock};

struct World {
    queue: Queue,
    mx: FakeMx,
    metrics: Metrics,
    /// The scheduler's "now": tokio's clock, so paused tests control it.
    clock: PausedClock,
    _dir: tempfile::TempDir,
}

fn dns() -> FakeDns {
    let dns = FakeDns::new();
    for d in ["dest.test", "src.test", "other.test"] {
        dns.mx(d, Security::Insecure, &[(10, "mx.fake.test")]);
    }
    dns.a("mx.fake.test", Security::Insecure, &["127.0.0.1"]);
    dns.nodata(
        "mx.fake.test",
        crate::dns::RecordType::Aaaa,
        Security::Insecure,
    );
    dns.mx("null.test", Security::Insecure, &[(0, ".")]);
    dns
}

async fn world(retry: Duration, max_age: Duration, data_delay: Duration) -> World {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions {
        retry: vec![retry],
        max_age,
        lease: Duration::from_secs(3600),
    };
    let queue = Queue::open(dir.path(), opts).unwrap();
    World {
        queue,
        mx: FakeMx::start(data_delay).await,
        metrics: Metrics::new(),
        clock: PausedClock::new(),
        _dir: dir,
    }
}

fn scheduler(
    w: &World,
    concurrency: usize,
    per: usize,
    delay_warning: Option<Duration>,
) -> Scheduler {
    let engine = Engine {
        dns: Arc::new(dns()),
        options: EngineOptions {
            session: SessionOptions {
                helo_name: "relay.test".into(),
                connect_timeout: Duration::from_secs(5),
                timeouts: Timeouts::default(),
                tls_configs: Default::default(),
            },
            tls: TlsLevel::May,
            dane_insecure_mx: Default::default(),
            routes: Vec::new(),
            mx_port: w.mx.port,
            max_hosts: MAX_HOSTS,
            sts: None,
        },
        metrics: w.metrics.clone(),
        tls_rpt: None,
    };
    let options = SchedulerOptions {
        concurrency,
        per_destination: per,
        grace: Duration::from_millis(600),
        report: ReportOptions {
            reporting_mta: "relay.test".into(),
            retry: RetryPolicy::new(
                vec![Duration::from_secs(1)],
                Duration::from_secs(3600),
                delay_warning,
            ),
        },
    };
    Scheduler::new(w.queue.clone(), engine, options).with_clock(Arc::new(w.clock))
}

/// Enqueues a message received `age` ago by the world's clock.
fn enqueue(w: &World, sender: &str, rcpts: &[&str], age: Duration, notify: Notify) -> QueueId {
    let env = Envelope::new(sender, w.clock.now() - age);
    enqueue_with(&w.queue, env, rcpts, notify)
}

/// Waits (at most 15 s of real time) until `cond` holds, without moving
/// tokio's clock: the wait is a blocking task, which keeps a paused runtime
/// from auto-advancing while the MX and the queue do their work.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        real_sleep(Duration::from_millis(10)).await;
    }
}

/// Lets `d` of real time pass (tokio's clock stays put when paused).
async fn real_sleep(d: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(d))
        .await
        .unwrap();
}

/// The first recipient's attempt count (0 once the message is gone).
fn attempts(w: &World, id: QueueId) -> u32 {
    w.queue
        .show(id)
        .unwrap()
        .map_or(0, |m| m.recipients[0].attempts)
}

fn spawn(s: Scheduler) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn(s.run(token.clone()));
    (token, handle)
}

fn dsns_to(mx: &FakeMx, rcpt: &str) -> Vec<String> {
    mx.messages()
        .into_iter()
        .filter(|m| m.from.is_empty() && m.rcpts == [rcpt.to_string()])
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_bounces_and_sends_one_failure_dsn_to_the_sender() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    let id = enqueue(
        &w,
        "alice@src.test",
        &["bob@dest.test", "reject-me@dest.test"],
        Duration::ZERO,
        Notify::default(),
    );
    until("delivery and DSN", || {
        dsns_to(&w.mx, "alice@src.test").len() == 1
    })
    .await;
    let msgs = w.mx.messages();
    let original = msgs.iter().find(|m| m.from == "alice@src.test").unwrap();
    assert_eq!(original.rcpts, ["bob@dest.test"]);
    let dsn = &dsns_to(&w.mx, "alice@src.test")[0];
    let parsed = mail_parser::MessageParser::default()
        .parse(dsn.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; reject-me@dest.test"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Action: failed") && dsn.contains("Status: 5.1.1"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; bob@dest.test"),
        "{dsn}"
    );
    until("original gone", || w.queue.show(id).unwrap().is_none()).await;
    let text = w.metrics.render();
    assert!(
        text.contains("danerelay_delivery_attempts_total{outcome=\"bounced\",tls=\"plaintext\"} 1"),
        "{text}"
    );
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_and_notify_never_get_no_dsn() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    let never = Notify {
        success: false,
        failure: false,
        delay: false,
        never: true,
    };
    let a = enqueue(
        &w,
        "",
        &["reject@dest.test"],
        Duration::ZERO,
        Notify::default(),
    );
    let b = enqueue(
        &w,
        "carol@src.test",
        &["reject@dest.test"],
        Duration::ZERO,
        never,
    );
    // A third message that is delivered tells us the scheduler got this far.
    enqueue(
        &w,
        "dave@src.test",
        &["ok@dest.test"],
        Duration::ZERO,
        Notify::default(),
    );
    until("both bounced", || {
        w.queue.show(a).unwrap().is_none() && w.queue.show(b).unwrap().is_none()
    })
    .await;
    until("the marker delivered", || w.mx.messages().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.mx.messages().iter().all(|m| !m.from.is_empty()));
    assert_eq!(w.queue.counts().total(), 0, "no DSN was enqueued");
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_caps_connections_and_reuses_them() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::from_millis(150),
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    for i in 0..6 {
        let rcpt = format!("user{i}@dest.test");
        enqueue(
            &w,
            "alice@src.test",
            &[&rcpt],
            Duration::ZERO,
            Notify::default(),
        );
    }
    until("six delivered", || w.mx.messages().len() == 6).await;
    let (max_active, connections) = {
        let st = w.mx.transcript.lock().unwrap();
        (st.max_active, st.connections)
    };
    assert!(max_active <= 2, "max concurrent connections {max_active}");
    assert!(
        connections < 6,
        "messages shared connections: {connections}"
    );
    stop.cancel();
    handle.await.unwrap();
}

/// A deferral once `max_age` has passed turns into a bounce with 4.4.7
/// (RFC 3463 "delivery time expired"), on paused time.
#[tokio::test(start_paused = true)]
async fn expired_message_bounces_with_4_4_7() {
    let max_age = Duration::from_secs(3600);
    let w = world(Duration::from_secs(600), max_age, Duration::ZERO).await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    let id = enqueue(
        &w,
        "alice@src.test",
        &["later@dest.test"],
        Duration::ZERO,
        Notify::default(),
    );
    until("the first attempt", || attempts(&w, id) == 1).await;
    real_sleep(Duration::from_millis(100)).await;
    assert!(
        dsns_to(&w.mx, "alice@src.test").is_empty(),
        "not expired yet"
    );
    tokio::time::advance(max_age + Duration::from_secs(1)).await;
    until("expiry DSN", || dsns_to(&w.mx, "alice@src.test").len() == 1).await;
    let dsn = &dsns_to(&w.mx, "alice@src.test")[0];
    assert!(
        dsn.contains("Status: 4.4.7") && dsn.contains("Action: failed"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; later@dest.test"),
        "{dsn}"
    );
    until("expired message gone", || {
        w.queue.show(id).unwrap().is_none()
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
}

/// One delay warning, then a retry per interval of `queue.retry` (give or
/// take its 10 % jitter), on paused time.
#[tokio::test(start_paused = true)]
async fn one_delay_warning_then_retries_on_schedule() {
    let retry = Duration::from_secs(600);
    let w = world(retry, Duration::from_secs(86_400), Duration::ZERO).await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, Some(Duration::from_secs(5))));
    let id = enqueue(
        &w,
        "alice@src.test",
        &["later@dest.test"],
        Duration::from_secs(10),
        Notify::default(),
    );
    until("the first attempt and its warning", || {
        attempts(&w, id) == 1 && dsns_to(&w.mx, "alice@src.test").len() == 1
    })
    .await;
    for n in 2..=3 {
        tokio::time::advance(retry.mul_f64(0.85)).await;
        real_sleep(Duration::from_millis(100)).await;
        assert_eq!(attempts(&w, id), n - 1, "attempt {n} came early");
        tokio::time::advance(retry.mul_f64(0.3)).await;
        until(&format!("attempt {n}"), || attempts(&w, id) == n).await;
    }
    real_sleep(Duration::from_millis(100)).await;
    let dsns = dsns_to(&w.mx, "alice@src.test");
    assert_eq!(dsns.len(), 1, "exactly one delay warning");
    assert!(
        dsns[0].contains("Action: delayed") && dsns[0].contains("Status: 4.3.0"),
        "{}",
        dsns[0]
    );
    let info = w.queue.show(id).unwrap().unwrap();
    assert_eq!(info.recipients[0].state, RecipientState::Deferred);
    assert!(info.delay_warned);
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_bounces_with_5_1_10_and_notifies() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    enqueue(
        &w,
        "alice@src.test",
        &["x@null.test"],
        Duration::ZERO,
        Notify::default(),
    );
    until("DSN", || dsns_to(&w.mx, "alice@src.test").len() == 1).await;
    let dsn = &dsns_to(&w.mx, "alice@src.test")[0];
    assert!(dsn.contains("Status: 5.1.10"), "{dsn}");
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_unfinished_leases_back() {
    // The MX sits on the end of DATA far longer than the 600 ms grace.
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::from_secs(30),
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    let id = enqueue(
        &w,
        "alice@src.test",
        &["bob@dest.test"],
        Duration::ZERO,
        Notify::default(),
    );
    let stats = w.mx.transcript.clone();
    until("DATA sent", || stats.lock().unwrap().data_started == 1).await;
    let cut = Instant::now();
    stop.cancel();
    handle.await.unwrap();
    assert!(
        cut.elapsed() < Duration::from_secs(3),
        "drained within the grace"
    );
    let info = w.queue.show(id).unwrap().expect("still queued");
    assert_eq!(
        info.recipients[0].state,
        RecipientState::Pending,
        "never marked delivered"
    );
    assert_eq!(
        info.recipients[0].attempts, 0,
        "the lease was given back untouched"
    );
    let due = w.queue.next_due().unwrap().unwrap();
    assert!(
        due <= SystemTime::now(),
        "due again now, not at the lease's end"
    );
}

/// On paused time that nobody advances, only the queue's `on_due` hook can
/// wake the idle scheduler (its timer waits `MAX_IDLE`).
#[tokio::test(start_paused = true)]
async fn a_new_message_wakes_the_idle_scheduler() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    let (stop, handle) = spawn(scheduler(&w, 4, 2, None));
    real_sleep(Duration::from_millis(100)).await; // idle: nothing due
    let before = tokio::time::Instant::now();
    enqueue(
        &w,
        "alice@src.test",
        &["bob@other.test"],
        Duration::ZERO,
        Notify::default(),
    );
    until("delivered", || w.mx.messages().len() == 1).await;
    assert_eq!(tokio::time::Instant::now(), before, "no timer moved");
    stop.cancel();
    handle.await.unwrap();
}

/// Idle sessions linger for more mail (`LINGER`), so a burst to one
/// destination never needs more than `per_destination` connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reuses_at_most_per_destination_connections() {
    let w = world(
        Duration::from_secs(60),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await;
    for i in 0..300 {
        let rcpt = format!("user{i}@dest.test");
        enqueue(
            &w,
            "alice@src.test",
            &[&rcpt],
            Duration::ZERO,
            Notify::default(),
        );
    }
    let start = Instant::now();
    let (stop, handle) = spawn(scheduler(&w, 8, 8, None));
    until("all delivered", || w.mx.messages().len() == 300).await;
    let elapsed = start.elapsed();
    let conns = w.mx.transcript.lock().unwrap().connections;
    eprintln!("300 messages in {elapsed:?} over {conns} connections");
    assert!(conns <= 8, "{conns} connections");
    stop.cancel();
    handle.await.unwrap();
}
