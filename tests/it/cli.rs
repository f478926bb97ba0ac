//! The `danerelay` binary end to end: exit codes, messages, serve lifecycle.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn danerelay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_danerelay"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = danerelay().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/danerelay.toml");
    let (code, stdout, _) = run(&["check-config", "--config", example]);
    assert_eq!(code, 0);
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_config_prints_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[listener]]\naddress = \"0.0.0.0:99999\"\ntls = \"none\"\n\
         [queue]\nretry = []\n[delivery]\ntls = \"sometimes\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    for needle in [
        "listener[0].address: invalid socket address \"0.0.0.0:99999\"",
        "queue.retry: needs at least one interval",
        "delivery.tls: unknown variant `sometimes`",
        "3 error(s)",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn check_config_of_a_missing_file_exits_64() {
    let (code, _, stderr) = run(&["check-config", "--config", "/nonexistent/danerelay.toml"]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("cannot read /nonexistent/danerelay.toml"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["queue", "hold"]);
    assert_eq!(code, 2, "hold without ids is a usage error");
}

/// Kills the child on drop so a failing assertion leaves no server behind.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.0 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let smtp = free_port();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"none\"\n\
             [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:{http}\"\n\
             [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\nnameservers = [\"127.0.0.1:9\"]\n",
            dir.path().join("queue").display()
        ),
    )
    .unwrap();
    let mut server = Server(
        danerelay()
            .args(["serve", "--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(http);
    assert_eq!(http_get(http, "/healthz").0, 200);
    let (status, body) = http_get(http, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, metrics) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("danerelay_ready 1"), "{metrics}");
    sigterm(&server.0);
    assert_eq!(wait_exit(&mut server.0), 0);
}

/// The README's first command: no config, no files, loopback default. It
/// runs in a network namespace of its own with only loopback, because the
/// embedded default uses the system resolver (its DNSSEC probe would
/// otherwise query a real nameserver) and binds fixed ports.
#[test]
fn serve_runs_on_the_embedded_default() {
    let (Some(unshare), Some(_)) = (
        crate::support::require_tool("unshare"),
        crate::support::require_tool("ip"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
set -u
ip link set lo up
"$BIN" serve 2> log &
pid=$!
for _ in $(seq 1 400); do
    (exec 3<>/dev/tcp/127.0.0.1/9587) 2>/dev/null && break
    sleep 0.05
done
exec 3<>/dev/tcp/127.0.0.1/9587
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3 > healthz
exec 4<>/dev/tcp/127.0.0.1/2587
read -r greeting <&4
printf '%s\n' "$greeting" > greeting
exec 5<>/dev/tcp/127.0.0.1/2465 && echo open > implicit
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
echo "$code" > exit
"#;
    let status = Command::new(unshare)
        .args(["--net", "--", "bash", "-c", script])
        .env("BIN", env!("CARGO_BIN_EXE_danerelay"))
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let log = read("log");
    assert!(
        read("healthz").ends_with("\r\n\r\nok\n"),
        "{}\n{log}",
        read("healthz")
    );
    assert!(read("greeting").starts_with("220 "), "{log}");
    assert_eq!(read("implicit").trim(), "open", "{log}");
    assert_eq!(read("exit").trim(), "0", "{log}");
    assert!(log.contains("embedded development default"), "{log}");
    assert!(
        log.contains("self-signed certificate generated at start"),
        "{log}"
    );
    assert!(dir.path().join("danerelay-data/queue").is_dir());
}
