//! The DANE delivery matrix in one world (one unbound, one relay, one MTA per
//! host), each case on its own domain under `secure.example` (or
//! `insecure.example`) and its own 127.0.25.x address:
//!
//! | domain            | host / records                                   | expected                      |
//! |-------------------|--------------------------------------------------|-------------------------------|
//! | ee                | TLSA 3 1 1 of the leaf                           | delivered, dane-verified      |
//! | ta                | TLSA 2 1 1 of the intermediate                   | delivered, dane-verified      |
//! | two               | MX 10 bad (wrong hash), MX 20 good               | delivered via good            |
//! | wrong             | MX 10 bad only                                   | deferred 4.7.5                |
//! | plain             | no TLSA                                          | delivered, tls-unauthenticated|
//! | ins (insecure)    | TLSA 3 1 1 00…00, unsigned zone                  | delivered, TLSA ignored       |
//! | bog / exp         | TLSA is a CNAME into bogus/expired zone          | deferred, nothing sent        |
//! | nost              | valid TLSA, no STARTTLS                          | deferred 4.7.4, nothing sent  |
//! | pkix              | only usage 0/1 records                           | delivered encrypted           |
//! | pkixnost          | only usage 1 records, no STARTTLS                | deferred, nothing sent        |
//! | nul               | `MX 0 .`                                         | bounced 5.1.10, DSN to sender |

use danerelay::testing::enqueue;
use danerelay_queue::RecipientState;
use tokio_util::sync::CancellationToken;

use super::mta::Mta;
use super::{relay_config, settled};
use crate::dane::{leaf, tlsa, Pki};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_delivery_matrix_end_to_end() {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let s = |name: &str| format!("{name}.secure.example");
    let ee = leaf(&[&s("smtp.ee")], None, false);
    let ta = Pki::with(false, &[&s("smtp.ta")]);
    let good = leaf(&[&s("good.two")], None, false);
    let bad = leaf(&[&s("bad.two")], None, false);
    let other = leaf(&["unrelated.test"], None, false);
    let pkix = leaf(&[&s("smtp.pkix")], None, false);
    let rec = |owner: &str, r: danerelay::dane::TlsaRecord| format!("_25._tcp.{owner} TLSA {r}");

    let mut b = DnsEnv::builder();
    let secure: Vec<String> = vec![
        "ee MX 10 smtp.ee".into(),
        "smtp.ee A 127.0.25.11".into(),
        rec("smtp.ee", tlsa(3, 1, 1, &ee.cert)),
        "ta MX 10 smtp.ta".into(),
        "smtp.ta A 127.0.25.12".into(),
        rec("smtp.ta", tlsa(2, 1, 1, &ta.inter.cert)),
        "two MX 10 bad.two".into(),
        "two MX 20 good.two".into(),
        "bad.two A 127.0.25.13".into(),
        rec("bad.two", tlsa(3, 1, 1, &other.cert)),
        "good.two A 127.0.25.14".into(),
        rec("good.two", tlsa(3, 1, 1, &good.cert)),
        "wrong MX 10 bad.two".into(),
        "plain MX 10 smtp.plain".into(),
        "smtp.plain A 127.0.25.15".into(),
        "bog MX 10 smtp.bog".into(),
        "smtp.bog A 127.0.25.17".into(),
        "_25._tcp.smtp.bog CNAME _25._tcp.mx.bogus.example.".into(),
        "exp MX 10 smtp.exp".into(),
        "smtp.exp A 127.0.25.18".into(),
        "_25._tcp.smtp.exp CNAME _25._tcp.mx.expired.example.".into(),
        "nost MX 10 smtp.nost".into(),
        "smtp.nost A 127.0.25.19".into(),
        rec("smtp.nost", tlsa(3, 1, 1, &other.cert)),
        "pkix MX 10 smtp.pkix".into(),
        "smtp.pkix A 127.0.25.20".into(),
        rec("smtp.pkix", tlsa(1, 1, 1, &pkix.cert)),
        rec("smtp.pkix", tlsa(0, 0, 1, &pkix.cert)),
        "pkixnost MX 10 smtp.pkixnost".into(),
        "smtp.pkixnost A 127.0.25.21".into(),
        rec("smtp.pkixnost", tlsa(1, 1, 1, &pkix.cert)),
        "nul MX 0 .".into(),
        "sink MX 10 smtp.sink".into(),
        "smtp.sink A 127.0.25.22".into(),
    ];
    for line in &secure {
        b = b.record(Zone::Secure, line);
    }
    b = b
        .record(Zone::Insecure, "ins MX 10 smtp.ins")
        .record(Zone::Insecure, "smtp.ins A 127.0.25.16")
        .record(
            Zone::Insecure,
            &format!("_25._tcp.smtp.ins TLSA 3 1 1 {}", "00".repeat(32)),
        );
    let Some(env) = b.start() else { return };

    let m_ee = Mta::start(
        &python,
        "127.0.25.11",
        Some((std::slice::from_ref(&ee.cert), &ee.key)),
    );
    let m_ta = Mta::start(&python, "127.0.25.12", Some((&ta.chain(), &ta.leaf.key)));
    let m_bad = Mta::start(
        &python,
        "127.0.25.13",
        Some((std::slice::from_ref(&bad.cert), &bad.key)),
    );
    let m_good = Mta::start(
        &python,
        "127.0.25.14",
        Some((std::slice::from_ref(&good.cert), &good.key)),
    );
    let m_plain = Mta::start(
        &python,
        "127.0.25.15",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );
    let m_ins = Mta::start(
        &python,
        "127.0.25.16",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );
    let m_bog = Mta::start(
        &python,
        "127.0.25.17",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );
    let m_exp = Mta::start(
        &python,
        "127.0.25.18",
        Some((std::slice::from_ref(&other.cert), &other.key)),
    );
    let m_nost = Mta::start(&python, "127.0.25.19", None);
    let m_pkix = Mta::start(
        &python,
        "127.0.25.20",
        Some((std::slice::from_ref(&pkix.cert), &pkix.key)),
    );
    let m_pkixnost = Mta::start(&python, "127.0.25.21", None);
    let m_sink = Mta::start(&python, "127.0.25.22", None);

    let dir = tempfile::tempdir().unwrap();
    let running = danerelay::start(relay_config(dir.path(), &env), CancellationToken::new())
        .await
        .unwrap();
    let q = running.queue.clone();
    let sender = "alice@sink.secure.example";
    let id = |domain: &str| enqueue(&q, sender, &[&format!("user@{domain}")]);
    let (i_ee, i_ta, i_two, i_wrong) = (id(&s("ee")), id(&s("ta")), id(&s("two")), id(&s("wrong")));
    let (i_plain, i_ins) = (id(&s("plain")), id("ins.insecure.example"));
    let (i_bog, i_exp, i_nost) = (id(&s("bog")), id(&s("exp")), id(&s("nost")));
    let (i_pkix, i_pkixnost, i_nul) = (id(&s("pkix")), id(&s("pkixnost")), id(&s("nul")));

    // Delivered: gone from the queue, received by exactly the right MTA.
    for (case, qid, mta, tls) in [
        ("DANE-EE", i_ee, &m_ee, true),
        ("DANE-TA", i_ta, &m_ta, true),
        ("second MX after a wrong hash", i_two, &m_good, true),
        ("no TLSA", i_plain, &m_plain, true),
        ("unsigned zone, TLSA ignored", i_ins, &m_ins, true),
        ("only PKIX usages", i_pkix, &m_pkix, true),
    ] {
        assert_eq!(settled(&q, qid).await, None, "{case}: not delivered");
        let got = mta.wait_for(1).await;
        assert_eq!(got.len(), 1, "{case}");
        assert_eq!(got[0].from, sender, "{case}");
        assert_eq!(got[0].tls, tls, "{case}: TLS");
    }
    // Deferred with the DANE/DNSSEC reason, and nothing reached the host.
    for (case, qid, mta, status) in [
        ("wrong hash", i_wrong, &m_bad, "4.7.5"),
        ("bogus TLSA", i_bog, &m_bog, "4.7.5"),
        ("expired TLSA RRSIG", i_exp, &m_exp, "4.7.5"),
        ("TLSA but no STARTTLS", i_nost, &m_nost, "4.7.4"),
        (
            "PKIX-only TLSA, no STARTTLS",
            i_pkixnost,
            &m_pkixnost,
            "4.7.4",
        ),
    ] {
        let (st, reply) = settled(&q, qid)
            .await
            .unwrap_or_else(|| panic!("{case}: left the queue"));
        assert_eq!(st, RecipientState::Deferred, "{case}: {reply}");
        assert!(reply.contains(status), "{case}: {reply}");
        assert!(
            mta.got().is_empty(),
            "{case}: the host must not get the message"
        );
    }
    assert!(
        m_bad.got().is_empty(),
        "the wrong-hash host never gets mail"
    );
    // Null MX: bounced 5.1.10; the DSN reaches the sender's MX from <>.
    assert_eq!(
        settled(&q, i_nul).await,
        None,
        "null MX: bounced and removed"
    );
    let dsn = m_sink.wait_for(1).await;
    assert_eq!(dsn[0].from, "<>", "a DSN comes from the null sender");
    assert_eq!(dsn[0].rcpts, [sender]);
    assert!(dsn[0].data.contains("Status: 5.1.10"), "{}", dsn[0].data);
    assert!(dsn[0]
        .data
        .contains("Final-Recipient: rfc822; user@nul.secure.example"));

    let text = running.metrics.render();
    for (series, n) in [
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"dane-verified\"}",
            3,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"tls-unauthenticated\"}",
            3,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"plaintext\"}",
            1,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"deferred\",tls=\"none\"}",
            5,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"bounced\",tls=\"none\"}",
            1,
        ),
        ("danerelay_dane_results_total{result=\"ok\"}", 3),
        ("danerelay_dane_results_total{result=\"tempfail\"}", 2),
        ("danerelay_dnssec_validating", 1),
    ] {
        assert!(
            text.contains(&format!("{series} {n}\n")),
            "{series} != {n}:\n{text}"
        );
    }
    running.drain().await;
}
