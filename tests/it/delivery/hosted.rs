//! DANE round 2 (issue #16) end to end, in `trust-ad` (unbound) and
//! `validate` (in-process, straight to knotd) mode: the relay started
//! in-process, real aiosmtpd MTAs, one domain per case.
//!
//! Hosted domains (RFC 7672 §2.2.1): `insecure.example` is an unsigned
//! delegation from the signed `example.`; its customer domains name MX hosts
//! in the signed `secure.example` (the provider) that publish TLSA.
//!
//! | domain (rcpt)               | MX / records                                      | expected                         |
//! |-----------------------------|---------------------------------------------------|----------------------------------|
//! | hosted.insecure.example     | good.prov (TLSA 3 1 1 of its cert)                | delivered, dane-trusted          |
//! | hostedbad.insecure.example  | bad.prov (TLSA of another cert)                   | deferred 4.7.5, nothing sent     |
//! | hostedtwo.insecure.example  | MX 10 bad.prov, MX 20 good.prov                   | delivered via good, dane-trusted |
//! | hostedonly.insecure.example | good.prov; route tls = "dane-only"                | delivered, dane-trusted          |
//! | hostedta.insecure.example   | ta.prov, TLSA 2 1 1; leaf names only the domain   | deferred (no next-hop ref. id)   |
//! | nh.secure.example           | ta2.prov, TLSA 2 1 1; leaf names only the domain  | delivered, dane-verified (§3.2.3)|
//! | cnexp.secure.example        | MX alias CNAME smtp.cnexp, TLSA at expanded name, | delivered, dane-verified         |
//! |                             | DANE-TA leaf names only the original MX name      |                                  |
//! | cnorig.secure.example       | MX alias CNAME smtp.cnorig, TLSA at original name | delivered, dane-verified         |
//! | routed.test                 | route next_hop = "smtp.hop.secure.example:25"     | delivered, dane-verified         |
//! | ti.secure.example           | secure host, TLSA a CNAME into the unsigned zone  | delivered, tls-unauthenticated   |
//!
//! `tls-check` then shows `dane-trusted`, and with `dane_insecure_mx =
//! "may"` opportunistic TLS (under `dane`) or a deferral (under `dane-only`).

use std::path::Path;
use std::process::Command;

use danerelay::config::{self, DnssecMode};
use danerelay_queue::RecipientState;
use tokio_util::sync::CancellationToken;

use super::mta::Mta;
use super::settled;
use crate::dane::{leaf, tlsa, Pki};
use crate::support::dnsenv::{DnsEnv, Zone};
use crate::support::require_python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_cname_and_next_hop_dane_trust_ad() {
    world(DnssecMode::TrustAd, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_cname_and_next_hop_dane_validate() {
    world(DnssecMode::Validate, 120).await;
}

/// The `[dns]` table for `mode` in this world.
fn dns_toml(env: &DnsEnv, mode: DnssecMode) -> String {
    let c = env.dns_config(mode);
    let word = match mode {
        DnssecMode::TrustAd => "trust-ad",
        DnssecMode::Validate => "validate",
        DnssecMode::Off => "off",
        DnssecMode::Auto => "auto",
    };
    format!(
        "[dns]\nnameservers = [\"{}\"]\ndnssec = \"{word}\"\ntrust_anchor = {:?}\n",
        c.nameservers[0],
        env.trust_anchor.display().to_string()
    )
}

fn tls_check(config: &Path, domain: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_danerelay"))
        .args(["tls-check", domain, "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}{}",
            String::from_utf8_lossy(&out.stderr).into_owned()
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

async fn world(mode: DnssecMode, base: u8) {
    let Some(python) = require_python(&["aiosmtpd"]) else {
        return;
    };
    let ip = |n: u8| format!("127.0.25.{}", base + n);
    let s = |name: &str| format!("{name}.secure.example");
    let good = leaf(&[&s("good.prov")], None, false);
    let other = leaf(&["unrelated.test"], None, false);
    // DANE-TA leaves that name only the recipient domain / the original MX.
    let ta_hosted = Pki::with(false, &["hostedta.insecure.example"]);
    let ta_nh = Pki::with(false, &[&s("nh")]);
    let ta_cn = Pki::with(false, &[&s("alias-exp")]);
    let orig = leaf(&[&s("smtp.cnorig")], None, false);
    let hop = leaf(&[&s("smtp.hop")], None, false);
    let rec = |owner: &str, r: danerelay::dane::TlsaRecord| format!("_25._tcp.{owner} TLSA {r}");

    let secure: Vec<String> = vec![
        format!("good.prov A {}", ip(1)),
        rec("good.prov", tlsa(3, 1, 1, &good.cert)),
        format!("bad.prov A {}", ip(2)),
        rec("bad.prov", tlsa(3, 1, 1, &good.cert)),
        format!("ta.prov A {}", ip(3)),
        rec("ta.prov", tlsa(2, 1, 1, &ta_hosted.inter.cert)),
        "nh MX 10 ta2.prov".into(),
        format!("ta2.prov A {}", ip(4)),
        rec("ta2.prov", tlsa(2, 1, 1, &ta_nh.inter.cert)),
        "cnexp MX 10 alias-exp".into(),
        "alias-exp CNAME smtp.cnexp".into(),
        format!("smtp.cnexp A {}", ip(5)),
        rec("smtp.cnexp", tlsa(2, 1, 1, &ta_cn.inter.cert)),
        "cnorig MX 10 alias-orig".into(),
        "alias-orig CNAME smtp.cnorig".into(),
        format!("smtp.cnorig A {}", ip(6)),
        rec("alias-orig", tlsa(3, 1, 1, &orig.cert)),
        format!("smtp.hop A {}", ip(7)),
        rec("smtp.hop", tlsa(3, 1, 1, &hop.cert)),
        "ti MX 10 smtp.ti".into(),
        format!("smtp.ti A {}", ip(8)),
        "_25._tcp.smtp.ti CNAME _25._tcp.mx.insecure.example.".into(),
    ];
    let hosted = [
        "hosted MX 10 good.prov.secure.example.",
        "hostedbad MX 10 bad.prov.secure.example.",
        "hostedtwo MX 10 bad.prov.secure.example.",
        "hostedtwo MX 20 good.prov.secure.example.",
        "hostedonly MX 10 good.prov.secure.example.",
        "hostedta MX 10 ta.prov.secure.example.",
    ];
    let mut b = DnsEnv::builder();
    for line in &secure {
        b = b.record(Zone::Secure, line);
    }
    for line in hosted {
        b = b.record(Zone::Insecure, line);
    }
    let Some(env) = b.start() else { return };

    let serve = |n: u8, chain: &[rustls_pki_types::CertificateDer<'static>], key| {
        Mta::start(&python, &ip(n), Some((chain, key)))
    };
    let m_good = serve(1, std::slice::from_ref(&good.cert), &good.key);
    let m_bad = serve(2, std::slice::from_ref(&other.cert), &other.key);
    let m_ta = serve(3, &ta_hosted.chain(), &ta_hosted.leaf.key);
    let m_nh = serve(4, &ta_nh.chain(), &ta_nh.leaf.key);
    let m_cnexp = serve(5, &ta_cn.chain(), &ta_cn.leaf.key);
    let m_cnorig = serve(6, std::slice::from_ref(&orig.cert), &orig.key);
    let m_hop = serve(7, std::slice::from_ref(&hop.cert), &hop.key);
    let m_ti = serve(8, std::slice::from_ref(&other.cert), &other.key);

    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
         [queue]\npath = {:?}\nretry = [\"1h\"]\n[http]\naddress = \"127.0.0.1:0\"\n\
         [delivery]\nconnect_timeout = \"5s\"\n\
         [[delivery.route]]\ndomain = \"hostedonly.insecure.example\"\ntls = \"dane-only\"\n\
         [[delivery.route]]\ndomain = \"routed.test\"\nnext_hop = \"smtp.hop.secure.example:25\"\n",
        dir.path().join("queue").display()
    );
    let mut cfg = config::parse(&text).unwrap().config;
    cfg.dns = env.dns_config(mode);
    let running = danerelay::start(cfg, CancellationToken::new())
        .await
        .unwrap();
    let q = running.queue.clone();
    let sender = "alice@relay.test";
    let id = |domain: &str| danerelay::testing::enqueue(&q, sender, &[&format!("user@{domain}")]);
    let ins = |name: &str| format!("{name}.insecure.example");
    let (i_hosted, i_bad, i_two) = (
        id(&ins("hosted")),
        id(&ins("hostedbad")),
        id(&ins("hostedtwo")),
    );
    let (i_only, i_ta, i_nh) = (id(&ins("hostedonly")), id(&ins("hostedta")), id(&s("nh")));
    let (i_cnexp, i_cnorig) = (id(&s("cnexp")), id(&s("cnorig")));
    let (i_routed, i_ti) = (id("routed.test"), id(&s("ti")));

    for (case, qid) in [
        ("hosted, matching TLSA", i_hosted),
        ("hosted, second MX after a mismatch", i_two),
        ("hosted under dane-only", i_only),
        ("secure MX, DANE-TA leaf names the next-hop domain", i_nh),
        ("CNAME'd MX, TLSA at the expanded name", i_cnexp),
        ("CNAME'd MX, TLSA at the original name", i_cnorig),
        ("route next_hop by name", i_routed),
        ("secure host, insecure TLSA RRset", i_ti),
    ] {
        assert_eq!(
            settled(&q, qid).await,
            None,
            "{mode:?}: {case}: not delivered"
        );
    }
    let got = m_good.wait_for(3).await;
    assert_eq!(got.len(), 3, "{mode:?}");
    assert!(got.iter().all(|g| g.tls), "{mode:?}");
    let mut rcpts: Vec<String> = got.iter().flat_map(|g| g.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "user@hosted.insecure.example",
            "user@hostedonly.insecure.example",
            "user@hostedtwo.insecure.example"
        ],
        "{mode:?}"
    );
    for (case, mta, rcpt) in [
        ("next-hop reference id", &m_nh, s("nh")),
        ("TLSA at the expanded name", &m_cnexp, s("cnexp")),
        ("TLSA at the original name", &m_cnorig, s("cnorig")),
        ("next_hop route", &m_hop, "routed.test".to_string()),
        ("insecure TLSA ignored", &m_ti, s("ti")),
    ] {
        let got = mta.wait_for(1).await;
        assert_eq!(got.len(), 1, "{mode:?}: {case}");
        assert!(got[0].tls, "{mode:?}: {case}: TLS");
        assert_eq!(got[0].rcpts, [format!("user@{rcpt}")], "{mode:?}: {case}");
    }
    for (case, qid, mta) in [
        ("hosted, TLSA mismatch", i_bad, &m_bad),
        (
            "hosted, DANE-TA leaf names only the recipient domain",
            i_ta,
            &m_ta,
        ),
    ] {
        let (st, reply) = settled(&q, qid)
            .await
            .unwrap_or_else(|| panic!("{mode:?}: {case}: left the queue"));
        assert_eq!(st, RecipientState::Deferred, "{mode:?}: {case}: {reply}");
        assert!(reply.contains("4.7.5"), "{mode:?}: {case}: {reply}");
        assert!(mta.got().is_empty(), "{mode:?}: {case}: the host got mail");
    }
    assert!(
        m_bad.got().is_empty(),
        "the mismatching host never gets mail"
    );

    let metrics = running.metrics.render();
    for (series, n) in [
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"dane-trusted\"}",
            3,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"dane-verified\"}",
            4,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"delivered\",tls=\"tls-unauthenticated\"}",
            1,
        ),
        (
            "danerelay_delivery_attempts_total{outcome=\"deferred\",tls=\"none\"}",
            2,
        ),
        ("danerelay_dane_results_total{result=\"ok\"}", 7),
        ("danerelay_dane_results_total{result=\"mismatch\"}", 3),
    ] {
        assert!(
            metrics.contains(&format!("{series} {n}\n")),
            "{mode:?}: {series} != {n}:\n{metrics}"
        );
    }
    running.drain().await;

    // tls-check: the same verdicts without sending mail.
    let write = |name: &str, delivery: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
                 [queue]\npath = {:?}\n{}[delivery]\nconnect_timeout = \"5s\"\n{delivery}",
                dir.path().join(format!("{name}.q")).display(),
                dns_toml(&env, mode)
            ),
        )
        .unwrap();
        path
    };
    let default = write("default.toml", "");
    let (code, v) = tls_check(&default, &ins("hosted"));
    assert_eq!(code, 0, "{mode:?}: {v}");
    let h = &v["hosts"][0];
    assert_eq!(h["mx_dnssec"], "insecure", "{v}");
    assert_eq!(h["address_dnssec"], "secure", "{v}");
    assert_eq!(h["verdict"], "dane-trusted", "{v}");
    assert_eq!(h["dane_match"], "3 1 1, depth 0", "{v}");
    let (code, v) = tls_check(&default, &ins("hostedbad"));
    assert_eq!(code, 1, "{mode:?}: {v}");
    assert!(
        v["hosts"][0]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("defer: "),
        "{v}"
    );
    let (code, v) = tls_check(&default, &s("nh"));
    assert_eq!(
        (code, &v["hosts"][0]["verdict"]),
        (0, &"dane-verified".into())
    );

    let may = write("may.toml", "dane_insecure_mx = \"may\"\n");
    let (code, v) = tls_check(&may, &ins("hostedbad"));
    assert_eq!(code, 0, "{mode:?}: {v}");
    assert_eq!(v["hosts"][0]["verdict"], "tls-unauthenticated", "{v}");
    assert_eq!(v["hosts"][0]["tlsa_lookup"], "not looked up", "{v}");
    let may_only = write(
        "may-only.toml",
        "tls = \"dane-only\"\ndane_insecure_mx = \"may\"\n",
    );
    let (code, v) = tls_check(&may_only, &ins("hosted"));
    assert_eq!(code, 1, "{mode:?}: {v}");
    assert_eq!(v["level"], "dane-only", "{v}");
    assert_eq!(
        v["hosts"][0]["verdict"], "defer: MX RRset is not DNSSEC-signed (dane-only)",
        "{v}"
    );
    let only = write("only.toml", "tls = \"dane-only\"\n");
    let (code, v) = tls_check(&only, &ins("hosted"));
    assert_eq!(
        (code, &v["hosts"][0]["verdict"]),
        (0, &"dane-trusted".into())
    );
}
