//! Helpers for `benches/compare.sh` (a `harness = false` bench target, so it
//! is built in release with the rest and never runs as a test):
//!
//! - `benchtool load ADDR --sessions 50 --count N --size 10240 --rcpt R` —
//!   a plain SMTP client (no pipelining, like `smtp-source`) that measures,
//!   per message, the time from sending the end-of-data `.` to reading the
//!   final reply, and prints one JSON object: accepted, failed, seconds,
//!   rate, p50/p99/max in milliseconds. `--domains N` with a `{}` in the
//!   recipient (`sink@d{}.many.bench`) sends message i to domain `i % N`
//!   (workloads 6 and 7: many domains). `--alt-rcpt R2 --alt-every K` sends,
//!   besides the `--count` messages to `--rcpt`, one message to R2 after
//!   every K of them (workload 8: a slow destination mixed in); the JSON
//!   then also has `alt_accepted`.
//! - `benchtool sink ADDR[,ADDR...] --dir DIR [--tls] [--delay-ms N]` — a fast
//!   receiving MTA: accepts everything, never stores, optionally offers
//!   STARTTLS with a fresh self-signed certificate (its `3 1 1` TLSA data is
//!   written to `DIR/tlsa.hex` before it listens). Every 50 ms it rewrites
//!   `DIR/count` as `messages tls_messages connections most_open_at_once`,
//!   summed over all its addresses (workload 7: ten MX hosts, one process).
//!   `--delay-ms N` waits N ms before every reply, greeting included
//!   (workload 8's slow destination).
//!
//! - `benchtool prefill --config FILE --count N --size BYTES [--writers N]` —
//!   workload 5: queues N messages of BYTES directly through the queue crate,
//!   at the `queue.path` of a danerelay config file and with the options
//!   `serve` would use (`danerelay::queue_options`), each committed durably and
//!   then put on hold (so the relay never tries to deliver them). Prints JSON.
//! - `benchtool open-time --config FILE` — how long `Queue::open` of that queue
//!   takes (recovery included), and how much of it is sled's own open and a raw
//!   scan of the message records (each timed again on its own). Prints JSON.
//! - `benchtool pf-clone --template FILE --dir DIR --count N [--hash-depth D]`
//!   — workload 5 for Postfix: N copies of one real Postfix queue file in DIR
//!   (a queue directory such as `hold/`), each named as Postfix's
//!   `mail_queue_enter` names a file with short queue ids: five hex digits of
//!   microseconds followed by the file's own inode number in hex, so
//!   `postsuper -s` finds nothing to rename. Owner and mode are the template's;
//!   with `--hash-depth D` files go into D levels of one-character
//!   subdirectories (Postfix's `dir_forest`), as `hash_queue_names` requires.
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

const USAGE: &str = "benchtool load ADDR [--sessions N --count N --size BYTES --per-session N --rcpt ADDR --domains N --alt-rcpt ADDR --alt-every K] | sink ADDR[,ADDR...] --dir DIR [--tls] [--name HOST] [--delay-ms N] | prefill --config FILE --count N --size BYTES [--writers N] | open-time --config FILE | pf-clone --template FILE --dir DIR --count N [--hash-depth D]";

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
        Some("prefill") => prefill(&args[1..]),
        Some("open-time") => open_time(&args[1..]),
        Some("pf-clone") => pf_clone(&args[1..]),
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
    let domains = num(args, "--domains", 1)?.max(1) as u64;
    let alt = match opt(args, "--alt-rcpt") {
        Some(r) => Some((r, num(args, "--alt-every", 10)?.max(1) as u64)),
        None => None,
    };
    let plan = Arc::new(Plan {
        rcpt,
        domains,
        total: count as u64 + alt.as_ref().map_or(0, |(_, k)| count as u64 / k),
        per_session,
        alt,
    });
    let body = Arc::new(message(size));
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let alt_accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (body, next, failed, plan) = (body.clone(), next.clone(), failed.clone(), plan.clone());
        let alt_accepted = alt_accepted.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // One session sends up to `per_session` messages, then QUITs and
            // reconnects (as smtp-source -m with sessions does in aggregate).
            while next.load(Ordering::Relaxed) < plan.total {
                let counters = (&*next, &*alt_accepted);
                if let Err(e) = session(addr, &body, &plan, counters, &mut lat).await {
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
        "alt_accepted": alt_accepted.load(Ordering::Relaxed),
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

/// What `load` sends: message `i` of `total` goes to `rcpt` (with `{}` as
/// `i mod domains`), or to the alternative recipient after every K of them.
struct Plan {
    rcpt: String,
    domains: u64,
    total: u64,
    per_session: usize,
    /// `--alt-rcpt`, `--alt-every`.
    alt: Option<(String, u64)>,
}

impl Plan {
    /// Recipient of message `i`, and whether it is the alternative one.
    fn recipient(&self, i: u64) -> (String, bool) {
        match &self.alt {
            Some((alt, k)) if (i + 1) % (k + 1) == 0 => (alt.clone(), true),
            _ => (
                self.rcpt.replace("{}", &(i % self.domains).to_string()),
                false,
            ),
        }
    }
}

/// One client session; `(next, alt_accepted)`: the next message index and the
/// count of accepted messages to the alternative recipient.
async fn session(
    addr: SocketAddr,
    body: &[u8],
    plan: &Plan,
    (next, alt_accepted): (&AtomicU64, &AtomicU64),
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
    for _ in 0..plan.per_session {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            break;
        }
        let (rcpt, is_alt) = plan.recipient(i);
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
            if is_alt {
                alt_accepted.fetch_add(1, Ordering::Relaxed);
            }
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

#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    tls: AtomicU64,
    connections: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
}

async fn sink(args: &[String]) -> anyhow::Result<()> {
    let addrs = args
        .first()
        .context("sink ADDR[,ADDR...]")?
        .split(',')
        .map(|a| {
            a.parse::<SocketAddr>()
                .with_context(|| format!("address {a:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let delay = Duration::from_millis(num(args, "--delay-ms", 0)? as u64);
    let dir = PathBuf::from(opt(args, "--dir").context("--dir")?);
    let name = opt(args, "--name").unwrap_or_else(|| "mx-dane.bench".into());
    let acceptor = if args.iter().any(|a| a == "--tls") {
        Some(tls_acceptor(&dir, &name)?)
    } else {
        None
    };
    let mut listeners = Vec::new();
    for addr in &addrs {
        listeners.push(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?,
        );
    }
    let counts = Arc::new(Counts::default());
    let writer = counts.clone();
    let count_file = dir.join("count");
    tokio::spawn(async move {
        let mut last = [u64::MAX; 4];
        loop {
            let now = [
                &writer.messages,
                &writer.tls,
                &writer.connections,
                &writer.max_active,
            ]
            .map(|c| c.load(Ordering::Relaxed));
            if now != last {
                let text = format!("{} {} {} {}\n", now[0], now[1], now[2], now[3]);
                let _ = write_atomic(&count_file, &text);
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        let (acceptor, counts) = (acceptor.clone(), counts.clone());
        accepting.spawn(accept_loop(listener, acceptor, counts, delay));
    }
    println!("listening {addrs:?}");
    // An accept loop only ends on an error: the sink stops with it.
    match accepting.join_next().await {
        Some(result) => result?,
        None => Ok(()),
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    counts: Arc<Counts>,
    delay: Duration,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let (acceptor, counts) = (acceptor.clone(), counts.clone());
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let open = counts.active.fetch_add(1, Ordering::Relaxed) + 1;
        counts.max_active.fetch_max(open, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = serve(stream, acceptor, &counts, delay).await {
                eprintln!("sink session: {e:#}");
            }
            counts.active.fetch_sub(1, Ordering::Relaxed);
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
    counts: &Counts,
    delay: Duration,
) -> anyhow::Result<()> {
    let mut io = BufReader::new(stream);
    tokio::time::sleep(delay).await;
    io.get_mut().write_all(b"220 sink.bench ESMTP\r\n").await?;
    let plain = Dialogue {
        counts,
        delay,
        offer_tls: acceptor.is_some(),
        is_tls: false,
    };
    if let Some(acceptor) = acceptor {
        // Plain part until STARTTLS; then the whole dialogue over TLS.
        if !plain.run(&mut io).await? {
            return Ok(());
        }
        let tls = acceptor.accept(io.into_inner()).await?;
        let mut io = BufReader::new(tls);
        let secure = Dialogue {
            offer_tls: false,
            is_tls: true,
            ..plain
        };
        secure.run(&mut io).await?;
    } else {
        plain.run(&mut io).await?;
    }
    Ok(())
}

/// One phase of a sink session (before or after STARTTLS).
#[derive(Clone, Copy)]
struct Dialogue<'a> {
    counts: &'a Counts,
    /// Waited before every reply (`--delay-ms`).
    delay: Duration,
    offer_tls: bool,
    is_tls: bool,
}

impl Dialogue<'_> {
    /// Runs SMTP commands until QUIT/EOF (false) or an accepted STARTTLS (true).
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        io: &mut BufReader<S>,
    ) -> anyhow::Result<bool> {
        let Dialogue {
            counts,
            delay,
            offer_tls,
            is_tls,
        } = self;
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
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
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
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
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
}

// ---------------------------------------------------------------- workload 5

/// The danerelay configuration a prefill or timing refers to.
fn relay_config(args: &[String]) -> anyhow::Result<danerelay::config::Config> {
    let path = PathBuf::from(opt(args, "--config").context("--config FILE")?);
    match danerelay::config::load_file(&path) {
        Ok(loaded) => Ok(loaded.config),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!("{}: {}", path.display(), list.join("; "))
        }
    }
}

/// Opens the queue as `serve` does: same directory, same options, sled's cache
/// `queue.cache_size`.
fn open_relay_queue(config: &danerelay::config::Config) -> anyhow::Result<danerelay_queue::Queue> {
    std::fs::create_dir_all(&config.queue.path)?;
    let options = danerelay::queue_options(&config.queue);
    let tuning = danerelay_queue::QueueTuning {
        cache_capacity: config.queue.cache_size,
        ..danerelay_queue::QueueTuning::default()
    };
    danerelay_queue::Queue::open_tuned(&config.queue.path, options, tuning)
        .with_context(|| format!("open queue {}", config.queue.path.display()))
}

/// Waits for the background count of the messages queued before open; its duration.
fn wait_recovered(queue: &danerelay_queue::Queue) -> f64 {
    let t = Instant::now();
    while !queue.recovered() {
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed().as_secs_f64()
}

fn prefill(args: &[String]) -> anyhow::Result<()> {
    let config = relay_config(args)?;
    let count = num(args, "--count", 1_000_000)? as u64;
    let size = num(args, "--size", 2048)?;
    let writers = num(args, "--writers", 128)?.max(1);
    let t = Instant::now();
    let queue = open_relay_queue(&config)?;
    wait_recovered(&queue);
    let open_s = t.elapsed().as_secs_f64();
    let before = queue.counts().total();
    // The same message shape as `load` sends, without the SMTP end-of-data line.
    let mut body = message(size);
    body.truncate(body.len() - 3);
    let body = Arc::new(body);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (queue, body, next, done) =
                (queue.clone(), body.clone(), next.clone(), done.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let mut w = queue.begin()?;
                    std::io::Write::write_all(&mut w, &body)?;
                    let id = w.commit(prefill_envelope(), vec![prefill_recipient()])?;
                    // Held: never leased, so the relay leaves it alone during the runs.
                    queue.hold(id)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    // Progress on stderr: a million durable messages take minutes.
    let mut last = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(15) {
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "prefill: {n}/{count} in {:.0} s ({:.0}/s)",
                start.elapsed().as_secs_f64(),
                n as f64 / start.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("prefill writer panicked"))??;
    }
    queue.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let counts = queue.counts();
    let out = serde_json::json!({
        "queue": config.queue.path,
        "added": count,
        "size": size,
        "writers": writers,
        "seconds": secs,
        "rate": count as f64 / secs,
        "open_s": open_s,
        "queued_before": before,
        "held": counts.held,
        "total": counts.total(),
    });
    println!("{out}");
    Ok(())
}

fn prefill_envelope() -> danerelay_queue::Envelope {
    danerelay_queue::Envelope {
        client_addr: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        ..danerelay_queue::Envelope::new("bench@load.test", std::time::SystemTime::now())
    }
}

fn prefill_recipient() -> danerelay_queue::RecipientSpec {
    danerelay_queue::RecipientSpec {
        address: "sink@plain.bench".into(),
        orcpt: None,
        notify: danerelay_queue::Notify::default(),
    }
}

fn open_time(args: &[String]) -> anyhow::Result<()> {
    let config = relay_config(args)?;
    // First the real thing, as `serve` opens the queue (recovery included). Then, each
    // with a fresh sled instance configured as the queue configures it: sled's own open,
    // and a raw scan of the message records (what recovery iterates over). The rest of
    // `Queue::open` is recovery's own work: decoding each record, counting, body checks.
    // `Queue::open` counts the messages queued before in the background: the counts
    // are complete once it reports `recovered`.
    let t = Instant::now();
    let queue = open_relay_queue(&config)?;
    let open_s = t.elapsed().as_secs_f64();
    let recovered_s = open_s + wait_recovered(&queue);
    let counts = queue.counts();
    drop(queue);
    let sled_config = sled::Config::new()
        .path(config.queue.path.join("sled"))
        .cache_capacity(config.queue.cache_size)
        .flush_every_ms(None);
    let t = Instant::now();
    let db = open_retrying(&sled_config)?;
    let meta = db.open_tree("meta")?;
    let sled_open_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for item in meta.iter() {
        let (_, v) = item?;
        records += 1;
        bytes += v.len() as u64;
    }
    let scan_s = t.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "messages": counts.total(),
        "held": counts.held,
        "meta_records": records,
        "meta_bytes": bytes,
        "queue_open_s": open_s,
        "recovered_s": recovered_s,
        "sled_open_s": sled_open_s,
        "meta_scan_s": scan_s,
        "recovery_rest_s": (open_s - sled_open_s - scan_s).max(0.0),
    });
    println!("{out}");
    Ok(())
}

/// sled's background threads of a database just dropped may hold its lock briefly.
fn open_retrying(config: &sled::Config) -> anyhow::Result<sled::Db> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if tries < 200 && e.to_string().contains("acquire lock") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Postfix `dir_forest`: one directory level per leading character of the id.
fn hashed_dir(dir: &Path, id: &str, depth: usize) -> PathBuf {
    let mut d = dir.to_path_buf();
    let mut chars = id.chars();
    for _ in 0..depth {
        d.push(chars.next().unwrap_or('_').to_string());
    }
    d
}

fn pf_clone(args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let template = PathBuf::from(opt(args, "--template").context("--template FILE")?);
    let dir = PathBuf::from(opt(args, "--dir").context("--dir DIR")?);
    let count = num(args, "--count", 1_000_000)?;
    let depth = num(args, "--hash-depth", 0)?;
    let data = std::fs::read(&template).with_context(|| format!("{}", template.display()))?;
    let meta = std::fs::metadata(&template)?;
    let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
    let pid = std::process::id();
    let start = Instant::now();
    let mut last = Instant::now();
    for i in 0..count {
        // As mail_queue_enter: create under a temporary name that is no valid queue
        // id, learn the inode, rename to <usec hex><inode hex>.
        let tmp = dir.join(format!("clone.{pid}.{i}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, &data)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        let ino = f.metadata()?.ino();
        drop(f);
        let usec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_micros();
        let id = format!("{usec:05X}{ino:X}");
        let target_dir = hashed_dir(&dir, &id, depth);
        if depth > 0 {
            ensure_dirs(&dir, &target_dir, uid, gid)?;
        }
        std::fs::rename(&tmp, target_dir.join(&id))?;
        if last.elapsed() >= Duration::from_secs(15) {
            eprintln!(
                "pf-clone: {i}/{count} in {:.0} s",
                start.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "dir": dir,
        "added": count,
        "file_bytes": data.len(),
        "seconds": secs,
        "rate": count as f64 / secs,
    });
    println!("{out}");
    Ok(())
}

/// Creates the missing hash directories between `base` and `target` (mode 0700,
/// owned like the queue files, as Postfix's `mail_queue_mkdirs` leaves them).
fn ensure_dirs(base: &Path, target: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let Ok(rel) = target.strip_prefix(base) else {
        bail!("{} is not under {}", target.display(), base.display());
    };
    let mut d = base.to_path_buf();
    for part in rel.components() {
        d.push(part);
        if !d.is_dir() {
            std::fs::DirBuilder::new().mode(0o700).create(&d)?;
            std::os::unix::fs::chown(&d, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}
