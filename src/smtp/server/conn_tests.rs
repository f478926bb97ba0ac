//! The connection driver over in-memory pipes: no sockets, paused clock.

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::config::SenderPolicy;
use crate::smtp::server::session::SessionConfig;
use crate::smtp::server::store::{MessageSink, StoreError, Submitted};

#[derive(Default)]
struct Mem(Mutex<Vec<(Submitted, Vec<u8>)>>);

struct MemSink(Arc<Mem>, Vec<u8>);

impl std::io::Write for MemSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MessageSink for MemSink {
    fn commit(self: Box<Self>, msg: Submitted) -> Result<String, StoreError> {
        let mut all = self.0 .0.lock().unwrap();
        all.push((msg, self.1));
        Ok(format!("MEM{}", all.len()))
    }
}

struct MemStore(Arc<Mem>);

impl MessageStore for MemStore {
    fn begin(&self, _id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
        Ok(Box::new(MemSink(self.0.clone(), Vec::new())))
    }
}

fn spawn_conn(
    timeout: Duration,
) -> (
    DuplexStream,
    Arc<Mem>,
    tokio::task::JoinHandle<Result<(), ConnError>>,
) {
    spawn_conn_with(timeout, Duration::from_secs(3600), Duration::from_secs(600))
}

fn spawn_conn_with(
    timeout: Duration,
    session_timeout: Duration,
    data_timeout: Duration,
) -> (
    DuplexStream,
    Arc<Mem>,
    tokio::task::JoinHandle<Result<(), ConnError>>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mem = Arc::new(Mem::default());
    let shared = Arc::new(Shared {
        tls: None,
        users: None,
        throttle: Arc::new(FailureThrottle::default()),
        store: Arc::new(MemStore(mem.clone())),
        dkim: Arc::new(crate::dkim::Signer::disabled(crate::metrics::Metrics::new())),
        shutdown: CancellationToken::new(),
        command_timeout: timeout,
        session_timeout,
        data_timeout,
        max_header_size: 64 * 1024,
        max_header_fields: 100,
        metrics: crate::metrics::Metrics::new(),
    });
    let session = Session::new(
        SessionConfig {
            hostname: "relay.test".into(),
            starttls: false,
            auth_available: false,
            trusted: true,
            sender_policy: SenderPolicy::Any,
            max_message_size: 1 << 20,
            max_recipients: 10,
            max_auth_failures: 3,
            limits: crate::smtp::server::session::SessionLimits::default(),
        },
        None,
    );
    let peer: IpAddr = "192.0.2.9".parse().unwrap();
    let task =
        tokio::spawn(async move { Conn::new(Box::new(server), peer, shared).run(session).await });
    (client, mem, task)
}

async fn read_all(mut c: DuplexStream) -> String {
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn pipelined_transaction_over_an_in_memory_stream() {
    let (mut c, mem, task) = spawn_conn(Duration::from_secs(5));
    c.write_all(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let out = read_all(c).await;
    let codes: Vec<&str> = out
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{out}"
    );
    assert!(out.contains("250 2.0.0 Ok: queued as MEM1\r\n"));
    task.await.unwrap().unwrap();
    let stored = mem.0.lock().unwrap();
    let body = String::from_utf8(stored[0].1.clone()).unwrap();
    assert!(
        body.starts_with(
            "Received: from c (unknown [192.0.2.9])\r\n\tby relay.test (danerelay) with ESMTP\r\n\tfor <c@d.example>;"
        ),
        "{body}"
    );
    assert!(body.ends_with("\r\n\r\n.dot\r\n"), "{body}");
    assert_eq!(stored[0].0.client, "192.0.2.9".parse::<IpAddr>().unwrap());
}

#[tokio::test(start_paused = true)]
async fn silent_client_gets_421_4_4_2_after_the_command_timeout() {
    let (c, _mem, task) = spawn_conn(Duration::from_secs(300));
    // The paused clock jumps ahead as soon as everything is idle.
    let out = read_all(c).await;
    assert!(
        out.ends_with("421 4.4.2 relay.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(matches!(task.await.unwrap(), Err(ConnError::Timeout)));
}

/// Real (short) time here: the body writer sits on the blocking pool, and a
/// paused clock does not auto-advance while blocking work is in flight.
#[tokio::test]
async fn timeout_inside_data_is_421_too_and_nothing_is_stored() {
    let (mut c, mem, task) = spawn_conn(Duration::from_millis(200));
    c.write_all(
        b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: half\r\n",
    )
    .await
    .unwrap();
    let out = read_all(c).await;
    assert!(
        out.contains("354 ")
            && out.ends_with("421 4.4.2 relay.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(task.await.unwrap().is_err());
    assert!(mem.0.lock().unwrap().is_empty());
}

/// Slowloris: one byte every 100 ms keeps every single read under the 300 ms
/// command timeout, yet the message deadline still ends the session.
#[tokio::test]
async fn trickling_data_still_hits_the_data_deadline() {
    let (mut c, mem, task) = spawn_conn_with(
        Duration::from_millis(300),
        Duration::from_secs(3600),
        Duration::from_millis(1000),
    );
    c.write_all(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if c.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    });
    let result = task.await.unwrap();
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(ConnError::Timeout)), "{result:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    let c = trickle.await.unwrap();
    let out = read_all(c).await;
    assert!(
        out.ends_with("421 4.4.2 relay.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
    assert!(mem.0.lock().unwrap().is_empty());
}

/// A command line trickled a byte at a time still ends at the session deadline.
#[tokio::test]
async fn trickling_commands_still_hit_the_session_deadline() {
    let (mut c, _mem, task) = spawn_conn_with(
        Duration::from_millis(300),
        Duration::from_millis(800),
        Duration::from_secs(600),
    );
    let started = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if c.write_all(b"N").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    });
    let result = task.await.unwrap();
    assert!(matches!(result, Err(ConnError::Timeout)), "{result:?}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    let out = read_all(trickle.await.unwrap()).await;
    assert!(
        out.ends_with("421 4.4.2 relay.test Timeout exceeded, closing connection\r\n"),
        "{out}"
    );
}
