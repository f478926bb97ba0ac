//! `danerelay dane verify` end to end: the real binary, PEM files on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustls_pki_types::CertificateDer;

use super::{leaf, pem, tlsa, Pki, MX};

fn write_chain(dir: &Path, chain: &[CertificateDer<'_>]) -> PathBuf {
    let path = dir.join("chain.pem");
    std::fs::write(&path, pem(chain)).unwrap();
    path
}

/// Runs the binary; returns (exit code, stdout).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_danerelay"))
        .args(["dane", "verify"])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().expect("exited normally");
    (code, String::from_utf8(out.stdout).unwrap())
}

fn verify(chain: &Path, name: &str, records: &[String], extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--name", name, "--chain", chain.to_str().unwrap()];
    for r in records {
        args.extend(["--tlsa", r.as_str()]);
    }
    args.extend(extra);
    run(&args)
}

fn first_word(stdout: &str) -> &str {
    stdout.split_whitespace().next().unwrap_or("")
}

#[test]
fn verified_failed_and_no_usable_tlsa_with_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let chain = write_chain(dir.path(), &pki.full_chain());

    let (code, out) = verify(
        &chain,
        MX,
        &[tlsa(2, 0, 1, &pki.root.cert).to_string()],
        &[],
    );
    assert_eq!((code, first_word(&out)), (0, "verified"), "{out}");
    assert!(out.contains("2 0 1, depth 2"), "{out}");

    let (code, out) = verify(
        &chain,
        MX,
        &[tlsa(3, 1, 1, &pki.leaf.cert).to_string()],
        &[],
    );
    assert_eq!((code, first_word(&out)), (0, "verified"), "{out}");
    assert!(out.contains("3 1 1, depth 0"), "{out}");

    let mut wrong = tlsa(3, 1, 1, &pki.leaf.cert);
    wrong.data[0] ^= 1;
    let (code, out) = verify(&chain, MX, &[wrong.to_string()], &[]);
    assert_eq!((code, first_word(&out)), (1, "failed"), "{out}");

    // The TA validates but the name is wrong: failed (RFC 7672 §3.2.3).
    let (code, out) = verify(
        &chain,
        "mx.other.example",
        &[tlsa(2, 0, 1, &pki.root.cert).to_string()],
        &[],
    );
    assert_eq!((code, first_word(&out)), (1, "failed"), "{out}");
    // ...unless the original MX name is given as a reference name.
    let (code, out) = verify(
        &chain,
        "mx.other.example",
        &[tlsa(2, 0, 1, &pki.root.cert).to_string()],
        &["--reference-name", MX],
    );
    assert_eq!((code, first_word(&out)), (0, "verified"), "{out}");
    // A leading dot accepts any strict subdomain (Postfix's dot-nexthop),
    // but not the parent itself.
    let ta = [tlsa(2, 0, 1, &pki.root.cert).to_string()];
    let (code, out) = verify(
        &chain,
        "mx.other.example",
        &ta,
        &["--reference-name", ".example.net"],
    );
    assert_eq!((code, first_word(&out)), (0, "verified"), "{out}");
    let (code, out) = verify(
        &chain,
        "mx.other.example",
        &ta,
        &["--reference-name", ".mx.example.net"],
    );
    assert_eq!((code, first_word(&out)), (1, "failed"), "{out}");
    let (code, out) = verify(
        &chain,
        "mx.other.example",
        &ta,
        &["--reference-name", ".net.example"],
    );
    assert_eq!((code, first_word(&out)), (1, "failed"), "{out}");

    let pkix = [
        tlsa(0, 0, 1, &pki.root.cert).to_string(),
        tlsa(1, 1, 1, &pki.leaf.cert).to_string(),
    ];
    let (code, out) = verify(&chain, MX, &pkix, &[]);
    assert_eq!((code, first_word(&out)), (3, "no-usable-tlsa"), "{out}");
    assert!(
        out.contains("RFC 7672 §3.1.3"),
        "explains the ignored records: {out}"
    );
}

#[test]
fn dns_only_trust_anchor_and_mixed_records() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let chain = write_chain(dir.path(), &pki.chain());
    let mut bad = tlsa(3, 1, 2, &pki.leaf.cert);
    bad.data[1] ^= 1;
    let truncated = "3 1 1 abcdef".to_string();
    let records = [
        bad.to_string(),
        truncated,
        tlsa(2, 1, 0, &pki.root.cert).to_string(),
    ];
    let (code, out) = verify(&chain, MX, &records, &[]);
    assert_eq!((code, first_word(&out)), (0, "verified"), "{out}");
    assert!(out.contains("2 1 0, depth 2"), "{out}");
}

#[test]
fn json_output() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let chain = write_chain(dir.path(), &pki.full_chain());
    let records = [
        tlsa(2, 1, 1, &pki.inter.cert).to_string(),
        "0 0 1 00".to_string(),
    ];
    let (code, out) = verify(&chain, MX, &records, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "verified");
    assert_eq!(v["match"]["usage"], 2);
    assert_eq!(v["match"]["selector"], 1);
    assert_eq!(v["match"]["matching"], 1);
    assert_eq!(v["match"]["depth"], 1);
    assert_eq!(v["records"][0]["usable"], true);
    assert_eq!(v["records"][1]["usable"], false);

    let (code, out) = verify(&chain, MX, &["1 1 1 00".to_string()], &["--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "no-usable-tlsa");
    assert!(v["match"].is_null());

    let ee = leaf(&[MX], None, false);
    let (code, out) = verify(
        &chain,
        MX,
        &[tlsa(3, 0, 1, &ee.cert).to_string()],
        &["--json"],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "failed");
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .contains("no usable TLSA record matches"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let chain = write_chain(dir.path(), &pki.chain());
    let good = tlsa(3, 1, 1, &pki.leaf.cert).to_string();
    let chain_arg = chain.to_str().unwrap();

    // Missing --tlsa, missing --name: clap usage errors.
    assert_eq!(run(&["--name", MX, "--chain", chain_arg]).0, 2);
    assert_eq!(run(&["--chain", chain_arg, "--tlsa", &good]).0, 2);
    // Malformed records are usage errors, not verdicts.
    for bad in ["3 1 1 xyz", "3 1", "300 1 1 00", "3 1 1 abc"] {
        let (code, out) = verify(&chain, MX, &[bad.to_string()], &[]);
        assert_eq!(code, 2, "{bad:?}: {out}");
    }
    // Unreadable or empty chain file.
    let missing = dir.path().join("missing.pem");
    assert_eq!(verify(&missing, MX, std::slice::from_ref(&good), &[]).0, 2);
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let (code, out) = verify(&empty, MX, &[good], &["--json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["error"].as_str().unwrap().contains("no CERTIFICATE"));
}
