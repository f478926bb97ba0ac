//! Discovery, fetch and cache against the Python policy host.

use std::time::{Duration, Instant, SystemTime};

use danerelay::dns::{RecordType, Security};
use danerelay::metrics::StsFetchResult as R;
use danerelay::sts::{FetchError, Mode};

use super::harness::{policy, Lab, PolicyServer};

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_is_fetched_cached_and_refetched_when_the_id_changes() {
    let lab = Lab::new();
    lab.publish("a.test", "1", "127.0.43.1");
    let Some(server) = lab.server("a.test", "127.0.43.1", &policy("enforce", &["mx.a.test"]))
    else {
        return;
    };
    let sts = lab.sts(Some(lab.queue()), T);
    let now = SystemTime::now();
    let got = sts.policy_for("a.test", now, false).await.active.unwrap();
    assert_eq!((got.policy.mode, got.id.as_str()), (Mode::Enforce, "1"));
    assert!(got.policy.mx_matches("mx.a.test"));
    assert_eq!((lab.fetches(R::Ok), server.requests()), (1, 1));
    // Same id: the cache answers, the server is not asked.
    let again = sts.policy_for("A.test.", now, false).await.active.unwrap();
    assert_eq!(again, got);
    assert_eq!((lab.fetches(R::Cached), server.requests()), (1, 1));
    // A new id: refetched (RFC 8461 §3.1).
    server.set_policy(&policy("testing", &["mx.a.test"]));
    lab.publish("a.test", "2", "127.0.43.1");
    let newer = sts.policy_for("a.test", now, false).await.active.unwrap();
    assert_eq!((newer.policy.mode, newer.id.as_str()), (Mode::Testing, "2"));
    assert_eq!((lab.fetches(R::Ok), server.requests()), (2, 2));
    // max_age (86400) nearly over: refetched before it expires.
    let late = now + Duration::from_secs(86400 - 3600);
    sts.policy_for("a.test", late, false).await.active.unwrap();
    assert_eq!(server.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cached_policy_survives_a_restart_and_a_policy_server_outage() {
    let lab = Lab::new();
    lab.publish("b.test", "1", "127.0.43.2");
    let Some(server) = lab.server("b.test", "127.0.43.2", &policy("enforce", &["mx.b.test"]))
    else {
        return;
    };
    {
        let queue = lab.queue();
        let sts = lab.sts(Some(queue.clone()), T);
        let got = sts.policy_for("b.test", SystemTime::now(), false).await;
        assert_eq!(got.active.unwrap().policy.mode, Mode::Enforce);
    }
    drop(server); // the policy host is gone
                  // A restart: a new queue handle on the same database, a new Sts.
    let sts = lab.sts(Some(lab.queue()), T);
    let now = SystemTime::now();
    let cached = sts.policy_for("b.test", now, false).await;
    assert_eq!(cached.active.as_ref().unwrap().id, "1");
    assert_eq!(lab.fetches(R::Cached), 1);
    // A new id while the server is down: the fetch fails, the cached
    // policy stays in force (RFC 8461 §5.1).
    lab.publish("b.test", "2", "127.0.43.2");
    let kept = sts.policy_for("b.test", now, false).await;
    assert_eq!(kept.active.as_ref().unwrap().policy.mode, Mode::Enforce);
    assert!(
        matches!(kept.failure, Some(FetchError::Connect { .. })),
        "{kept:?}"
    );
    assert_eq!(lab.fetches(R::ConnectError), 1);
    // The TXT record removed (or DNS failing): still the cached policy.
    lab.dns
        .nodata("_mta-sts.b.test", RecordType::Txt, Security::Insecure);
    assert!(sts.policy_for("b.test", now, false).await.active.is_some());
    lab.dns.servfail("_mta-sts.b.test", RecordType::Txt);
    assert!(sts.policy_for("b.test", now, false).await.active.is_some());
    assert_eq!(lab.fetches(R::DnsError), 1);
    // Until it expires.
    let later = now + Duration::from_secs(86400 + 1);
    assert!(sts
        .policy_for("b.test", later, false)
        .await
        .active
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_from_the_policy_host_mean_no_policy() {
    let lab = Lab::new();
    lab.publish("c.test", "1", "127.0.43.3");
    let Some(server) = lab.server("c.test", "127.0.43.3", &policy("enforce", &["mx.c.test"]))
    else {
        return;
    };
    // No cache, so each failure is seen afresh.
    let sts = lab.sts(None, T);
    for (behaviour, text, want) in [
        ("html", None, R::HttpError),
        ("redirect", None, R::HttpError),
        ("missing", None, R::HttpError),
        ("big", None, R::TooLarge),
        (
            "ok",
            Some("version: STSv1\nmode: enforce\nmax_age: 99999999999\n"),
            R::Invalid,
        ),
        ("ok", Some("<html>hello</html>"), R::Invalid),
    ] {
        server.behave(behaviour);
        if let Some(t) = text {
            server.set_policy(t);
        }
        let before = lab.fetches(want);
        let got = sts.policy_for("c.test", SystemTime::now(), false).await;
        assert_eq!(got.active, None, "{behaviour}");
        assert!(got.failure.is_some(), "{behaviour}");
        assert_eq!(
            lab.fetches(want),
            before + 1,
            "{behaviour} counted as {want:?}"
        );
    }
    assert_eq!(lab.fetches(R::Ok), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_loris_policy_host_is_cut_off_at_the_fetch_timeout() {
    let lab = Lab::new();
    lab.publish("d.test", "1", "127.0.43.4");
    let Some(server) = lab.server("d.test", "127.0.43.4", &policy("enforce", &["mx.d.test"]))
    else {
        return;
    };
    server.behave("slow");
    let sts = lab.sts(None, Duration::from_secs(2));
    let start = Instant::now();
    let got = sts.policy_for("d.test", SystemTime::now(), false).await;
    let took = start.elapsed();
    assert_eq!(got.active, None);
    assert!(
        matches!(got.failure, Some(FetchError::Timeout(_))),
        "{got:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(lab.fetches(R::Timeout), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_host_certificates_must_be_valid_for_its_name() {
    let lab = Lab::new();
    let sts = lab.sts(None, T);
    let wrong = lab.cert(&["mta-sts.other.test"], false);
    let expired = lab.cert(&["mta-sts.f.test"], true);
    let stranger = danerelay::testing::certs::self_signed(&["mta-sts.g.test"]);
    let body = policy("enforce", &["mx.test.example"]);
    let mut servers = Vec::new();
    for (domain, ip, cert) in [
        ("e.test", "127.0.43.5", &wrong),
        ("f.test", "127.0.43.6", &expired),
        ("g.test", "127.0.43.7", &stranger),
    ] {
        lab.publish(domain, "1", ip);
        let Some(s) = PolicyServer::start(lab.dir.path(), ip, cert, &body) else {
            return;
        };
        servers.push(s);
        let got = sts.policy_for(domain, SystemTime::now(), false).await;
        assert_eq!(got.active, None, "{domain}");
        let failure = got.failure.unwrap();
        assert_eq!(
            failure.result_type(),
            "sts-webpki-invalid",
            "{domain}: {failure}"
        );
    }
    assert_eq!(lab.fetches(R::TlsError), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_or_ambiguous_txt_records_mean_no_policy_and_no_fetch() {
    let lab = Lab::new();
    lab.publish("h.test", "1", "127.0.43.8");
    let Some(server) = lab.server("h.test", "127.0.43.8", &policy("enforce", &["mx.h.test"]))
    else {
        return;
    };
    let sts = lab.sts(None, T);
    let name = "_mta-sts.h.test";
    for records in [
        vec!["v=STSv1; id=not-alnum!"],
        vec!["v=STSv1"],
        vec!["v=STSv1; id=1", "v=STSv1; id=2"],
    ] {
        lab.dns.txt(name, Security::Insecure, &records);
        let got = sts.policy_for("h.test", SystemTime::now(), false).await;
        assert_eq!(got.active, None, "{records:?}");
    }
    assert_eq!(lab.fetches(R::Invalid), 3);
    lab.dns.txt(name, Security::Insecure, &["v=spf1 -all"]);
    assert_eq!(
        sts.policy_for("h.test", SystemTime::now(), false)
            .await
            .active,
        None
    );
    assert_eq!(lab.fetches(R::NoPolicy), 1);
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_policies_are_refreshed_before_expiry_and_expired_ones_dropped() {
    let lab = Lab::new();
    lab.publish("p.test", "1", "127.0.43.9");
    let Some(server) = lab.server("p.test", "127.0.43.9", &policy("enforce", &["mx.p.test"]))
    else {
        return;
    };
    let sts = lab.sts(Some(lab.queue()), T);
    let now = SystemTime::now();
    sts.policy_for("p.test", now, false).await.active.unwrap();
    assert_eq!(server.requests(), 1);
    // Far from expiry (max_age 86400, margin a quarter of it): nothing to do.
    let pass = sts.refresh_cached(now + Duration::from_secs(3600)).await;
    assert_eq!(pass, danerelay::sts::refresh::Pass::default());
    assert_eq!(server.requests(), 1);
    // Within the margin, with no mail going to p.test: fetched again, and
    // the fresh copy is what the cache holds from then on.
    let late = now + Duration::from_secs(86400 - 3600);
    let pass = sts.refresh_cached(late).await;
    assert_eq!((pass.refreshed, pass.dropped), (1, 0));
    assert_eq!(server.requests(), 2);
    let cached = sts.cached("p.test").unwrap();
    assert!(!cached.refresh_due(danerelay::sts::unix(late)));
    // Long after even the refreshed copy expired: dropped, not fetched.
    let gone = late + Duration::from_secs(2 * 86400);
    let pass = sts.refresh_cached(gone).await;
    assert_eq!((pass.refreshed, pass.dropped), (0, 1));
    assert_eq!(server.requests(), 2);
    assert!(sts.cached("p.test").is_none());
}
