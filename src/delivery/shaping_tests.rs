//! The shaping decisions on explicit or paused time.

use std::time::Duration;

use super::*;
use crate::smtp::EnhancedCode;

fn reply(code: u16, status: (u8, u16, u16)) -> Reply {
    Reply::local(code, EnhancedCode(status.0, status.1, status.2), "x")
}

#[test]
fn gcra_allows_one_burst_then_the_steady_rate() {
    // 10 per second (interval 100 ms = 100_000 µs), burst 10.
    let (interval, burst) = (100_000, 10);
    let mut tat = 0;
    let now = 5_000_000;
    for _ in 0..10 {
        tat = gcra(tat, now, interval, burst, 1).unwrap();
    }
    assert_eq!(gcra(tat, now, interval, burst, 1), Err(100_000));
    // After one interval, exactly one more.
    tat = gcra(tat, now + 100_000, interval, burst, 1).unwrap();
    assert_eq!(gcra(tat, now + 100_000, interval, burst, 1), Err(100_000));
    // n cells at once: waits for all of them, never more than the burst.
    assert_eq!(gcra(tat, now + 100_000, interval, burst, 3), Err(300_000));
    assert_eq!(gcra(0, now, interval, burst, 10), Ok(now + 1_000_000));
    assert!(gcra(0, now, interval, burst, 11).is_err());
}

#[test]
fn gcra_over_a_long_run_keeps_the_rate_plus_one_burst() {
    let (interval, burst) = (50_000, 4); // 20/sec
    let (mut tat, mut now, mut sent) = (0u64, 0u64, 0u64);
    while now < 10_000_000 {
        match gcra(tat, now, interval, burst, 1) {
            Ok(t) => {
                tat = t;
                sent += 1;
            }
            Err(wait) => now += wait,
        }
    }
    // 10 s at 20/s = 200, plus the burst.
    assert!((200..=204).contains(&sent), "{sent}");
}

#[test]
fn what_throttles_the_destination_and_what_does_not() {
    assert!(throttles(Phase::Greeting, &reply(421, (4, 7, 0))));
    assert!(throttles(Phase::Rcpt, &reply(421, (4, 3, 2))));
    assert!(throttles(Phase::Mail, &reply(451, (4, 7, 1))));
    assert!(throttles(Phase::FinalDot, &reply(450, (4, 7, 28))));
    assert!(throttles(Phase::Bdat, &reply(452, (4, 7, 650))));
    assert!(throttles(Phase::Ehlo, &reply(450, (4, 7, 0))));
    // Per mailbox (RFC 3463 §3.3), or about one recipient.
    assert!(!throttles(Phase::Rcpt, &reply(450, (4, 2, 2))));
    assert!(!throttles(Phase::FinalDot, &reply(452, (4, 2, 2))));
    assert!(!throttles(Phase::Rcpt, &reply(450, (4, 7, 1))));
    // Not "slow down": other transient or permanent replies.
    assert!(!throttles(Phase::Mail, &reply(451, (4, 3, 0))));
    assert!(!throttles(Phase::Mail, &reply(550, (5, 7, 1))));
    assert!(!throttles(Phase::Data, &reply(554, (5, 7, 0))));
}

fn opts() -> ShapingOptions {
    ShapingOptions {
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(35),
        recover_after: 3,
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_halves_connections_and_backs_off_doubling() {
    let o = opts();
    let mut a = Adaptive::default();
    let t0 = Instant::now();
    assert!(!a.throttled(t0));
    assert_eq!(a.cap(8), 8);
    a.on_throttle(t0, 8, 6, &o);
    assert_eq!(a.cap(8), 3, "half of the 6 in use");
    assert_eq!(a.backoff(t0), Some(t0 + Duration::from_secs(10)));
    // The other connections' 421s within the window count once.
    a.on_throttle(t0 + Duration::from_secs(1), 8, 3, &o);
    assert_eq!(a.cap(8), 3);
    tokio::time::advance(Duration::from_secs(10)).await;
    let t1 = Instant::now();
    assert_eq!(a.backoff(t1), None);
    assert!(a.throttled(t1), "still below the limit");
    a.on_throttle(t1, 8, 3, &o);
    assert_eq!(a.cap(8), 1);
    assert_eq!(a.backoff(t1), Some(t1 + Duration::from_secs(20)));
    a.on_throttle(t1 + Duration::from_secs(20), 8, 1, &o);
    assert_eq!(
        a.backoff(t1 + Duration::from_secs(20)),
        Some(t1 + Duration::from_secs(55)),
        "capped at max_backoff"
    );
    assert_eq!(a.cap(8), 1, "never below one connection");
}

#[tokio::test(start_paused = true)]
async fn deliveries_earn_connections_back_one_at_a_time() {
    let o = opts();
    let mut a = Adaptive::default();
    let t0 = Instant::now();
    a.on_throttle(t0, 4, 4, &o);
    assert_eq!(a.cap(4), 2);
    a.on_delivered(2, 4, &o);
    assert_eq!(a.cap(4), 2);
    a.on_delivered(1, 4, &o);
    assert_eq!(a.cap(4), 3);
    a.on_delivered(3, 4, &o);
    assert_eq!(a.cap(4), 4);
    let later = t0 + Duration::from_secs(11);
    assert!(!a.throttled(later), "recovered");
    // Recovered: the next throttle starts from the first window again.
    a.on_throttle(later, 4, 4, &o);
    assert_eq!(a.backoff(later), Some(later + Duration::from_secs(10)));
    // Unthrottled deliveries change nothing.
    let mut b = Adaptive::default();
    b.on_delivered(100, 4, &o);
    assert_eq!(b, Adaptive::default());
}

#[tokio::test(start_paused = true)]
async fn the_shaper_meters_messages_and_connections_per_destination() {
    let shaper = Shaper::new(opts(), Metrics::new());
    let a = Site::NextHop("a.test:25".into());
    let b = Site::NextHop("b.test:25".into());
    let rate = Rate::parse("2/sec").unwrap();
    shaper.admit(&a, 4, rate, Rate::parse("60/min").unwrap());
    shaper.admit(&b, 4, None, None);
    assert_eq!(shaper.max_take(&a), Some(2));
    assert_eq!(shaper.max_take(&b), None);
    assert_eq!(shaper.try_take(&a, Budget::Messages, 2).await, Ok(()));
    assert_eq!(
        shaper.try_take(&a, Budget::Messages, 1).await,
        Err(Duration::from_millis(500))
    );
    assert_eq!(shaper.try_take(&a, Budget::Connections, 1).await, Ok(()));
    assert_eq!(
        shaper.try_take(&a, Budget::Connections, 1).await,
        Err(Duration::from_secs(1))
    );
    for _ in 0..50 {
        assert_eq!(shaper.try_take(&b, Budget::Messages, 1).await, Ok(()));
    }
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(shaper.try_take(&a, Budget::Messages, 1).await, Ok(()));
    // A stricter domain joining the destination tightens it.
    shaper.admit(&b, 2, Rate::parse("1/sec").unwrap(), None);
    assert_eq!(shaper.cap(&b), 2);
    assert_eq!(shaper.max_take(&b), Some(1));
}

#[tokio::test(start_paused = true)]
async fn the_gauge_counts_throttled_destinations_until_they_recover() {
    let metrics = Metrics::new();
    let shaper = Shaper::new(opts(), metrics.clone());
    let a = Site::NextHop("a.test:25".into());
    shaper.admit(&a, 2, None, None);
    shaper.note_workers(&a, 2);
    shaper.record(&a, true, 0).await;
    assert_eq!(metrics.destinations_throttled.get(), 1);
    assert_eq!(shaper.cap(&a), 1);
    let views = shaper.views();
    assert_eq!(views.len(), 1);
    assert!(views[0].throttled && views[0].backoff_until.is_some());
    assert_eq!(views[0].max_connections, 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    shaper.refresh(Instant::now());
    assert_eq!(metrics.destinations_throttled.get(), 1, "cap still reduced");
    shaper.record(&a, false, 3).await;
    assert_eq!(metrics.destinations_throttled.get(), 0);
    assert_eq!(shaper.cap(&a), 2);
    assert!(shaper.views()[0].backoff_until.is_none());
}
