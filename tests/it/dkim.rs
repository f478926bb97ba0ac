//! DKIM (issue #19) checked by an independent verifier: dkimpy (with PyNaCl
//! for Ed25519), through its Python API with a `dnsfunc` that answers the
//! TXT records `danerelay dkim keygen` printed — not the library that signed,
//! and not the system resolver.
//!
//! - `delivery.rs`: submitted with smtplib, signed at acceptance, delivered by
//!   the relay to aiosmtpd, verified as aiosmtpd stored it.
//! - `config.rs`: bad keys are `check-config` errors with their key path.
//! - `reload.rs`: a key that vanishes or changes at run time.

mod config;
mod delivery;
mod reload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use crate::cli::danerelay;

/// A key made by `danerelay dkim keygen`, and the record it printed.
#[derive(Debug, Clone)]
pub struct Key {
    pub path: PathBuf,
    /// `selector._domainkey.domain`
    pub name: String,
    /// The TXT strings, concatenated.
    pub record: String,
}

/// Runs `danerelay dkim keygen` and parses the zone-file line it prints.
pub fn keygen(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> Key {
    let path = dir.join(format!("{selector}.{domain}.pem"));
    let out = danerelay()
        .args(["dkim", "keygen", "--domain", domain, "--selector", selector])
        .args(["--algorithm", algorithm, "--out"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, rest) = stdout.trim().split_once(" IN TXT ").unwrap();
    assert_eq!(name, format!("{selector}._domainkey.{domain}."));
    let strings: Vec<&str> = rest
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    assert!(
        strings.iter().all(|s| s.len() <= 255),
        "TXT strings over 255 octets: {rest}"
    );
    Key {
        path,
        name: name.trim_end_matches('.').to_string(),
        record: strings.concat(),
    }
}

/// An RSA-1024 key (RFC 8301's minimum, which ring cannot sign with), as
/// PKCS#1 PEM with mode 0600, and its record.
pub fn legacy_rsa_1024(dir: &Path, domain: &str, selector: &str) -> Key {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let path = dir.join(format!("{selector}.{domain}.pem"));
    let pem = key.to_pkcs1_pem(LineEnding::LF).unwrap();
    danerelay::dkim::keygen::write_key_file(&path, &pem).unwrap();
    let spki = rsa::RsaPublicKey::from(&key).to_public_key_der().unwrap();
    Key {
        path,
        name: format!("{selector}._domainkey.{domain}"),
        record: format!(
            "v=DKIM1; k=rsa; p={}",
            base64::engine::general_purpose::STANDARD.encode(spki.as_bytes())
        ),
    }
}

/// One signature as dkimpy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub d: String,
    pub s: String,
    pub a: String,
    pub error: String,
}

const VERIFY: &str = r#"
import base64, json, sys
import dkim
req = json.load(sys.stdin)
records = {k.lower().rstrip("."): v.encode() for k, v in req["records"].items()}

def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))

out = []
for m in req["messages"]:
    msg = base64.b64decode(m)
    headers, _ = dkim.rfc822_parse(msg)
    n = sum(1 for k, _ in headers if k.lower() == b"dkim-signature")
    sigs = []
    for i in range(n):
        d = dkim.DKIM(msg, minkey=1024)
        err = ""
        try:
            ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
        except Exception as e:
            ok, err = False, repr(e)
        f = d.signature_fields or {}
        g = lambda k: f.get(k, b"").decode()
        sigs.append({"ok": ok, "d": g(b"d"), "s": g(b"s"), "a": g(b"a"), "error": err})
    out.append(sigs)
print(json.dumps(out))
"#;

/// Verifies each message with dkimpy: one list of verdicts per message (one
/// per `DKIM-Signature:` field, in order).
pub fn dkimpy_verify(python: &Path, keys: &[Key], messages: &[Vec<u8>]) -> Vec<Vec<Verdict>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let records: BTreeMap<&str, &str> = keys
        .iter()
        .map(|k| (k.name.as_str(), k.record.as_str()))
        .collect();
    let req = serde_json::json!({
        "records": records,
        "messages": messages.iter().map(|m| b64.encode(m)).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .args(["-c", VERIFY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &req).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|sigs| {
            sigs.as_array()
                .unwrap()
                .iter()
                .map(|s| Verdict {
                    ok: s["ok"].as_bool().unwrap(),
                    d: s["d"].as_str().unwrap().into(),
                    s: s["s"].as_str().unwrap().into(),
                    a: s["a"].as_str().unwrap().into(),
                    error: s["error"].as_str().unwrap().into(),
                })
                .collect()
        })
        .collect()
}
