//! Traffic shaping through the scheduler, against fake receiving MTAs that
//! count connections and time each message: route limits hold, a 421
//! throttles and recovers, a full mailbox throttles nothing, and a slow
//! destination does not hold up a healthy one.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::config::{DomainPattern, Rate, Route};
use crate::delivery::shaping::{Shaper, ShapingOptions};
use crate::testing::mx::Script;

async fn world_with(retry: Duration, mx: FakeMx) -> World {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions {
        retry: vec![retry],
        max_age: Duration::from_secs(3600),
        lease: Duration::from_secs(3600),
    };
    World {
        queue: Queue::open(dir.path(), opts).unwrap(),
        mx,
        metrics: Metrics::new(),
        clock: PausedClock::new(),
        _dir: dir,
    }
}

fn route(domain: &str) -> Route {
    Route {
        domain: DomainPattern::Exact(domain.into()),
        tls: None,
        next_hop: None,
        max_connections: None,
        message_rate: None,
        connection_rate: None,
    }
}

fn send(w: &World, rcpts: &[&str]) -> QueueId {
    enqueue(
        w,
        "alice@src.test",
        rcpts,
        Duration::ZERO,
        Notify::default(),
    )
}

fn fast_shaping(w: &World, backoff: Duration, recover_after: u32) -> Shaper {
    let options = ShapingOptions {
        backoff,
        max_backoff: backoff * 4,
        recover_after,
    };
    Shaper::new(options, w.metrics.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_holds_at_the_receiving_mta() {
    let w = world_with(Duration::from_secs(60), FakeMx::start(Duration::ZERO).await).await;
    let rate = Rate::parse("4/sec").unwrap().unwrap();
    let r = Route {
        message_rate: Some(rate),
        ..route("dest.test")
    };
    for i in 0..14 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    let (stop, handle) = spawn(scheduler_with(&w, (16, 8, None), vec![r], dns()));
    until("all delivered", || w.mx.messages().len() == 14).await;
    let mut at: Vec<_> = w.mx.messages().iter().map(|m| m.at).collect();
    at.sort();
    let span = at[13] - at[0];
    // 14 messages at 4/s with a burst of 4: at least (14 - 4) / 4 s.
    assert!(span >= Duration::from_millis(2300), "{span:?}");
    // Any window holds at most the burst plus what the rate allows (+1
    // for measuring at the sink rather than at the bucket).
    for i in 0..at.len() {
        for j in i + 1..at.len() {
            let allowed = 4.0 + (at[j] - at[i]).as_secs_f64() * 4.0 + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} messages in {:?}",
                j - i + 1,
                at[j] - at[i]
            );
        }
    }
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_max_connections_holds_at_the_receiving_mta() {
    let mx = FakeMx::start(Duration::from_millis(200)).await;
    let w = world_with(Duration::from_secs(60), mx).await;
    let r = Route {
        max_connections: Some(2),
        ..route("dest.test")
    };
    for i in 0..10 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    let (stop, handle) = spawn(scheduler_with(&w, (16, 8, None), vec![r], dns()));
    until("all delivered", || w.mx.messages().len() == 10).await;
    let max = w.mx.transcript.lock().unwrap().max_active;
    assert!(max <= 2, "{max} connections at once");
    stop.cancel();
    handle.await.unwrap();
}

/// The first connection is greeted with 421 4.7.0: the destination is
/// throttled (gauge 1), nothing connects during the backoff window, mail
/// then goes over fewer connections, and deliveries bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_throttles_backs_off_and_recovers() {
    let greetings = VecDeque::from(["421 4.7.0 mx.test too busy, slow down".to_string()]);
    let script = Script {
        greetings: Some(Arc::new(Mutex::new(greetings))),
        data_delay: Duration::from_millis(50),
        ..Script::by_local_part()
    };
    let w = world_with(Duration::from_secs(1), FakeMx::listen(script).await).await;
    let shaper = fast_shaping(&w, Duration::from_secs(2), 2);
    let s = scheduler_with(&w, (16, 4, None), Vec::new(), dns()).with_shaper(shaper.clone());
    let (stop, handle) = spawn(s);
    let first = send(&w, &["first@dest.test"]);
    until("throttled", || w.metrics.destinations_throttled.get() == 1).await;
    // The gauge moves as the attempt ends, the queue records it just after.
    until("the 421 recorded", || {
        let info = w.queue.show(first).unwrap().unwrap();
        let reply = info.recipients[0].last_reply.clone().unwrap_or_default();
        reply.contains("421 4.7.0")
    })
    .await;
    let views = shaper.views();
    assert!(
        views[0].throttled && views[0].backoff_until.is_some(),
        "{views:?}"
    );
    assert_eq!(views[0].max_connections, 1, "{views:?}");
    let seen = {
        let mut st = w.mx.transcript.lock().unwrap();
        st.max_active = st.active;
        st.connections
    };
    for i in 0..6 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    real_sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        w.mx.transcript.lock().unwrap().connections,
        seen,
        "no connection during the backoff window"
    );
    assert!(w.mx.messages().is_empty());
    until("all delivered", || w.mx.messages().len() == 7).await;
    let max = w.mx.transcript.lock().unwrap().max_active;
    assert!(max <= 2, "{max} connections at once after the 421");
    until("recovered", || w.metrics.destinations_throttled.get() == 0).await;
    assert_eq!(shaper.views()[0].max_connections, 4);
    stop.cancel();
    handle.await.unwrap();
}

/// 452 4.2.2 (mailbox full) is about one mailbox (RFC 3463 §3.3): only
/// that recipient retries; the destination is not throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_retries_only_that_recipient() {
    let script = Script::by_local_part().rule("RCPT TO:<full", "452 4.2.2 Mailbox full");
    let w = world_with(Duration::from_secs(1), FakeMx::listen(script).await).await;
    let (stop, handle) = spawn(scheduler(&w, 16, 4, None));
    let id = send(&w, &["full@dest.test", "ok@dest.test"]);
    let rcpts_to = |who: &str| {
        let st = w.mx.transcript.lock().unwrap();
        let prefix = format!("RCPT TO:<{who}@");
        st.commands
            .iter()
            .filter(|c| c.starts_with(&prefix))
            .count()
    };
    until("the full mailbox retried twice", || rcpts_to("full") >= 3).await;
    assert_eq!(rcpts_to("ok"), 1, "the other recipient was delivered once");
    assert_eq!(w.mx.messages().len(), 1);
    assert_eq!(w.metrics.destinations_throttled.get(), 0);
    let info = w.queue.show(id).unwrap().unwrap();
    assert_eq!(info.recipients.len(), 2);
    let full = info
        .recipients
        .iter()
        .find(|r| r.address.starts_with("full"))
        .unwrap();
    assert!(full.last_reply.as_deref().unwrap_or("").contains("4.2.2"));
    stop.cancel();
    handle.await.unwrap();
}

/// A destination that sits on every message (its connections all busy)
/// does not stop a healthy destination's mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_does_not_delay_a_healthy_one() {
    let healthy = FakeMx::start(Duration::ZERO).await;
    let slow = FakeMx::listen_on(
        &format!("127.0.0.2:{}", healthy.port),
        Script {
            data_delay: Duration::from_secs(60),
            ..Script::by_local_part()
        },
    )
    .await;
    let w = world_with(Duration::from_secs(60), healthy).await;
    let dns = dns();
    dns.mx("slow.test", Security::Insecure, &[(10, "mx.slow.test")]);
    dns.a("mx.slow.test", Security::Insecure, &["127.0.0.2"]);
    dns.nodata(
        "mx.slow.test",
        crate::dns::RecordType::Aaaa,
        Security::Insecure,
    );
    let (stop, handle) = spawn(scheduler_with(&w, (16, 2, None), Vec::new(), dns));
    for i in 0..6 {
        send(&w, &[&format!("user{i}@slow.test")]);
    }
    let busy = || slow.transcript.lock().unwrap().data_started;
    until("the slow destination holds its connections", || busy() == 2).await;
    for i in 0..5 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    until("the healthy destination's mail delivered", || {
        w.mx.messages().len() == 5
    })
    .await;
    let st = slow.transcript.lock().unwrap().clone();
    assert_eq!(
        (st.active, st.received.len()),
        (2, 0),
        "still sitting on it"
    );
    stop.cancel();
    handle.await.unwrap();
}

/// A rate slow enough that the worker closes its session while it waits
/// (longer than `LINGER`) gives its connection permit back with it: with a
/// single permit in all, the next message still goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_rate_wait_gives_the_connection_permit_back() {
    let w = world_with(Duration::from_secs(60), FakeMx::start(Duration::ZERO).await).await;
    let r = Route {
        message_rate: Rate::parse("20/min").unwrap(),
        ..route("dest.test")
    };
    for i in 0..2 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    let (stop, handle) = spawn(scheduler_with(&w, (1, 1, None), vec![r], dns()));
    until("both delivered", || w.mx.messages().len() == 2).await;
    let at: Vec<_> = w.mx.messages().iter().map(|m| m.at).collect();
    let gap = at[1].max(at[0]) - at[1].min(at[0]);
    assert!(gap >= Duration::from_millis(2900), "20/min: {gap:?} apart");
    assert_eq!(
        w.mx.transcript.lock().unwrap().connections,
        2,
        "closed while waiting"
    );
    stop.cancel();
    handle.await.unwrap();
}

/// Mail held back by a route's `message_rate` waits in its mailbox longer
/// than a lease lasts: the lease keeper renews it, so no message is leased
/// a second time and delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waiting_longer_than_a_lease_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions {
        retry: vec![Duration::from_secs(60)],
        max_age: Duration::from_secs(3600),
        lease: Duration::from_secs(1),
    };
    let w = World {
        queue: Queue::open(dir.path(), opts).unwrap(),
        mx: FakeMx::start(Duration::ZERO).await,
        metrics: Metrics::new(),
        clock: PausedClock::new(),
        _dir: dir,
    };
    let r = Route {
        message_rate: Some(Rate::parse("1/sec").unwrap().unwrap()),
        ..route("dest.test")
    };
    for i in 0..5 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    let (stop, handle) = spawn(scheduler_with(&w, (16, 8, None), vec![r], dns()));
    until("all delivered", || w.mx.messages().len() >= 5).await;
    // Long enough for any lease that ran out to be leased and sent again.
    real_sleep(Duration::from_millis(1500)).await;
    let mut rcpts: Vec<String> =
        w.mx.messages()
            .iter()
            .flat_map(|m| m.rcpts.clone())
            .collect();
    rcpts.sort();
    let want: Vec<String> = (0..5).map(|i| format!("user{i}@dest.test")).collect();
    assert_eq!(rcpts, want, "each message exactly once");
    assert_eq!(w.queue.counts().total(), 0);
    stop.cancel();
    handle.await.unwrap();
}

/// The same with a backlog at the slow destination several times
/// `delivery.concurrency`: its waiting mail holds only its share of the
/// active slots, so the healthy destination's mail is still leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destinations_backlog_beyond_the_concurrency_does_not_block_others() {
    let healthy = FakeMx::start(Duration::ZERO).await;
    let slow = FakeMx::listen_on(
        &format!("127.0.0.3:{}", healthy.port),
        Script {
            data_delay: Duration::from_secs(60),
            ..Script::by_local_part()
        },
    )
    .await;
    let w = world_with(Duration::from_secs(60), healthy).await;
    let dns = dns();
    dns.mx("slow.test", Security::Insecure, &[(10, "mx.slow.test")]);
    dns.a("mx.slow.test", Security::Insecure, &["127.0.0.3"]);
    dns.nodata(
        "mx.slow.test",
        crate::dns::RecordType::Aaaa,
        Security::Insecure,
    );
    for i in 0..12 {
        send(&w, &[&format!("user{i}@slow.test")]);
    }
    // Concurrency 4: the slow destination's 12 messages are three times it.
    let (stop, handle) = spawn(scheduler_with(&w, (4, 2, None), Vec::new(), dns));
    let busy = || slow.transcript.lock().unwrap().data_started;
    until("the slow destination holds its connections", || busy() == 2).await;
    for i in 0..5 {
        send(&w, &[&format!("user{i}@dest.test")]);
    }
    until("the healthy destination's mail delivered", || {
        w.mx.messages().len() == 5
    })
    .await;
    assert_eq!(slow.transcript.lock().unwrap().received.len(), 0);
    stop.cancel();
    handle.await.unwrap();
}
