//! Shared helpers for the queue's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use danerelay_queue::*;

pub fn opts() -> QueueOptions {
    QueueOptions {
        retry: vec![
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(600),
        ],
        max_age: Duration::from_secs(86_400),
        lease: Duration::from_secs(300),
    }
}

pub fn env(sender: &str) -> Envelope {
    Envelope {
        ret: Some(Ret::Headers),
        envid: Some("ENV1".into()),
        body_8bit: true,
        auth_user: Some("alice@example.org".into()),
        client_addr: Some("127.0.0.1".parse().unwrap()),
        ..Envelope::new(sender, SystemTime::now())
    }
}

pub fn rcpt(addr: &str) -> RecipientSpec {
    RecipientSpec {
        address: addr.into(),
        orcpt: Some(format!("rfc822;{addr}")),
        notify: Notify::default(),
    }
}

pub fn enqueue_env(q: &Queue, env: Envelope, body: &[u8], rcpts: &[&str]) -> QueueId {
    let mut w = q.begin().unwrap();
    // Several writes, as a DATA reader would do.
    for chunk in body.chunks(1000) {
        w.write_all(chunk).unwrap();
    }
    w.commit(env, rcpts.iter().map(|a| rcpt(a)).collect())
        .unwrap()
}

pub fn enqueue(q: &Queue, body: &[u8], rcpts: &[&str]) -> QueueId {
    enqueue_env(q, env("alice@example.org"), body, rcpts)
}

pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

pub fn open(dir: &std::path::Path) -> Queue {
    Queue::open(dir, opts()).unwrap()
}

/// A deterministic body of `len` bytes with CRLF lines.
pub fn body(len: usize, seed: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i: u32 = seed as u32;
    while v.len() < len {
        if v.len() % 78 == 76 {
            v.extend_from_slice(b"\r\n");
        } else {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            v.push(b'a' + (i >> 16) as u8 % 26);
        }
    }
    v.truncate(len);
    v
}

pub fn spool_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

pub fn segments(dir: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir.join("bodies"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn delivered() -> Disposition {
    Disposition::Delivered {
        reply: "250 2.0.0 ok".into(),
    }
}

pub fn deferred() -> Disposition {
    Disposition::Deferred {
        reply: "451 4.3.0 try later".into(),
    }
}

pub fn bounced() -> Disposition {
    Disposition::Bounced {
        reply: "550 5.1.1 no such user".into(),
    }
}
