//! The Submitter without HTTP: refusals before anything is stored (drain,
//! queue unavailable, a failing store) and what a stored message carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::smtp::server::store::{MessageSink, StoreError};

type Stored = Arc<Mutex<Vec<(Submitted, Vec<u8>)>>>;

struct Sink(Stored, Vec<u8>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MessageSink for Sink {
    fn commit(self: Box<Self>, msg: Submitted) -> Result<String, StoreError> {
        let mut all = self.0.lock().unwrap();
        all.push((msg, self.1));
        Ok(format!("MEM{}", all.len()))
    }
}

/// Stores in memory, or fails every message when `broken`.
struct Store(Stored, bool);

impl MessageStore for Store {
    fn begin(&self, _id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
        if self.1 {
            return Err(StoreError::new("disk on fire"));
        }
        Ok(Box::new(Sink(self.0.clone(), Vec::new())))
    }
}

/// Set to refuse new mail, as a draining relay does.
type Refusing = Arc<AtomicBool>;

fn submitter(broken: bool) -> (Submitter, Stored, Refusing) {
    let cfg = crate::config::development();
    let stored = Stored::default();
    let refusing = Refusing::default();
    let flag = refusing.clone();
    let accepting: Accepting = Arc::new(move || {
        if flag.load(Ordering::Acquire) {
            Err("draining")
        } else {
            Ok(())
        }
    });
    let metrics = Metrics::new();
    let s = Submitter::new(
        &cfg,
        Arc::new(Store(stored.clone(), broken)),
        Arc::new(Signer::load(&[], metrics.clone()).unwrap()),
        None,
        Guards::new(&cfg.limits),
        accepting,
        metrics,
    );
    (s, stored, refusing)
}

fn client() -> Client {
    Client {
        ip: "127.0.0.1".parse().unwrap(),
        tls: None,
    }
}

const BODY: &[u8] = br#"{"from":"app@example.com","to":["a@dest.example"],"bcc":["b@dest.example"],"subject":"s","text":"t"}"#;

#[tokio::test]
async fn stored_with_the_relays_fields_and_every_recipient() {
    let (s, stored, _) = submitter(false);
    let id = s.submit(&client(), "app@example.com", BODY).await.unwrap();
    assert_eq!(id, "MEM1");
    let all = stored.lock().unwrap();
    let (msg, bytes) = &all[0];
    let rcpts: Vec<&str> = msg
        .tx
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["a@dest.example", "b@dest.example"]);
    assert_eq!(msg.auth_user.as_deref(), Some("app@example.com"));
    let text = String::from_utf8_lossy(bytes);
    assert!(text.starts_with("Received: from http-submission"), "{text}");
    assert!(!text.contains("b@dest.example"), "{text}");
}

#[tokio::test]
async fn not_accepting_and_store_failures_are_unavailable() {
    let (s, stored, refusing) = submitter(false);
    refusing.store(true, Ordering::Release);
    let e = s
        .submit(&client(), "app@example.com", BODY)
        .await
        .unwrap_err();
    assert!(matches!(e, SubmitError::Unavailable("draining")), "{e:?}");
    assert!(stored.lock().unwrap().is_empty());

    let (s, _, _) = submitter(true);
    let e = s
        .submit(&client(), "app@example.com", BODY)
        .await
        .unwrap_err();
    assert!(matches!(e, SubmitError::Storage(_)), "{e:?}");
}

#[tokio::test]
async fn without_a_users_file_nobody_logs_in() {
    let (s, _, _) = submitter(false);
    let e = s.authenticate(&client(), "app@example.com", "x").await;
    assert!(matches!(e, Err(SubmitError::Unauthenticated)), "{e:?}");
}
