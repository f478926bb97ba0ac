//! Key choice (most specific domain, `subdomains`) and what a signature covers.

use std::path::Path;

use super::*;

fn cfg(domain: &str, selector: &str, subdomains: bool) -> KeyConfig {
    KeyConfig {
        domain: domain.into(),
        selector: selector.into(),
        private_key: format!("/k/{domain}.{selector}.pem").into(),
        subdomains,
    }
}

#[test]
fn the_most_specific_domain_signs() {
    let keys = [
        cfg("example.com", "rsa", true),
        cfg("example.com", "ed", false),
        cfg("mail.example.com", "m", false),
        cfg("example.org", "o", false),
    ];
    assert_eq!(
        matching(&keys, "example.com"),
        vec![0, 1],
        "both keys: two signatures"
    );
    assert_eq!(matching(&keys, "EXAMPLE.com."), vec![0, 1]);
    assert_eq!(
        matching(&keys, "mail.example.com"),
        vec![2],
        "exact beats parent"
    );
    assert_eq!(
        matching(&keys, "a.mail.example.com"),
        vec![0],
        "subdomains only"
    );
    assert_eq!(matching(&keys, "shop.example.com"), vec![0]);
    assert_eq!(
        matching(&keys, "sub.example.org"),
        Vec::<usize>::new(),
        "subdomains = false"
    );
    assert_eq!(
        matching(&keys, "badexample.com"),
        Vec::<usize>::new(),
        "a suffix is not a parent"
    );
    assert_eq!(matching(&keys, "example.net"), Vec::<usize>::new());
}

fn key_file(dir: &Path, name: &str, alg: crate::dkim::keygen::Algorithm) -> std::path::PathBuf {
    let key = crate::dkim::keygen::generate(alg).unwrap();
    let p = dir.join(name);
    crate::dkim::keygen::write_key_file(&p, &key.pem).unwrap();
    p
}

fn signer(dir: &Path) -> (Signer, Metrics) {
    use crate::dkim::keygen::Algorithm;
    let mut ed = cfg("example.com", "ed", false);
    ed.private_key = key_file(dir, "ed.pem", Algorithm::Ed25519);
    let mut rsa = cfg("example.com", "rsa", true);
    rsa.private_key = key_file(dir, "rsa.pem", Algorithm::Rsa2048);
    let metrics = Metrics::new();
    (Signer::load(&[rsa, ed], metrics.clone()).unwrap(), metrics)
}

const MSG: &[u8] = b"Received: from x\r\nFrom: A <a@example.com>\r\nTo: b@example.net\r\nSubject: hi\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\n\r\nbody\r\n";

#[test]
fn signs_with_every_key_of_the_domain_oversigning_from_to_subject_date() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, metrics) = signer(dir.path());
    let out = String::from_utf8(signer.sign(MSG).unwrap()).unwrap();
    assert_eq!(out.matches("DKIM-Signature: ").count(), 2, "{out}");
    assert!(
        out.contains("a=rsa-sha256; s=rsa; d=example.com; c=relaxed/relaxed;"),
        "{out}"
    );
    assert!(
        out.contains("a=ed25519-sha256; s=ed; d=example.com; c=relaxed/relaxed;"),
        "{out}"
    );
    let unfolded = out.replace("\r\n\t", " ");
    assert!(
        unfolded.contains("h=Date:Subject:To:From:From:To:Subject:Date;"),
        "{unfolded}"
    );
    assert!(
        !unfolded.contains("Received"),
        "trace fields are not signed"
    );
    assert!(unfolded.contains(" t="), "{unfolded}");
    assert!(!unfolded.contains(" l="), "{unfolded}");
    assert!(out.ends_with(";\r\n"));
    let text = metrics.render();
    for alg in ["rsa-sha256", "ed25519-sha256"] {
        assert!(
            text.contains(&format!(
                "danerelay_dkim_signatures_total{{algorithm=\"{alg}\",result=\"signed\"}} 1"
            )),
            "{text}"
        );
    }
}

#[test]
fn plans_follow_the_from_field() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = signer(dir.path());
    assert_eq!(
        signer.plan(b"From: a@shop.example.com\r\n"),
        Plan::Sign {
            domain: "shop.example.com".into(),
            keys: vec![0]
        }
    );
    assert_eq!(
        signer.plan(b"From: a@example.org\r\n"),
        Plan::NoKey {
            domain: "example.org".into()
        }
    );
    assert_eq!(
        signer.plan(b"From: a@example.com\r\nFrom: b@example.com\r\n"),
        Plan::Unsigned(FromProblem::SeveralFields(2))
    );
    assert!(signer
        .sign(b"From: a@example.org\r\n\r\nx\r\n")
        .unwrap()
        .is_empty());
    let off = Signer::disabled(Metrics::new());
    assert_eq!(off.plan(MSG), Plan::Off);
    assert!(off.sign(MSG).unwrap().is_empty());
}

#[test]
fn a_changed_key_file_reloads_and_a_broken_one_refuses_to_sign() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, metrics) = signer(dir.path());
    assert_eq!(signer.reload_if_changed(), 0, "nothing changed");
    let ed = dir.path().join("ed.pem");
    // The file vanishes: its key stops signing (451), the others go on.
    std::fs::remove_file(&ed).unwrap();
    assert_eq!(
        signer.reload_if_changed(),
        0,
        "a vanished key does not load"
    );
    let err = signer.sign(MSG).unwrap_err();
    assert!(matches!(err, SignError::KeyUnavailable { .. }), "{err}");
    assert!(
        err.to_string().contains("ed._domainkey.example.com"),
        "{err}"
    );
    assert!(metrics.render().contains(
        "danerelay_dkim_signatures_total{algorithm=\"ed25519-sha256\",result=\"failed\"} 1"
    ));
    // Mail from domains whose keys are fine still signs.
    assert_eq!(
        String::from_utf8(signer.sign(b"From: a@x.example.com\r\n\r\n").unwrap())
            .unwrap()
            .matches("DKIM-Signature")
            .count(),
        1
    );
    key_file(
        dir.path(),
        "ed.pem",
        crate::dkim::keygen::Algorithm::Ed25519,
    );
    assert_eq!(signer.reload_if_changed(), 1);
    assert_eq!(
        String::from_utf8(signer.sign(MSG).unwrap())
            .unwrap()
            .matches("DKIM-Signature")
            .count(),
        2
    );
}
