//! `danerelay check-config` on bad `[[dkim]]` keys: each is an error naming
//! its key path and file (exit 64); a 1024-bit RSA key is a warning only.

use std::path::Path;

use crate::cli::danerelay;

fn write_key(path: &Path, pem: &str, mode: u32) {
    std::fs::write(path, pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn rsa_pem(bits: usize) -> String {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

fn check(dir: &Path, keys: &[(&str, &Path)]) -> (i32, String) {
    let mut text = format!(
        "[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n[queue]\npath = {:?}\n",
        dir.join("q").display().to_string()
    );
    for (i, (domain, path)) in keys.iter().enumerate() {
        text.push_str(&format!(
            "[[dkim]]\ndomain = \"{domain}\"\nselector = \"s{i}\"\nprivate_key = {:?}\n",
            path.display().to_string()
        ));
    }
    let config = dir.join("relay.toml");
    std::fs::write(&config, text).unwrap();
    let out = danerelay()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn bad_keys_are_errors_with_their_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A directory where the key should be: exists, cannot be read as a file
    // (the tests may run as root, which reads any mode).
    let unreadable = d.join("unreadable.pem");
    std::fs::create_dir(&unreadable).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o700)).unwrap();
    // An ECDSA key (rcgen's default), PKCS#8 like the good ones.
    let ec = d.join("ec.pem");
    write_key(
        &ec,
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
        0o600,
    );
    let open = d.join("open.pem");
    write_key(&open, &rsa_pem(2048), 0o644);
    let small = d.join("small.pem");
    write_key(&small, &rsa_pem(512), 0o600);
    let (code, out) = check(
        d,
        &[
            ("a.example", &unreadable),
            ("b.example", &ec),
            ("c.example", &open),
            ("d.example", &small),
        ],
    );
    assert_eq!(code, 64, "{out}");
    for (i, file, what) in [
        (0, &unreadable, "cannot read"),
        (1, &ec, "EC (ECDSA) key, which cannot sign DKIM"),
        (2, &open, "readable or writable by other users (mode 0644)"),
        (3, &small, "RSA key of 512 bits"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("dkim[{i}].private_key: ")))
            .unwrap_or_else(|| panic!("no error for dkim[{i}]:\n{out}"));
        assert!(line.contains(&file.display().to_string()), "{line}");
        assert!(line.contains(what), "{line}");
    }
    assert!(out.contains("4 error(s)"), "{out}");
}

#[test]
fn a_1024_bit_key_and_a_key_not_mounted_yet_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let legacy = d.join("legacy.pem");
    write_key(&legacy, &rsa_pem(1024), 0o440);
    let later = d.join("later.pem");
    let (code, out) = check(d, &[("a.example", &legacy), ("b.example", &later)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: dkim[0].private_key: ") && out.contains("RSA key of 1024 bits"),
        "{out}"
    );
    assert!(
        out.contains("warning: dkim[1].private_key: ") && out.contains("does not exist"),
        "{out}"
    );
}
