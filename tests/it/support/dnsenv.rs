//! A real DNSSEC world for integration tests: a private signed root and
//! zones generated and signed at test time (`ldns-keygen` + `ldns-signzone`,
//! with deliberately tampered and expired signatures), served by `knotd`, and
//! a validating `unbound` in front of it with the test root's key as its
//! trust anchor. Both processes run in a temp dir, on 127.0.53.1 (knot) and
//! 127.0.53.2 (unbound) with ephemeral ports, and are killed on `Drop`, so
//! every test can have its own environment.
//!
//! Zones (see [`Zone`]): `.` and `example.` signed; `secure.example.`
//! signed; `insecure.example.` unsigned (no DS: provably insecure);
//! `bogus.example.` signed then tampered; `expired.example.` signed with
//! signatures that expired in 2020; `nsec3.example.` signed with NSEC3
//! instead of NSEC. `secure.example.` and `nsec3.example.` carry wildcards
//! (`*._tcp.wild` TLSA, `*.wc` A and MX). Each comes with the records of the DNS
//! test matrix (listed in [`default_records`]); callers add theirs with
//! [`DnsEnvBuilder::record`] before [`DnsEnvBuilder::start`].
//!
//! A delivery test gives its own mail domain a name under a zone, so it
//! never collides with the matrix records:
//!
//! ```ignore
//! let smtp = TcpListener::bind("127.0.0.1:0")?;          // the test's MX
//! let port = smtp.local_addr()?.port();
//! let Some(env) = DnsEnv::builder()
//!     .record(Zone::Secure, "shop MX 10 smtp.shop")      // shop.secure.example
//!     .record(Zone::Secure, "smtp.shop A 127.0.0.1")
//!     .record(Zone::Secure, &format!("_{port}._tcp.smtp.shop TLSA 3 1 1 {sha256_spki_hex}"))
//!     .start() else { return };          // tools missing outside CI: skipped
//! let dns = danerelay::dns::connect(&env.dns_config(DnssecMode::TrustAd)).await?; // via unbound
//! let plan = plan_route_with_port(dns.as_ref(), "shop.secure.example", &[], port).await?;
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use danerelay::config::{DnsConfig, DnssecMode};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::require_tool;

/// Address knotd listens on (port chosen per environment).
pub const KNOT_IP: &str = "127.0.53.1";
/// Address unbound listens on (port chosen per environment).
pub const UNBOUND_IP: &str = "127.0.53.2";

/// The zones of the test world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    Root,
    Tld,
    Secure,
    Insecure,
    Bogus,
    Expired,
    /// Signed with NSEC3 (RFC 5155; 0 extra iterations, no salt, RFC 9276).
    Nsec3,
}

impl Zone {
    pub const ALL: [Zone; 7] = [
        Zone::Root,
        Zone::Tld,
        Zone::Secure,
        Zone::Insecure,
        Zone::Bogus,
        Zone::Expired,
        Zone::Nsec3,
    ];

    /// The zone apex, without the trailing dot (`""` for the root).
    pub fn domain(self) -> &'static str {
        match self {
            Zone::Root => "",
            Zone::Tld => "example",
            Zone::Secure => "secure.example",
            Zone::Insecure => "insecure.example",
            Zone::Bogus => "bogus.example",
            Zone::Expired => "expired.example",
            Zone::Nsec3 => "nsec3.example",
        }
    }

    fn origin(self) -> String {
        format!("{}.", self.domain())
    }

    fn file(self) -> String {
        match self {
            Zone::Root => "root.zone".into(),
            z => format!("{}.zone", z.domain()),
        }
    }

    fn signed(self) -> bool {
        self != Zone::Insecure
    }

    fn parent(self) -> Option<Zone> {
        match self {
            Zone::Root => None,
            Zone::Tld => Some(Zone::Root),
            _ => Some(Zone::Tld),
        }
    }
}

/// The TLSA record data every default TLSA record carries (`3 1 1` + this).
pub const TLSA_HEX: &str = "8bd1da95272f7fa4ffb24137fc0ed03aae67e5c4d8b3c50734e1050a7920b922";

/// The matrix records each zone starts with (relative names, zone-file
/// syntax). Addresses are in 127.0.0.0/8 and nothing listens there.
pub fn default_records(zone: Zone) -> Vec<String> {
    let tlsa = format!("3 1 1 {TLSA_HEX}");
    let mut lines: Vec<String> = match zone {
        Zone::Root => vec![],
        // Targets of cross-zone CNAMEs (a "provider" in another signed zone).
        Zone::Tld => vec![
            "mx A 127.0.0.32".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
            "hop CNAME _25._tcp.mx.secure.example.".into(),
        ],
        Zone::Secure => vec![
            "@ MX 10 mx".into(),
            "mx A 127.0.0.25".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
            // A host name that is a secure CNAME (RFC 7672 §2.2.3).
            "mxalias CNAME mx".into(),
            // A TLSA name that is a CNAME to another TLSA RRset.
            "tlsalias A 127.0.0.31".into(),
            "_25._tcp.tlsalias CNAME _25._tcp.mx".into(),
            // The same across a zone cut: secure.example → example.
            "xhost CNAME mx.example.".into(),
            "xtlsa A 127.0.0.33".into(),
            "_25._tcp.xtlsa CNAME _25._tcp.mx.example.".into(),
            // Secure CNAME into the insecure zone.
            "tlsainsecure A 127.0.0.34".into(),
            "_25._tcp.tlsainsecure CNAME _25._tcp.mx.insecure.example.".into(),
            // Wildcard TLSA, directly and behind a CNAME (RFC 4035 §5.3.4:
            // the expansion needs an NSEC proof).
            format!("*._tcp.wild TLSA {tlsa}"),
            "wild A 127.0.0.35".into(),
            "xwild A 127.0.0.36".into(),
            "_25._tcp.xwild CNAME _25._tcp.wild".into(),
            // Two hops across the zone cut and back.
            "hop2 A 127.0.0.37".into(),
            "_25._tcp.hop2 CNAME hop.example.".into(),
            // Domains of the routing matrix.
            "nullmx MX 0 .".into(),
            "nomx A 127.0.0.26".into(),
            "cnamedomain CNAME target".into(),
            "target MX 10 mx".into(),
        ],
        Zone::Insecure => vec![
            "@ MX 10 mx".into(),
            "mx A 127.0.0.27".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
        ],
        Zone::Bogus => vec![
            "@ MX 10 mx".into(),
            "mx A 127.0.0.28".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
        ],
        Zone::Expired => vec![
            "@ MX 10 mx".into(),
            "mx A 127.0.0.29".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
        ],
        Zone::Nsec3 => vec![
            "@ MX 10 mx".into(),
            "mx A 127.0.0.41".into(),
            format!("_25._tcp.mx TLSA {tlsa}"),
            format!("*._tcp.wild TLSA {tlsa}"),
            "wild A 127.0.0.42".into(),
            "xwild A 127.0.0.43".into(),
            "_25._tcp.xwild CNAME _25._tcp.wild".into(),
        ],
    };
    if matches!(zone, Zone::Secure | Zone::Nsec3) {
        // Wildcards for every type the relay asks (RFC 4592): A and MX
        // synthesised at `<anything>.wc`, and NODATA there for AAAA.
        lines.extend(["*.wc A 127.0.0.44".into(), "*.wc MX 10 mx".into()]);
    }
    if zone == Zone::Secure {
        // Larger than a 1232-byte UDP reply: forces the TCP fallback.
        lines.extend((1..=100).map(|i| format!("big A 127.0.1.{i}")));
    }
    lines
}

/// Collects caller records, then builds and starts the world.
#[derive(Debug, Default)]
pub struct DnsEnvBuilder {
    extra: Vec<(Zone, String)>,
}

impl DnsEnvBuilder {
    /// Adds one record in zone-file syntax, owner relative to the zone apex
    /// (`"mail 300 IN A 127.0.0.1"`, `"@ MX 5 mail"`) or absolute (trailing dot).
    pub fn record(mut self, zone: Zone, line: &str) -> Self {
        self.extra.push((zone, line.to_string()));
        self
    }

    /// Generates, signs and serves the zones; `None` when a tool is missing
    /// outside CI (the caller returns, skipping loudly).
    pub fn start(self) -> Option<DnsEnv> {
        let tools = ["knotd", "unbound", "ldns-keygen", "ldns-signzone"];
        let mut paths = Vec::new();
        for tool in tools {
            paths.push(require_tool(tool)?);
        }
        let mut last_error = String::new();
        // A port picked as free can be taken before the daemon binds it.
        for _ in 0..3 {
            match DnsEnv::launch(&self.extra, &paths) {
                Ok(env) => return Some(env),
                Err(e) => last_error = e,
            }
        }
        panic!("DNS test environment did not start: {last_error}");
    }
}

/// A running knotd + unbound pair. Dropping it kills both.
pub struct DnsEnv {
    dir: tempfile::TempDir,
    knot: Child,
    unbound: Child,
    /// The authoritative server (all zones).
    pub knot_addr: SocketAddr,
    /// The validating recursive resolver.
    pub unbound_addr: SocketAddr,
    /// DNSKEY of the test root (the trust anchor for both modes).
    pub trust_anchor: PathBuf,
}

impl Drop for DnsEnv {
    fn drop(&mut self) {
        for child in [&mut self.knot, &mut self.unbound] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl DnsEnv {
    pub fn builder() -> DnsEnvBuilder {
        DnsEnvBuilder::default()
    }

    /// The world with only the default matrix records.
    pub fn start() -> Option<DnsEnv> {
        Self::builder().start()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test root's DS record (from ldns-keygen), the DS form of
    /// [`Self::trust_anchor`].
    pub fn root_ds(&self) -> PathBuf {
        self.dir.path().join("root.ds")
    }

    /// A `[dns]` config for this world: `trust-ad`/`off`/`auto` go through
    /// unbound, `validate` talks to knotd directly with the test trust anchor.
    pub fn dns_config(&self, mode: DnssecMode) -> DnsConfig {
        let server = match mode {
            DnssecMode::Validate => self.knot_addr,
            DnssecMode::TrustAd | DnssecMode::Off | DnssecMode::Auto => self.unbound_addr,
        };
        DnsConfig {
            nameservers: vec![server],
            dnssec: mode,
            trust_anchor: Some(self.trust_anchor.clone()),
            dnssec_probe: Some(".".into()),
        }
    }

    fn launch(extra: &[(Zone, String)], tools: &[PathBuf]) -> Result<DnsEnv, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        let knot_addr = free_addr(KNOT_IP)?;
        let unbound_addr = free_addr(UNBOUND_IP)?;
        let trust_anchor = write_zones(d, extra, &tools[2], &tools[3])?;
        write_knot_conf(d, knot_addr)?;
        write_unbound_conf(d, unbound_addr, knot_addr, &trust_anchor)?;
        let knot = spawn(
            Command::new(&tools[0]).arg("-c").arg(d.join("knot.conf")),
            &d.join("knot.log"),
        )?;
        let unbound = spawn(
            Command::new(&tools[1])
                .arg("-d")
                .arg("-c")
                .arg(d.join("unbound.conf")),
            &d.join("unbound.log"),
        )?;
        let mut env = DnsEnv {
            dir,
            knot,
            unbound,
            knot_addr,
            unbound_addr,
            trust_anchor,
        };
        env.wait_ready()?;
        Ok(env)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (name, child) in [("knotd", &mut self.knot), ("unbound", &mut self.unbound)] {
                if let Ok(Some(status)) = child.try_wait() {
                    let log_file = if name == "knotd" {
                        "knot.log"
                    } else {
                        "unbound.log"
                    };
                    let log =
                        std::fs::read_to_string(self.dir.path().join(log_file)).unwrap_or_default();
                    return Err(format!("{name} exited with {status}: {log}"));
                }
            }
            let knot_ok = Zone::ALL.iter().all(|z| {
                query(self.knot_addr, &z.origin(), RecordType::SOA, false)
                    .is_some_and(|(rc, _)| rc == ResponseCode::NoError)
            });
            let unbound_ok = knot_ok
                && query(self.unbound_addr, ".", RecordType::SOA, true)
                    .is_some_and(|(rc, ad)| rc == ResponseCode::NoError && ad);
            if unbound_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs = ["knot.log", "unbound.log"]
                    .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default());
                return Err(format!(
                    "not ready after 20 s (knot ok: {knot_ok}); logs: {logs:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One blocking UDP query: (RCODE, AD bit).
fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    ad: bool,
) -> Option<(ResponseCode, bool)> {
    let mut msg = Message::query();
    msg.add_query(Query::query(Name::from_ascii(name).ok()?, rtype));
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = ad;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(ad);
    msg.set_edns(edns);
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.send_to(&msg.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..n]).ok()?;
    Some((reply.metadata.response_code, reply.metadata.authentic_data))
}

/// A port on `ip` free for both UDP and TCP right now.
pub fn free_addr(ip: &str) -> Result<SocketAddr, String> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        let addr = udp.local_addr().map_err(|e| e.to_string())?;
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    Err(format!("no free port on {ip}"))
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes and signs every zone; returns the trust-anchor file (root DNSKEY).
fn write_zones(
    d: &Path,
    extra: &[(Zone, String)],
    keygen: &Path,
    signzone: &Path,
) -> Result<PathBuf, String> {
    // Keys first: parents need their children's DS records.
    let mut keys = std::collections::HashMap::new();
    for zone in Zone::ALL.into_iter().filter(|z| z.signed()) {
        let base = run(Command::new(keygen)
            .current_dir(d)
            .args(["-a", "ECDSAP256SHA256", "-k"])
            .arg(zone.origin()))?;
        keys.insert(zone, base);
    }
    // Children before parents does not matter: DS comes from the key files.
    for zone in Zone::ALL {
        let mut text = String::new();
        let _ = writeln!(text, "$ORIGIN {}\n$TTL 300", zone.origin());
        let _ = writeln!(
            text,
            "@ SOA ns.example. hostmaster.example. 1 3600 600 86400 300"
        );
        let _ = writeln!(text, "@ NS ns.example.");
        if matches!(zone, Zone::Root | Zone::Tld) {
            let _ = writeln!(text, "ns.example. A {KNOT_IP}");
        }
        for child in Zone::ALL.into_iter().filter(|c| c.parent() == Some(zone)) {
            let _ = writeln!(text, "{} NS ns.example.", child.origin());
            if let Some(base) = keys.get(&child) {
                let ds = std::fs::read_to_string(d.join(format!("{base}.ds")))
                    .map_err(|e| format!("DS of {}: {e}", child.origin()))?;
                text.push_str(ds.trim());
                text.push('\n');
            }
        }
        for line in default_records(zone) {
            let _ = writeln!(text, "{line}");
        }
        for (_, line) in extra.iter().filter(|(z, _)| *z == zone) {
            let _ = writeln!(text, "{line}");
        }
        let path = d.join(zone.file());
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        let Some(key) = keys.get(&zone) else { continue };
        let (inception, expiration) = match zone {
            // Valid from 2019 until 2020: long expired.
            Zone::Expired => (1_546_300_800, 1_577_836_800),
            _ => (now() - 86_400, now() + 30 * 86_400),
        };
        let signed = d.join(format!("{}.signed", zone.file()));
        let mut sign = Command::new(signzone);
        if zone == Zone::Nsec3 {
            sign.args(["-n", "-t", "0"]);
        }
        run(sign
            .current_dir(d)
            .arg("-i")
            .arg(inception.to_string())
            .arg("-e")
            .arg(expiration.to_string())
            .arg("-f")
            .arg(&signed)
            .arg(&path)
            .arg(key))?;
        if zone == Zone::Bogus {
            tamper(&signed)?;
        }
        std::fs::rename(&signed, &path).map_err(|e| e.to_string())?;
    }
    let root_key = keys.get(&Zone::Root).ok_or("no root key")?;
    let anchor = d.join("root.key");
    std::fs::copy(d.join(format!("{root_key}.key")), &anchor).map_err(|e| e.to_string())?;
    std::fs::copy(d.join(format!("{root_key}.ds")), d.join("root.ds"))
        .map_err(|e| e.to_string())?;
    Ok(anchor)
}

/// Changes signed data without re-signing: the MX preference and the A
/// record of `bogus.example.` no longer match their RRSIGs.
fn tamper(signed: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(signed).map_err(|e| e.to_string())?;
    let tampered: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\tMX\t10 ") {
                l.replace("\tMX\t10 ", "\tMX\t20 ")
            } else if l.contains("\tA\t127.0.0.28") {
                l.replace("127.0.0.28", "127.0.0.99")
            } else if l.contains("\tTLSA\t") && !l.contains("RRSIG") {
                l.replace("3 1 1", "3 1 2")
            } else {
                l.to_string()
            }
        })
        .collect();
    if tampered.join("\n") == text.trim_end() {
        return Err("tampering changed nothing".into());
    }
    std::fs::write(signed, tampered.join("\n") + "\n").map_err(|e| e.to_string())
}

fn write_knot_conf(d: &Path, addr: SocketAddr) -> Result<(), String> {
    let dir = d.display();
    let mut conf = format!(
        "server:\n    rundir: \"{dir}\"\n    listen: {}@{}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: \"{dir}/db\"\n\
         template:\n  - id: default\n    storage: \"{dir}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n\
         zone:\n",
        addr.ip(),
        addr.port()
    );
    for zone in Zone::ALL {
        let _ = writeln!(
            conf,
            "  - domain: \"{}\"\n    file: \"{}\"",
            zone.origin(),
            zone.file()
        );
    }
    std::fs::write(d.join("knot.conf"), conf).map_err(|e| e.to_string())
}

fn write_unbound_conf(
    d: &Path,
    addr: SocketAddr,
    knot: SocketAddr,
    anchor: &Path,
) -> Result<(), String> {
    let dir = d.display();
    let mut conf = format!(
        "server:\n    interface: {ip}@{port}\n    port: {port}\n    access-control: 127.0.0.0/8 allow\n\
         \x20   do-not-query-localhost: no\n    do-ip6: no\n    username: \"\"\n    chroot: \"\"\n\
         \x20   directory: \"{dir}\"\n    pidfile: \"\"\n    logfile: \"\"\n    use-syslog: no\n\
         \x20   verbosity: 1\n    val-log-level: 2\n    num-threads: 1\n    so-reuseport: no\n\
         \x20   outgoing-range: 64\n    outgoing-num-tcp: 4\n    incoming-num-tcp: 8\n\
         \x20   trust-anchor-file: \"{anchor}\"\n    module-config: \"validator iterator\"\n\
         \x20   qname-minimisation: no\n    harden-referral-path: no\n    target-fetch-policy: \"0 0 0 0 0\"\n\
         \x20   prefetch: no\n    aggressive-nsec: no\n    minimal-responses: no\n\
         remote-control:\n    control-enable: no\n",
        ip = addr.ip(),
        port = addr.port(),
        anchor = anchor.display(),
    );
    for zone in Zone::ALL {
        let _ = writeln!(
            conf,
            "stub-zone:\n    name: \"{}\"\n    stub-addr: {}@{}",
            zone.origin(),
            knot.ip(),
            knot.port()
        );
    }
    std::fs::write(d.join("unbound.conf"), conf).map_err(|e| e.to_string())
}
