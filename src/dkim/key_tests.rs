//! Key loading: every kind of bad key file gets an error naming the file.

use std::path::{Path, PathBuf};

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::*;

fn rsa_pem(bits: usize, pkcs1: bool) -> String {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
    if pkcs1 {
        key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string()
    } else {
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    p
}

fn ed25519_pem() -> String {
    crate::dkim::keygen::generate(crate::dkim::keygen::Algorithm::Ed25519)
        .unwrap()
        .pem
}

#[test]
fn rsa_sizes_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let k = load(&write(dir.path(), "a.pem", &rsa_pem(2048, false), 0o600)).unwrap();
    assert_eq!(
        k.info,
        KeyInfo {
            algorithm: DkimAlgorithm::RsaSha256,
            bits: 2048
        }
    );
    assert_eq!(k.info.warning(), None);
    // PKCS#1 ("BEGIN RSA PRIVATE KEY") as older tools write it.
    let k = load(&write(dir.path(), "b.pem", &rsa_pem(2048, true), 0o600)).unwrap();
    assert_eq!(k.info.bits, 2048);
    // 1024: allowed (RFC 8301), signed by the rsa crate, warned about.
    let k = load(&write(dir.path(), "c.pem", &rsa_pem(1024, true), 0o600)).unwrap();
    assert_eq!(k.info.bits, 1024);
    assert!(k.info.warning().unwrap().contains("1024 bits"));
    // 512: refused, with the path.
    let p = write(dir.path(), "d.pem", &rsa_pem(512, false), 0o600);
    let e = load(&p).unwrap_err();
    assert!(matches!(e, KeyError::RsaTooSmall { bits: 512, .. }), "{e}");
    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
}

#[test]
fn ed25519_from_ring_and_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let k = load(&write(dir.path(), "e.pem", &ed25519_pem(), 0o600)).unwrap();
    assert_eq!(k.info.algorithm, DkimAlgorithm::Ed25519Sha256);
    // `openssl genpkey -algorithm ed25519`: PKCS#8 v1, no public key inside.
    let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFTZ0WwH8mOzZ6H6GufEy5dXOdIOuByQxvcjO+lS1e1m\n-----END PRIVATE KEY-----\n";
    let k = load(&write(dir.path(), "o.pem", openssl, 0o440)).unwrap();
    assert_eq!(k.info.bits, 256);
}

#[test]
fn bad_files_name_their_problem_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = load(&d.join("nope.pem")).unwrap_err();
    assert!(missing.is_missing());
    let e = load(&write(d, "open.pem", &ed25519_pem(), 0o644)).unwrap_err();
    assert!(
        matches!(e, KeyError::Permissions { mode: 0o644, .. }),
        "{e}"
    );
    let e = load(&write(d, "w.pem", &ed25519_pem(), 0o602)).unwrap_err();
    assert!(matches!(e, KeyError::Permissions { .. }), "{e}");
    // Group-readable is fine: Kubernetes mounts secrets 0440.
    assert!(load(&write(d, "g.pem", &ed25519_pem(), 0o440)).is_ok());
    let e = load(&write(d, "t.pem", "not a key\n", 0o600)).unwrap_err();
    assert!(matches!(e, KeyError::NotPem { .. }), "{e}");
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB6a0Yy0JkEUlNFnMy7WlTgbzCxsj0UzzKuUAi9bRFtpoAoGCCqGSM49\nAwEHoUQDQgAEVtGdK2Q2gBbD6QZqjTfuz0AUH1nWPaUVAt4VY3gH3zNpaK7Pb5wL\nJQ0Z7bSkH8Vh4mmPBY5TPJg3OdK7iN8Jww==\n-----END EC PRIVATE KEY-----\n";
    let e = load(&write(d, "ec.pem", ec, 0o600)).unwrap_err();
    assert!(matches!(e, KeyError::WrongType { .. }), "{e}");
    assert!(e.to_string().contains("EC (ECDSA)"), "{e}");
    let x25519 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIHDPfUqRbFfDcGfbRvgpCfJDb0wCFZ5N8kUusj3N+4xX\n-----END PRIVATE KEY-----\n";
    let e = load(&write(d, "x.pem", x25519, 0o600)).unwrap_err();
    assert!(e.to_string().contains("X25519"), "{e}");
    #[cfg(unix)]
    {
        // Unreadable (as a non-root user would see it): a read error, not "missing".
        let p = write(d, "dir.pem", "", 0o600);
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, KeyError::Read { .. }), "{e}");
    }
}
