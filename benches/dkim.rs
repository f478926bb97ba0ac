//! DKIM signing cost per message (a `harness = false` bench target; no
//! criterion):
//!
//! ```sh
//! cargo bench --bench dkim                  # 300 messages per case
//! cargo bench --bench dkim -- --messages 1000
//! ```
//!
//! Each case is what `dkim::Signer::sign` costs the submission path for one
//! complete message (From: parsing, key choice, relaxed canonicalisation,
//! body hash, signature), on a 4 KiB and a 100 KiB message:
//!
//! - `baseline`: keys are configured but none is for the From: domain — the
//!   same From: parsing and key choice, no signature (what an unsigned
//!   message pays);
//! - `rsa-2048`, `ed25519`: one signature;
//! - `rsa+ed25519`: two signatures (one domain, two keys).
//!
//! Cases are interleaved (one message of each in turn) so that noise from
//! the shared machine falls on all of them alike; the median and the 90th
//! percentile of wall time per message are printed.

use std::path::Path;
use std::time::Instant;

use danerelay::dkim::key::KeyConfig;
use danerelay::dkim::keygen::{generate, write_key_file, Algorithm};
use danerelay::dkim::Signer;
use danerelay::metrics::Metrics;

fn key(dir: &Path, domain: &str, selector: &str, alg: Algorithm) -> KeyConfig {
    let path = dir.join(format!("{selector}.{domain}.pem"));
    let new = generate(alg).expect("keygen");
    write_key_file(&path, &new.pem).expect("write key");
    KeyConfig {
        domain: domain.into(),
        selector: selector.into(),
        private_key: path,
        subdomains: false,
    }
}

fn message(from_domain: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "Received: from client.example (unknown [192.0.2.7])\r\n\tby relay.example (danerelay) with ESMTPSA id 0066807GMY5Z;\r\n\tFri, 27 Nov 2026 20:50:10 +0000\r\n\
         From: Alice <alice@{from_domain}>\r\nTo: Bob <bob@example.net>\r\nSubject: quarterly numbers\r\n\
         Date: Fri, 27 Nov 2026 20:50:10 +0000\r\nMessage-ID: <0123456789abcdef.1795812610@relay.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0;
    while m.len() < size {
        m.extend_from_slice(
            format!("line {i:06}: the quick brown fox jumps over the lazy dog   \r\n").as_bytes(),
        );
        i += 1;
    }
    m.truncate(size - 2);
    m.extend_from_slice(b"\r\n");
    m
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages: usize = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = vec![
        key(d, "rsa.example", "r", Algorithm::Rsa2048),
        key(d, "ed.example", "e", Algorithm::Ed25519),
        key(d, "both.example", "r", Algorithm::Rsa2048),
        key(d, "both.example", "e", Algorithm::Ed25519),
    ];
    let signer = Signer::load(&keys, Metrics::new()).expect("load keys");
    let cases = [
        ("baseline", "unsigned.example"),
        ("rsa-2048", "rsa.example"),
        ("ed25519", "ed.example"),
        ("rsa+ed25519", "both.example"),
    ];
    println!("DKIM signing cost per message, {messages} messages per case (median / p90, µs)");
    println!("{:<14} {:>22} {:>22}", "case", "4 KiB", "100 KiB");
    let sizes = [4 * 1024, 100 * 1024];
    let mut results = vec![vec![Vec::with_capacity(messages); sizes.len()]; cases.len()];
    for (si, &size) in sizes.iter().enumerate() {
        let msgs: Vec<Vec<u8>> = cases.iter().map(|(_, dom)| message(dom, size)).collect();
        // Warm-up, and a check that each case does what it says.
        for (ci, m) in msgs.iter().enumerate() {
            let sig = signer.sign(m).expect("sign");
            let n = String::from_utf8_lossy(&sig)
                .matches("DKIM-Signature:")
                .count();
            assert_eq!(n, [0, 1, 1, 2][ci], "{}", cases[ci].0);
        }
        for _ in 0..messages {
            for (ci, m) in msgs.iter().enumerate() {
                let t = Instant::now();
                let sig = signer.sign(std::hint::black_box(m)).expect("sign");
                let us = t.elapsed().as_secs_f64() * 1e6;
                std::hint::black_box(sig);
                results[ci][si].push(us);
            }
        }
    }
    for (ci, (name, _)) in cases.iter().enumerate() {
        let cells: Vec<String> = results[ci]
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                format!("{:>9.1} / {:>9.1}", percentile(v, 0.5), percentile(v, 0.9))
            })
            .collect();
        println!("{name:<14} {:>22} {:>22}", cells[0], cells[1]);
    }
}
