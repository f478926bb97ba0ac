//! Issue #18 memory figures, measured rather than assumed (run on its own:
//! `cargo test --test it content_memory -- --ignored --nocapture --test-threads=1`):
//! peak RSS growth (VmHWM, reset through /proc/self/clear_refs) while a 25 MiB
//! message is re-encoded on its way into the queue, and while a RET=FULL bounce
//! of a 25 MiB message is built.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use danerelay::delivery::outcome::{Outcome, Reason};
use danerelay::delivery::report::{report, ReportOptions, Reported};
use danerelay::delivery::retry::RetryPolicy;
use danerelay::smtp::server::reencode::Reencoding;
use danerelay::smtp::server::session::Transaction;
use danerelay::smtp::server::session_types::Recipient;
use danerelay::smtp::server::{MessageStore, Submitted};
use danerelay::smtp::{EnhancedCode, Reply};
use danerelay_queue::{Envelope, Notify, Queue, QueueOptions, RecipientSpec, Ret};

const SIZE: usize = 25 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Resets the peak and returns the current RSS in bytes.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_kib("VmRSS:") * 1024
}

fn peak() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn queue(dir: &std::path::Path) -> Queue {
    let opts = QueueOptions {
        retry: vec![Duration::from_secs(60)],
        max_age: Duration::from_secs(3600),
        lease: Duration::from_secs(60),
    };
    Queue::open(&dir.join("q"), opts).unwrap()
}

/// 25 MiB of HTML in 5,000-octet lines, generated chunk by chunk.
fn write_long_line_message(w: &mut dyn Write) {
    w.write_all(
        b"From: app@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n",
    )
    .unwrap();
    let line = format!("{}\r\n", "<b>Gr\u{fc}\u{df}e</b> ".repeat(312));
    let chunk = line.repeat(32 * 1024 / line.len());
    let mut written = 0;
    while written < SIZE {
        w.write_all(chunk.as_bytes()).unwrap();
        written += chunk.len();
    }
}

/// One streamed submission through the re-encoding store; returns the id.
fn reencode_once(reencoding: &Reencoding) -> String {
    let mut sink = reencoding.begin(None).unwrap();
    write_long_line_message(&mut sink);
    sink.flush().unwrap();
    let tx = Transaction {
        sender: "app@example.com".into(),
        body_8bit: true,
        smtputf8: false,
        ret: Some(Ret::Full),
        envid: None,
        recipients: vec![Recipient {
            address: "c@dest.test".into(),
            orcpt: None,
            notify: None,
        }],
        handoff: false,
        arrival: None,
    };
    sink.commit(Submitted {
        tx,
        auth_user: None,
        client: "127.0.0.1".parse().unwrap(),
        received_at: SystemTime::now(),
        relay_signed: false,
    })
    .unwrap()
}

#[test]
#[ignore = "measurement; run alone (see the module docs)"]
fn peak_rss_of_reencoding_and_of_a_full_dsn_for_25_mib() {
    let dir = tempfile::tempdir().unwrap();
    let q = queue(dir.path());

    // Re-encoding at acceptance, through the streamed sink as the session
    // uses it; the first run warms up the queue's threads and allocator.
    let store: Arc<dyn MessageStore> = Arc::new(q.clone());
    let reencoding = Reencoding::new(store);
    let base = reset_peak();
    reencode_once(&reencoding);
    let cold = peak().saturating_sub(base);
    let base = reset_peak();
    let id = reencode_once(&reencoding);
    let reencode_growth = peak().saturating_sub(base);
    let info = q.show(id.parse().unwrap()).unwrap().unwrap();
    let mut body = Vec::new();
    q.body(info.id).unwrap().read_to_end(&mut body).unwrap();
    assert!(body.split(|&b| b == b'\n').all(|l| l.len() <= 999));
    assert!(info.size > SIZE as u64);
    drop(body);

    // A RET=FULL failure DSN of a plain 25 MiB message.
    let mut w = q.begin().unwrap();
    write_long_line_message(&mut w);
    let env = Envelope {
        ret: Some(Ret::Full),
        ..Envelope::new("app@example.com", SystemTime::now())
    };
    let rcpt = RecipientSpec {
        address: "c@dest.test".into(),
        orcpt: None,
        notify: Notify::default(),
    };
    let full_id = w.commit(env, vec![rcpt]).unwrap();
    let now = SystemTime::now() + Duration::from_secs(1);
    let leased = q
        .lease_due(now, 10)
        .unwrap()
        .into_iter()
        .find(|l| l.id == full_id)
        .unwrap();
    let results = [Reported {
        index: leased.recipients[0].index,
        outcome: Outcome::Bounced(Reason {
            reply: Reply::local(550, EnhancedCode(5, 1, 1), "no such user"),
            remote: true,
        }),
        remote_mta: Some("mx.dest.test".into()),
    }];
    let options = ReportOptions {
        reporting_mta: "relay.test".into(),
        retry: RetryPolicy::new(
            vec![Duration::from_secs(60)],
            Duration::from_secs(3600),
            None,
        ),
    };
    let metrics = danerelay::metrics::Metrics::new();
    let base = reset_peak();
    let summary = report(&q, &leased, &results, &options, &metrics, now).unwrap();
    let dsn_growth = peak().saturating_sub(base);
    assert_eq!(summary.dsns.len(), 1);
    let dsn = q.show(summary.dsns[0]).unwrap().unwrap();
    assert!(dsn.size > SIZE as u64, "the DSN carries the whole original");

    println!(
        "25 MiB message: re-encoding at acceptance grew peak RSS by {:.2} MiB \
         (first run {:.2} MiB; stored {:.1} MiB); RET=FULL DSN grew it by {:.2} MiB (DSN {:.1} MiB)",
        reencode_growth as f64 / MIB,
        cold as f64 / MIB,
        info.size as f64 / MIB,
        dsn_growth as f64 / MIB,
        dsn.size as f64 / MIB
    );
    assert!(dsn_growth < 5 * 1024 * 1024, "DSN peak growth {dsn_growth}");
    assert!(
        reencode_growth < 5 * 1024 * 1024,
        "re-encode peak growth {reencode_growth}"
    );
}
