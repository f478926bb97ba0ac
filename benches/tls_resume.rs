//! Full vs resumed TLS handshake, as the delivery client does them, on
//! loopback (a `harness = false` bench target; no criterion):
//!
//! ```sh
//! cargo bench --bench tls_resume                   # 7 rounds × 200 handshakes per mode
//! cargo bench --bench tls_resume -- --rounds 9 --handshakes 300
//! ```
//!
//! One handshake = TCP connect to 127.0.0.1, the client TLS setup for a DANE
//! decision (`3 1 1` of the server's leaf), the TLS handshake, reading the
//! server's few bytes (where a TLS 1.3 client takes in its tickets), and the
//! DANE verdict re-derived from the peer chain — everything
//! `delivery::session::open` does for TLS, without SMTP.
//!
//! - `full`: `dane::client_setup`, a fresh config without resumption per
//!   connection (what every delivery connection did before resumption);
//! - `resumed`: `dane::TlsConfigCache::setup`, primed by one connection,
//!   so every timed connection resumes (checked and printed).
//!
//! The server (rustls, stateless tickets, one `ServerConfig`) runs on its
//! own thread, the client on the main thread (current-thread runtime). Per
//! round both modes run back to back (order alternating between rounds);
//! the ratio full/resumed is taken within each round and the median over
//! rounds printed, with the medians of wall time per handshake and of
//! on-CPU time per handshake of the client and the server thread (from
//! `/proc/<pid>/task/<tid>/schedstat`). The machine these numbers come from
//! is shared and noisy: read the ratios.
//!
//! Server keys: ECDSA P-256 (rcgen), and RSA-2048 when `openssl` is on PATH
//! (ring cannot generate RSA keys), the most common MX key type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::crypto::ring::Ticketer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{HandshakeKind, ServerConfig, SupportedProtocolVersion};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use danerelay::dane::{
    client_setup, ring_provider, DaneTarget, Decision, TlsClientSetup, TlsConfigCache, TlsaRecord,
    Verdict,
};

const MX: &str = "mx.bench.example";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rounds = num(&args, "--rounds", 7)?;
    let handshakes = num(&args, "--handshakes", 200)?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tls_resume: {rounds} rounds x {handshakes} handshakes per mode, {cpus} CPUs, \
         loadavg {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut keys = vec![("ecdsa-p256", rcgen::KeyPair::generate()?)];
    match rsa_key() {
        Ok(k) => keys.push(("rsa-2048", k)),
        Err(e) => println!("(no RSA-2048 run: {e:#})"),
    }
    let mut certs = Vec::new();
    for (name, key) in &keys {
        let cert = rcgen::CertificateParams::new(vec![MX.to_string()])?.self_signed(key)?;
        let cert = cert.der().clone();
        verdict_cost(name, &cert)?;
        certs.push(cert);
    }
    println!(
        "{:<11} {:<8} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>9}",
        "key",
        "version",
        "wall full",
        "wall resumed",
        "client full",
        "client res.",
        "server full",
        "server res.",
        "resumed"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for ((name, key), cert) in keys.iter().zip(certs) {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let server = Server::start(version, cert.clone(), key)?;
            let decision = dane_decision(&cert)?;
            let mut full = Vec::new();
            let mut resumed = Vec::new();
            for round in 0..rounds {
                let f = || rt.block_on(batch(&server, &decision, handshakes, None));
                let cache = TlsConfigCache::default();
                let r = || rt.block_on(batch(&server, &decision, handshakes, Some(&cache)));
                if round % 2 == 0 {
                    full.push(f()?);
                    resumed.push(r()?);
                } else {
                    resumed.push(r()?);
                    full.push(f()?);
                }
            }
            report(name, version, &full, &resumed, handshakes);
        }
    }
    Ok(())
}

/// One mode's figures for one batch, per handshake.
#[derive(Debug, Clone, Copy)]
struct Figures {
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Duration,
    resumed: usize,
}

/// `handshakes` connections, each verified; through `cache` (primed by one
/// untimed connection) or with a fresh uncached setup each time.
async fn batch(
    server: &Server,
    decision: &Decision,
    handshakes: usize,
    cache: Option<&TlsConfigCache>,
) -> anyhow::Result<Figures> {
    let setup = || -> anyhow::Result<TlsClientSetup> {
        let s = match cache {
            Some(c) => c.setup(decision, MX)?,
            None => client_setup(decision, MX)?,
        };
        s.context("a TLS decision")
    };
    if cache.is_some() {
        handshake(server.addr, &setup()?).await?;
    }
    let (c0, s0) = (cpu(&client_thread())?, cpu(&server.thread)?);
    let start = Instant::now();
    let mut resumed = 0;
    for _ in 0..handshakes {
        if handshake(server.addr, &setup()?).await? {
            resumed += 1;
        }
    }
    let wall = start.elapsed();
    let (c1, s1) = (cpu(&client_thread())?, cpu(&server.thread)?);
    let n = u32::try_from(handshakes)?;
    Ok(Figures {
        wall: wall / n,
        client_cpu: (c1 - c0) / n,
        server_cpu: (s1 - s0) / n,
        resumed,
    })
}

/// One connection; whether it resumed. Fails unless DANE verified it.
async fn handshake(addr: SocketAddr, setup: &TlsClientSetup) -> anyhow::Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = TlsConnector::from(setup.config.clone())
        .connect(setup.server_name.clone(), tcp)
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    let conn = tls.get_ref().1;
    match setup.verdict(conn.peer_certificates().unwrap_or_default()) {
        Some(Verdict::Verified(_)) => {}
        other => bail!("not verified: {other:?}"),
    }
    Ok(conn.handshake_kind() == Some(HandshakeKind::Resumed))
}

/// The server thread: accepts, handshakes, sends a greeting, closes.
struct Server {
    addr: SocketAddr,
    /// `/proc/<pid>/task/<tid>` of the thread running it.
    thread: PathBuf,
}

impl Server {
    fn start(
        version: &'static SupportedProtocolVersion,
        cert: CertificateDer<'static>,
        key: &rcgen::KeyPair,
    ) -> anyhow::Result<Server> {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(ring_provider().clone())
            .with_protocol_versions(&[version])?
            .with_no_client_auth()
            .with_single_cert(vec![cert], der)?;
        config.ticketer = Ticketer::new()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(client_thread());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                while let Ok((tcp, _)) = listener.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(tcp).await {
                            let _ = tls.write_all(b"220 bench\r\n").await;
                            let _ = tls.shutdown().await;
                        }
                    });
                }
            });
        });
        let thread = rx.recv_timeout(Duration::from_secs(5))?;
        Ok(Server { addr, thread })
    }
}

/// `/proc/<pid>/task/<tid>` of the calling thread.
fn client_thread() -> PathBuf {
    let link = std::fs::read_link("/proc/thread-self").unwrap_or_default();
    PathBuf::from("/proc").join(link)
}

/// On-CPU time of a thread so far (first field of its `schedstat`, ns).
fn cpu(thread: &std::path::Path) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(thread.join("schedstat"))
        .with_context(|| format!("{}/schedstat", thread.display()))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()?;
    Ok(Duration::from_nanos(ns))
}

/// What re-deriving the DANE verdict after a handshake costs on its own
/// (`TlsClientSetup::verdict`, DANE-EE `3 1 1` against the leaf): median of
/// 9 batches of 2,000 calls.
fn verdict_cost(key: &str, cert: &CertificateDer<'static>) -> anyhow::Result<()> {
    let setup = client_setup(&dane_decision(cert)?, MX)?.context("a TLS decision")?;
    let chain = [cert.clone()];
    let mut batches = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        for _ in 0..2000 {
            if !matches!(setup.verdict(&chain), Some(Verdict::Verified(_))) {
                bail!("not verified");
            }
        }
        batches.push(start.elapsed().as_secs_f64() * 1e6 / 2000.0);
    }
    println!(
        "{key:<11} re-deriving the DANE-EE verdict: {:.1} µs",
        median(batches)
    );
    Ok(())
}

/// DANE for `MX` with the `3 1 1` record of `cert`.
fn dane_decision(cert: &CertificateDer<'_>) -> anyhow::Result<Decision> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)?;
    let record = TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw).to_vec(),
    };
    Ok(Decision::Authenticate(DaneTarget::new(
        MX,
        MX,
        vec![record],
    )))
}

/// An RSA-2048 key from `openssl genpkey` (PKCS#8 PEM on stdout).
fn rsa_key() -> anyhow::Result<rcgen::KeyPair> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!("openssl genpkey failed");
    }
    let pem = String::from_utf8(out.stdout)?;
    Ok(rcgen::KeyPair::from_pem_and_sign_algo(
        &pem,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(
    key: &str,
    version: &SupportedProtocolVersion,
    full: &[Figures],
    resumed: &[Figures],
    handshakes: usize,
) {
    let us = |f: &dyn Fn(&Figures) -> Duration, v: &[Figures]| {
        median(v.iter().map(|x| f(x).as_secs_f64() * 1e6).collect())
    };
    let ratio = |f: &dyn Fn(&Figures) -> Duration| {
        median(
            full.iter()
                .zip(resumed)
                .map(|(a, b)| f(a).as_secs_f64() / f(b).as_secs_f64())
                .collect(),
        )
    };
    let wall = |x: &Figures| x.wall;
    let client = |x: &Figures| x.client_cpu;
    let server = |x: &Figures| x.server_cpu;
    let v = match version.version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "?",
    };
    let min_resumed = resumed.iter().map(|x| x.resumed).min().unwrap_or(0);
    let max_full = full.iter().map(|x| x.resumed).max().unwrap_or(0);
    println!(
        "{key:<11} {v:<8} {:>10.0} µs {:>10.0} µs {:>10.0} µs {:>10.0} µs {:>10.0} µs {:>10.0} µs {:>4}/{handshakes}",
        us(&wall, full),
        us(&wall, resumed),
        us(&client, full),
        us(&client, resumed),
        us(&server, full),
        us(&server, resumed),
        min_resumed,
    );
    println!(
        "{:<20} ratio full/resumed (median of per-round ratios): wall {:.2}x, client CPU {:.2}x, \
         server CPU {:.2}x; full runs resumed {max_full}",
        "",
        ratio(&wall),
        ratio(&client),
        ratio(&server),
    );
}

/// `--name N` from the arguments, or `default`.
fn num(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context(format!("{name} needs a value"))?
            .parse()
            .with_context(|| name.to_string()),
        None => Ok(default),
    }
}
