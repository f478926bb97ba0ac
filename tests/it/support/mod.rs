//! Shared test support: the real peers (unbound, knotd, Postfix, Python and
//! its modules, swaks with TLS) and the one rule for a peer that is missing
//! or cannot do what a test needs.
//!
//! A peer counts as present only when it can do the job: `swaks` that
//! speaks TLS, a `python3` that imports `aiosmtpd`. Each capability is
//! probed once per test binary. When one is missing the test fails under
//! `CI=true` (CI installs every peer, from `tests/peers/`), and otherwise
//! prints `SKIPPED: <test>: <what is missing>; <install line>` and returns,
//! so a newcomer without the peers can still run the rest.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

pub mod dnsenv;
pub mod strip_proxy;

/// The pinned Python modules, as `.ci/run` installs them.
const REQUIREMENTS: &str = include_str!("../../peers/requirements.txt");

/// Finds `tool` on PATH (or in /usr/sbin, /sbin, /usr/bin).
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = probe(&format!("tool {tool}"), || {
        find_on_path(tool).ok_or_else(|| format!("`{tool}` is not installed"))
    });
    match found {
        Ok(path) => Some(path),
        Err(why) => missing(&why, &apt_line(apt_package(tool))),
    }
}

/// A `python3` that can import every module in `modules` (stdlib modules
/// need not be listed).
pub fn require_python(modules: &[&str]) -> Option<PathBuf> {
    let python = require_tool("python3")?;
    for module in modules {
        let ok = probe(&format!("python module {module}"), || {
            let out = Command::new(&python)
                .args(["-c", &format!("import {module}")])
                .output()
                .map_err(|e| format!("python3 did not run: {e}"))?;
            if out.status.success() {
                Ok(python.clone())
            } else {
                Err(format!("`{}` cannot import {module}", python.display()))
            }
        });
        if let Err(why) = ok {
            return missing(&why, &pip_line(module));
        }
    }
    Some(python)
}

/// `swaks` able to speak STARTTLS and implicit TLS (it needs Net::SSLeay,
/// which Debian's swaks only recommends).
pub fn require_swaks_tls() -> Option<PathBuf> {
    let swaks = require_tool("swaks")?;
    let ok = probe("swaks tls", || {
        let out = Command::new(&swaks)
            .arg("--support")
            .output()
            .map_err(|e| format!("swaks did not run: {e}"))?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let tls = said.lines().find(|l| l.contains(" TLS "));
        if out.status.success() && tls.is_some_and(|l| l.ends_with("supported")) {
            Ok(swaks.clone())
        } else {
            Err(format!(
                "swaks has no TLS (`swaks --support`: {})",
                tls.unwrap_or("no TLS line").trim()
            ))
        }
    });
    match ok {
        Ok(path) => Some(path),
        Err(why) => missing(&why, &apt_line("swaks libnet-ssleay-perl")),
    }
}

/// A file a Debian package ships (e.g. `/usr/share/dns/root.ds`).
pub fn require_file(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).is_file() {
        return Some(PathBuf::from(path));
    }
    missing(&format!("{path} is missing"), &apt_line(package))
}

/// Whether this process may mount filesystems (tmpfs, FUSE): the storage
/// tests need root. Probed once by mounting a tiny tmpfs.
pub fn require_mounts() -> bool {
    let ok = probe("mounts", || {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount did not run: {e}"))?;
        if !mounted.status.success() {
            return Err("cannot mount filesystems (the storage tests need root)".into());
        }
        let _ = Command::new("umount").arg(dir.path()).status();
        Ok(PathBuf::from("/bin/mount"))
    });
    match ok {
        Ok(_) => true,
        Err(why) => missing::<()>(&why, "run the tests as root (CI does)").is_some(),
    }
}

/// The verdict for a missing peer: a failure under `CI=true`, a loud skip
/// otherwise.
fn missing<T>(why: &str, install: &str) -> Option<T> {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}; CI=true requires it (.ci/run installs it: {install})");
    }
    // Straight to the process's stderr, past libtest's capture, so the skip
    // shows in a plain `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {why}; install with: {install}"
    );
    None
}

/// Runs `check` once per key for the whole test binary.
fn probe(key: &str, check: impl FnOnce() -> Result<PathBuf, String>) -> Result<PathBuf, String> {
    static SEEN: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(known) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return known.clone();
    }
    let result = check();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string(), result.clone());
    result
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The Debian package that ships `tool`.
fn apt_package(tool: &str) -> &str {
    match tool {
        "knotd" => "knot",
        "ldns-keygen" | "ldns-signzone" => "ldnsutils",
        "unbound" | "unbound-checkconf" => "unbound",
        "ip" => "iproute2",
        "unshare" => "util-linux",
        "promtool" => "prometheus",
        "kubectl" => "kubernetes-client",
        "swaks" => "swaks libnet-ssleay-perl",
        other => other,
    }
}

fn apt_line(packages: &str) -> String {
    format!("apt-get install {packages} (or bash .ci/run)")
}

/// The pinned pip line for `module`, from `tests/peers/requirements.txt`.
fn pip_line(module: &str) -> String {
    // Where the import name is not the distribution's name.
    let dist = match module {
        "dkim" => "dkimpy".to_string(),
        "nacl" => "PyNaCl".to_string(),
        other => other.replace('_', "-"),
    };
    let pin = REQUIREMENTS
        .lines()
        .map(str::trim)
        .find(|l| {
            l.split("==")
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(&dist))
        })
        .unwrap_or(dist.as_str());
    format!("python3 -m pip install {pin} (into the python3 first on PATH)")
}

#[test]
fn install_lines_name_the_pinned_packages() {
    assert_eq!(
        pip_line("prometheus_client"),
        "python3 -m pip install prometheus-client==0.21.1 (into the python3 first on PATH)"
    );
    assert!(pip_line("aiosmtpd").contains("aiosmtpd==1.4.6"));
    assert!(
        pip_line("dkim").contains("dkimpy=="),
        "{}",
        pip_line("dkim")
    );
    assert!(
        pip_line("nacl").contains("PyNaCl=="),
        "{}",
        pip_line("nacl")
    );
    assert!(apt_line(apt_package("swaks")).contains("libnet-ssleay-perl"));
    assert!(apt_line(apt_package("knotd")).starts_with("apt-get install knot "));
}

/// One plain SMTP session: after the greeting, each `(command, expected
/// reply prefix)` in turn (the command without its CRLF; multi-line replies
/// read to their last line).
pub async fn smtp_dialogue(addr: std::net::SocketAddr, steps: &[(&str, &str)]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut reply = async || loop {
        let l = lines.next_line().await.unwrap().unwrap();
        if l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    };
    assert!(reply().await.starts_with("220"));
    for (cmd, want) in steps {
        w.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
        let got = reply().await;
        assert!(got.starts_with(want), "{cmd}: {got}");
    }
}
