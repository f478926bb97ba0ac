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

/// sysexits.h EX_USAGE; clap's own default (2) stays only with
/// `dane verify`, whose 2 the README fixes (tests/it/dane/cli.rs).
#[test]
fn usage_errors_exit_64() {
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 64);
    let (code, _, _) = run(&["queue", "hold"]);
    assert_eq!(code, 64, "hold without ids is a usage error");
    let (code, _, _) = run(&["queue", "retry"]);
    assert_eq!(code, 64, "retry needs ids or --all");
    let (code, _, _) = run(&["--log-format", "yaml", "check-config"]);
    assert_eq!(code, 64);
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0, "help is not an error");
    assert!(stdout.contains("tls-check"), "{stdout}");
}

/// Runs with `stdin` as standard input.
fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = danerelay()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits before reading stdin; the
    // write then fails with EPIPE, which is not the test's concern.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn user_add_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let users = users.to_str().unwrap();
    let add = |email: &str, file: &str, password: &str| {
        run_with_stdin(&["user", "add", email, "--users", file], password)
    };
    let (code, err) = add("alice@example.org", users, "s3cret\n");
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(users)
        .unwrap()
        .contains("alice@example.org"));
    // EX_USAGE: the EMAIL argument is malformed.
    let (code, err) = add("not-an-address", users, "s3cret\n");
    assert_eq!(code, 64, "{err}");
    // EX_DATAERR: the password read from stdin is empty.
    let (code, err) = add("bob@example.org", users, "\n");
    assert_eq!(code, 65, "{err}");
    // EX_CANTCREAT: the users file cannot be written. procfs refuses new
    // files even to root, which a read-only directory would not.
    let (code, err) = add("bob@example.org", "/proc/danerelay-users.toml", "pw\n");
    assert_eq!(code, 73, "{err}");
    assert!(err.contains("writing users file"), "{err}");
    // EX_DATAERR: the existing users file is not a users file.
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "this is [not toml").unwrap();
    let (code, err) = add("bob@example.org", garbage.to_str().unwrap(), "pw\n");
    assert_eq!(code, 65, "{err}");
    // EX_NOINPUT: the users file exists but cannot be read (a directory).
    let (code, err) = add("bob@example.org", dir.path().to_str().unwrap(), "pw\n");
    assert_eq!(code, 66, "{err}");
}

#[test]
fn user_add_without_a_users_file_in_the_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n",
    )
    .unwrap();
    let (code, err) = run_with_stdin(
        &[
            "user",
            "add",
            "a@example.org",
            "--config",
            file.to_str().unwrap(),
        ],
        "pw\n",
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("auth.users_file"), "{err}");
}

/// Outside `check-config` (whose 64 the README fixes), a configuration that
/// cannot be read is EX_NOINPUT and one that is invalid is EX_CONFIG.
#[test]
fn other_commands_exit_66_for_a_missing_config_and_78_for_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[delivery]\ntls = \"sometimes\"\n").unwrap();
    let bad = bad.to_str().unwrap();
    let missing = "/nonexistent/danerelay.toml";
    for (args, config, want) in [
        (&["serve"][..], bad, 78),
        (&["serve"][..], missing, 66),
        (&["tls-check", "example.org"][..], bad, 78),
        (&["tls-check", "example.org"][..], missing, 66),
        (&["queue", "list"][..], bad, 78),
        (&["queue", "list"][..], missing, 66),
    ] {
        let mut full = args.to_vec();
        full.extend(["--config", config]);
        let (code, _, stderr) = run(&full);
        assert_eq!(code, want, "{full:?}: {stderr}");
    }
}

/// EX_UNAVAILABLE: nothing answers at the admin address.
#[test]
fn queue_against_a_closed_admin_port_exits_69() {
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    for args in [
        &["queue", "list"][..],
        &["queue", "show", "0000000000AB"],
        &["queue", "hold", "0000000000AB"],
        &["queue", "retry", "--all"],
    ] {
        let mut full = args.to_vec();
        full.extend(["--api", &api]);
        let (code, _, stderr) = run(&full);
        assert_eq!(code, 69, "{full:?}: {stderr}");
        assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    }
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

/// Waits until every port in `ports` accepts connections; false as soon as
/// `child` has exited instead (a port taken between [`free_port`] and the
/// relay's bind, by a parallel test's connection: the caller picks others).
pub fn wait_for_ports_or_exit(child: &mut Child, ports: &[u16]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    true
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

/// `danerelay serve` with a minimal config in `dir` (one plaintext listener,
/// DNSSEC off, an unreachable resolver): returns the server and its HTTP port.
pub fn serve_minimal(dir: &std::path::Path) -> (Server, u16) {
    let http = free_port();
    let smtp = free_port();
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "hostname = \"relay.test\"\n[[listener]]\naddress = \"127.0.0.1:{smtp}\"\ntls = \"none\"\n\
             [queue]\npath = {:?}\n[http]\naddress = \"127.0.0.1:{http}\"\n\
             [dns]\ndnssec = \"off\"\ndnssec_probe = \"\"\nnameservers = [\"127.0.0.1:9\"]\n",
            dir.join("queue").display()
        ),
    )
    .unwrap();
    let server = Server(
        danerelay()
            .args(["serve", "--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (server, http)
}

#[test]
fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, http) = serve_minimal(dir.path());
    wait_for_port(http);
    assert_eq!(http_get(http, "/healthz").0, 200);
    // The HTTP port opens before the listeners are bound: `starting` (503)
    // is a legitimate first answer, `ready` must follow by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = http_get(http, "/readyz");
        if status != 503 || !body.starts_with("starting") || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
# The HTTP port opens before the listeners are bound: 503 `starting` may
# come first, `ready` must follow by itself.
for _ in $(seq 1 400); do
    exec 3<>/dev/tcp/127.0.0.1/9587
    printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    cat <&3 > readyz
    grep -q '^starting' readyz || break
    sleep 0.05
done
exec 3<>/dev/tcp/127.0.0.1/9587
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3 > metrics
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
    // dns.dnssec = "auto" probes in the background: ready at once, with no
    // DNS at all, and the mode is still pending or (probe failed) validate.
    let readyz = read("readyz");
    assert!(
        readyz.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "{readyz}\n{log}"
    );
    let metrics = read("metrics");
    assert!(
        metrics.contains("danerelay_dnssec_mode{mode=\"pending\"} 1")
            || metrics.contains("danerelay_dnssec_mode{mode=\"validate\"} 1"),
        "{metrics}"
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
