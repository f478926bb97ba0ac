//! Helpers for `benches/compare.sh` (a `harness = false` bench target, so it
//! is built in release with the rest and never runs as a test):
//!
//! - `benchtool load ADDR --sessions 50 --count N --size 10240 --rcpt R` —
//!   a plain SMTP client (no pipelining, like `smtp-source`) that measures,
//!   per message, the time from sending the end-of-data `.` to reading the
//!   final reply, and prints one JSON object: accepted, failed, seconds,
//!   rate, p50/p99/max in milliseconds.
//! - `benchtool sink ADDR --dir DIR [--tls]` — a fast receiving MTA: accepts
//!   everything, never stores, optionally offers STARTTLS with a fresh
//!   self-signed certificate (its `3 1 1` TLSA data is written to
//!   `DIR/tlsa.hex` before it listens). Every 50 ms it rewrites `DIR/count`
//!   as `messages tls_messages`.
//!
//! `cargo bench --bench benchtool` appends `--bench` to the arguments; it is
//! ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "benchtool load ADDR [--sessions N --count N --size BYTES --per-session N --rcpt ADDR] | sink ADDR --dir DIR [--tls] [--name HOST]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("load") => rt.block_on(load(&args[1..])),
        Some("sink") => rt.block_on(sink(&args[1..])),
        // Plain `cargo bench` runs every bench target without arguments:
        // nothing to do here, and not a failure.
        None => {
            eprintln!("benchtool: {USAGE} (used by benches/compare.sh)");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}; usage: {USAGE}"),
    }
}

/// `--name value` from an argument list.
fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match opt(args, name) {
        Some(v) => v.parse().with_context(|| format!("{name} {v}")),
        None => Ok(default),
    }
}

// ---------------------------------------------------------------- load

struct Session<S> {
    io: BufReader<S>,
    line: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Reads one (possibly multi-line) reply; returns its code.
    async fn reply(&mut self) -> anyhow::Result<u16> {
        loop {
            self.line.clear();
            if self.io.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            let code: u16 = self
                .line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("bad reply {:?}", self.line))?;
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<u16> {
        self.io.get_mut().write_all(line.as_bytes()).await?;
        self.reply().await
    }
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@load.test\r\nTo: sink@bench\r\nSubject: benchmark\r\n\r\n".to_vec();
    let line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let addr: SocketAddr = args.first().context("load ADDR")?.parse()?;
    let sessions = num(args, "--sessions", 50)?.max(1);
    let count = num(args, "--count", 5000)?;
    let size = num(args, "--size", 10240)?;
    let per_session = num(args, "--per-session", 100)?.max(1);
    let rcpt = opt(args, "--rcpt").unwrap_or_else(|| "sink@plain.bench".into());
    let body = Arc::new(message(size));
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (body, next, failed, rcpt) = (body.clone(), next.clone(), failed.clone(), rcpt.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // One session sends up to `per_session` messages, then QUITs and
            // reconnects (as smtp-source -m with sessions does in aggregate).
            while next.load(Ordering::Relaxed) < count as u64 {
                if let Err(e) =
                    session(addr, &body, &rcpt, &next, count, per_session, &mut lat).await
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("session error: {e:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    let out = serde_json::json!({
        "accepted": lat.len(),
        "failed_sessions": failed.load(Ordering::Relaxed),
        "seconds": secs,
        "rate": lat.len() as f64 / secs,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    });
    println!("{out}");
    Ok(())
}

async fn session(
    addr: SocketAddr,
    body: &[u8],
    rcpt: &str,
    next: &AtomicU64,
    count: usize,
    per_session: usize,
    lat: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut s = Session {
        io: BufReader::new(stream),
        line: String::new(),
    };
    expect(s.reply().await?, 220, "greeting")?;
    expect(s.command("EHLO load.test\r\n").await?, 250, "EHLO")?;
    for _ in 0..per_session {
        if next.fetch_add(1, Ordering::Relaxed) >= count as u64 {
            break;
        }
        expect(
            s.command("MAIL FROM:<bench@load.test>\r\n").await?,
            250,
            "MAIL",
        )?;
        expect(
            s.command(&format!("RCPT TO:<{rcpt}>\r\n")).await?,
            250,
            "RCPT",
        )?;
        expect(s.command("DATA\r\n").await?, 354, "DATA")?;
        s.io.get_mut().write_all(body).await?;
        let t = Instant::now();
        let code = s.reply().await?;
        if code == 250 {
            lat.push(t.elapsed());
        } else {
            bail!("end of data: {}", s.line.trim_end());
        }
    }
    let _ = s.command("QUIT\r\n").await;
    Ok(())
}

fn expect(code: u16, want: u16, what: &str) -> anyhow::Result<()> {
    if code != want {
        bail!("{what}: got {code}");
    }
    Ok(())
}

// ---------------------------------------------------------------- sink

struct Counts {
    messages: AtomicU64,
    tls: AtomicU64,
}

async fn sink(args: &[String]) -> anyhow::Result<()> {
    let addr: SocketAddr = args.first().context("sink ADDR")?.parse()?;
    let dir = PathBuf::from(opt(args, "--dir").context("--dir")?);
    let name = opt(args, "--name").unwrap_or_else(|| "mx-dane.bench".into());
    let acceptor = if args.iter().any(|a| a == "--tls") {
        Some(tls_acceptor(&dir, &name)?)
    } else {
        None
    };
    let listener = TcpListener::bind(addr).await?;
    let counts = Arc::new(Counts {
        messages: AtomicU64::new(0),
        tls: AtomicU64::new(0),
    });
    let writer = counts.clone();
    let count_file = dir.join("count");
    tokio::spawn(async move {
        let mut last = (u64::MAX, 0);
        loop {
            let now = (
                writer.messages.load(Ordering::Relaxed),
                writer.tls.load(Ordering::Relaxed),
            );
            if now != last {
                let _ = write_atomic(&count_file, &format!("{} {}\n", now.0, now.1));
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    println!("listening {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let (acceptor, counts) = (acceptor.clone(), counts.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = serve(stream, acceptor, counts).await {
                eprintln!("sink session: {e:#}");
            }
        });
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

fn tls_acceptor(dir: &Path, name: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])?.self_signed(&key)?;
    let spki = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
    write_atomic(&dir.join("tlsa.hex"), &format!("{}\n", hex::encode(spki)))?;
    let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let mut io = BufReader::new(stream);
    io.get_mut().write_all(b"220 sink.bench ESMTP\r\n").await?;
    if let Some(acceptor) = acceptor {
        // Plain part until STARTTLS; then the whole dialogue over TLS.
        if !dialogue(&mut io, &counts, true, false).await? {
            return Ok(());
        }
        let tls = acceptor.accept(io.into_inner()).await?;
        let mut io = BufReader::new(tls);
        dialogue(&mut io, &counts, false, true).await?;
    } else {
        dialogue(&mut io, &counts, false, false).await?;
    }
    Ok(())
}

/// Runs SMTP commands until QUIT/EOF (false) or an accepted STARTTLS (true).
async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    counts: &Counts,
    offer_tls: bool,
    is_tls: bool,
) -> anyhow::Result<bool> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(false);
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match &verb[..] {
            b"EHLO" if offer_tls => {
                b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 100000000\r\n"
            }
            b"EHLO" => b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n",
            b"HELO" => b"250 sink.bench\r\n",
            b"STAR" if offer_tls => {
                io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                io.get_mut().flush().await?;
                return Ok(true);
            }
            b"DATA" => {
                io.get_mut().write_all(b"354 go ahead\r\n").await?;
                io.get_mut().flush().await?;
                loop {
                    line.clear();
                    if io.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(false);
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                }
                counts.messages.fetch_add(1, Ordering::Relaxed);
                if is_tls {
                    counts.tls.fetch_add(1, Ordering::Relaxed);
                }
                b"250 2.0.0 Ok: discarded\r\n"
            }
            b"QUIT" => {
                io.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                io.get_mut().flush().await?;
                return Ok(false);
            }
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 2.0.0 Ok\r\n",
            _ => b"502 5.5.2 not here\r\n",
        };
        // Pipelined commands: answer each, flush only when no more input
        // is buffered (RFC 2920 lets the server batch its replies).
        io.get_mut().write_all(reply).await?;
        if io.buffer().is_empty() {
            io.get_mut().flush().await?;
        }
    }
}
