//! New DKIM keys and the TXT record that publishes them (RFC 6376 §3.6.1,
//! RFC 8463 §4.2). Ed25519 comes from ring (PKCS#8); ring cannot generate
//! RSA keys, so RSA-2048 comes from the `rsa` crate. Both are written as
//! PKCS#8 PEM ("BEGIN PRIVATE KEY"), which [`super::key::load`] reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

/// `dkim keygen --algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    Rsa2048,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("generating the key: {0}")]
    Generate(String),
    #[error("{} already exists; not overwriting a private key (choose another --out, or remove it first)", path.display())]
    Exists { path: PathBuf },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A generated key: the private key PEM and the TXT record value.
pub struct NewKey {
    pub pem: String,
    /// `v=DKIM1; k=…; p=…`
    pub record: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PEM armour with 64-column lines (RFC 7468 §2).
fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Makes a key pair.
pub fn generate(algorithm: Algorithm) -> Result<NewKey, KeygenError> {
    let gen = |e: &dyn std::fmt::Display| KeygenError::Generate(e.to_string());
    match algorithm {
        Algorithm::Ed25519 => {
            use ring::signature::{Ed25519KeyPair, KeyPair};
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| gen(&e))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| gen(&e))?;
            Ok(NewKey {
                pem: pem("PRIVATE KEY", pkcs8.as_ref()),
                // RFC 8463 §4.2: the raw 32-octet public key.
                record: format!("v=DKIM1; k=ed25519; p={}", b64(pair.public_key().as_ref())),
            })
        }
        Algorithm::Rsa2048 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key =
                rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| gen(&e))?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen(&e))?;
            // RFC 6376 §3.6.1: p= is the SubjectPublicKeyInfo, base64.
            let spki = rsa::RsaPublicKey::from(&key)
                .to_public_key_der()
                .map_err(|e| gen(&e))?;
            Ok(NewKey {
                pem: pem.to_string(),
                record: format!("v=DKIM1; k=rsa; p={}", b64(spki.as_bytes())),
            })
        }
    }
}

/// Splits a TXT value into character-strings of at most 255 octets each
/// (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2: verifiers concatenate them).
pub fn txt_strings(value: &str) -> Vec<&str> {
    // The record value is ASCII, so any byte offset is a char boundary.
    value
        .as_bytes()
        .chunks(255)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect()
}

/// The zone-file line to publish: `S._domainkey.D. IN TXT "…" "…"`.
pub fn zone_line(selector: &str, domain: &str, record: &str) -> String {
    let strings: Vec<String> = txt_strings(record)
        .into_iter()
        .map(|s| format!("\"{s}\""))
        .collect();
    format!(
        "{selector}._domainkey.{}. IN TXT {}",
        domain.trim_end_matches('.'),
        strings.join(" ")
    )
}

/// Writes a private key with mode 0600, never over an existing file: the
/// key goes to a temporary file next to `path`, is synced, then hard-linked
/// into place (which fails if `path` exists), so `path` is either absent or
/// complete.
pub fn write_key_file(path: &Path, pem: &str) -> Result<(), KeygenError> {
    let werr = |source| KeygenError::Write {
        path: path.into(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        return Err(KeygenError::Exists { path: path.into() });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.as_deref().unwrap_or("dkim-key"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(KeygenError::Exists { path: path.into() })
        }
        Err(e) => Err(werr(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_at_most_255_octets_and_concatenate_back() {
        let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let parts = txt_strings(&long);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts[0].len(), 255);
        assert_eq!(parts.concat(), long);
        assert_eq!(
            txt_strings("v=DKIM1; k=ed25519; p=x"),
            vec!["v=DKIM1; k=ed25519; p=x"]
        );
        assert_eq!(txt_strings(&"x".repeat(255)).len(), 1);
        assert_eq!(txt_strings(&"x".repeat(256)).len(), 2);
        assert_eq!(
            zone_line("s1", "example.com.", "v=DKIM1; p=x"),
            "s1._domainkey.example.com. IN TXT \"v=DKIM1; p=x\""
        );
    }

    #[test]
    fn generated_keys_load_and_sign() {
        for (alg, k) in [(Algorithm::Ed25519, "ed25519"), (Algorithm::Rsa2048, "rsa")] {
            let new = generate(alg).unwrap();
            assert!(
                new.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{}",
                new.pem
            );
            assert!(new.record.starts_with(&format!("v=DKIM1; k={k}; p=")));
            let key = super::super::key::parse(Path::new("t.pem"), new.pem.as_bytes()).unwrap();
            assert_eq!(key.info.bits, if k == "rsa" { 2048 } else { 256 });
        }
    }

    #[test]
    fn key_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_key_file(&path, "one").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_key_file(&path, "two"),
            Err(KeygenError::Exists { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert!(matches!(
            write_key_file(&dir.path().join("no/such/dir.pem"), "x"),
            Err(KeygenError::Write { .. })
        ));
    }
}
