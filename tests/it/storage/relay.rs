//! A relay child process on a given queue directory, and the little SMTP
//! client the storage tests drive it with.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{danerelay, free_port, http_get, wait_for_port, Server};

pub struct Relay {
    pub server: Server,
    pub http: u16,
}

/// The relay's config: queue in `queue`, mail for example.net goes to
/// `next_hop` without DNS; `queue_extra` is appended to `[queue]`,
/// `delivery_extra` to `[delivery]`.
pub fn config(
    dir: &Path,
    queue: &Path,
    next_hop: &str,
    queue_extra: &str,
    delivery_extra: &str,
) -> (PathBuf, u16, u16) {
    let (smtp, http) = (free_port(), free_port());
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "hostname = \"relay.test\"\nshutdown_grace = \"2s\"\n\
             [[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"none\"\n\
             [auth]\ntrusted_networks = [\"127.0.0.0/8\"]\n\
             [queue]\npath = {queue:?}\n{queue_extra}\n\
             [http]\naddress = \"127.0.0.1:{http}\"\n\
             [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\nnameservers = [\"127.0.0.1:9\"]\n\
             [delivery]\ntls = \"none\"\n{delivery_extra}\n\
             [[delivery.route]]\ndomain = \"example.net\"\nnext_hop = \"{next_hop}\"\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    (file, smtp, http)
}

/// Starts `danerelay serve` on `file`; stderr goes to `log`.
pub fn start(file: &Path, smtp: u16, http: u16, log: &Path) -> Relay {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let server = Server(
        danerelay()
            .args(["serve", "--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for_port(http);
    wait_for_port(smtp);
    Relay { server, http }
}

impl Relay {
    pub fn kill9(mut self) {
        let _ = self.server.0.kill();
        let _ = self.server.0.wait();
    }

    pub fn readyz(&self) -> (u16, String) {
        http_get(self.http, "/readyz")
    }

    /// The value of an unlabelled metric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http_get(self.http, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Polls `/readyz` until it answers `status`; returns the body.
    pub fn wait_readyz(&self, status: u16, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let (s, body) = self.readyz();
            if s == status {
                return body;
            }
            assert!(
                start.elapsed() < within,
                "/readyz still {s} {body:?} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The reply that ended a submission attempt: the `250` with its queue id,
/// or the first refusal (MAIL, RCPT or end of DATA); `Err` when the
/// connection broke.
pub fn submit(port: u16, rcpt: &str, message: &[u8]) -> Result<String, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut w = s;
    let mut reply = || -> Result<String, String> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_string());
            }
        }
    };
    reply()?;
    let steps = [
        ("EHLO client.test".to_string(), "250"),
        ("MAIL FROM:<app@example.org>".to_string(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA".to_string(), "354"),
    ];
    for (line, want) in steps {
        w.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let got = reply()?;
        if !got.starts_with(want) {
            let _ = w.write_all(b"QUIT\r\n");
            return Ok(got);
        }
    }
    w.write_all(message).map_err(|e| e.to_string())?;
    w.write_all(b".\r\n").map_err(|e| e.to_string())?;
    let got = reply()?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(got)
}

/// The queue id of a `250 2.0.0 Ok: queued as ID`.
pub fn queued_id(reply: &str) -> Option<String> {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .map(|id| id.trim().to_string())
}

/// A message whose body lines carry `tag` and some filler, `size` bytes
/// long, CRLF throughout, no line starting with a dot.
pub fn message(tag: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <app@example.org>\r\nTo: <user@example.net>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@example.org>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0u64;
    while m.len() < size {
        let line = format!("{tag} line {i:06} {}\r\n", "x".repeat(60));
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m
}

/// Reads a queued message's stored bytes through the queue crate (relay
/// stopped); `None` when not queued.
pub fn stored(queue: &danerelay_queue::Queue, id: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let id: danerelay_queue::QueueId = id.parse().ok()?;
    let mut out = Vec::new();
    queue.body(id).ok()?.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Mounts a tmpfs of `size` on `dir`; unmounted (lazily) on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {dir:?}");
        Tmpfs(dir.to_path_buf())
    }

    pub fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
