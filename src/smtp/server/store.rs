//! Where accepted messages go: the [`MessageStore`] seam (the queue in
//! production, fakes in tests) and [`BodyPipe`]. A small message is collected
//! in memory and handed to the store whole, without blocking; a large one is
//! streamed from the async session into a blocking writer on the blocking pool
//! through a small bounded channel — so a connection holds at most the small
//! limit plus a few chunks in memory, whatever the message size, and a slow
//! disk slows the client (backpressure) instead of growing buffers.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::session::Transaction;
use crate::smtp::queue_edge;
use crate::smtp::Reply;

/// Bytes per chunk handed to the writer.
pub const CHUNK: usize = 32 * 1024;
/// Chunks in flight per message.
const PIPE_DEPTH: usize = 2;

#[derive(Debug, Clone, thiserror::Error)]
#[error("message storage failed: {detail}")]
pub struct StoreError {
    pub detail: String,
    /// The content itself is refused (`550 5.6.0`, see `reencode`), not the storage.
    pub refused: bool,
}

impl StoreError {
    pub fn new(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: detail.to_string(),
            refused: false,
        }
    }

    /// The message cannot be accepted as it is; retrying will not help.
    pub fn refused(detail: impl std::fmt::Display) -> Self {
        Self {
            refused: true,
            ..Self::new(detail)
        }
    }
}

/// The envelope of a message being committed.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub tx: Transaction,
    pub auth_user: Option<String>,
    pub client: IpAddr,
    pub received_at: SystemTime,
    /// The relay DKIM-signed it at acceptance: its bytes must never change
    /// again (no delivery-time 8BITMIME downgrade).
    pub relay_signed: bool,
}

/// Reports the result of [`MessageStore::store_whole`]; must not block.
pub type WholeDone = Box<dyn FnOnce(Result<String, StoreError>) + Send>;

/// Where accepted messages go. `begin` is blocking, like the queue: it is only called on the
/// blocking pool; `reserve` and `store_whole` never block.
pub trait MessageStore: Send + Sync + 'static {
    /// Starts a streamed message; `id` is what [`MessageStore::reserve`] returned for it.
    fn begin(&self, id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError>;

    /// The id the next message will have, if the store assigns ids before the body is written
    /// (it then appears in the `Received:` field, as Postfix does).
    fn reserve(&self) -> Option<String> {
        None
    }

    /// Bodies up to this many bytes are handed over whole to [`MessageStore::store_whole`]
    /// instead of being streamed through a blocking writer. 0 = always stream.
    fn whole_body_max(&self) -> usize {
        0
    }

    /// The reply MAIL gets while the store cannot take new mail (free space under
    /// `queue.min_free_space`: `452 4.3.1`; storage failing: `451 4.3.0`), else `None`.
    fn refusal(&self) -> Option<Reply> {
        None
    }

    /// Stores a message whose body is complete in memory; `done` runs once it is durable.
    /// The default streams it through [`MessageStore::begin`] on the caller's thread, which
    /// suits only stores that never block (a store with `whole_body_max() > 0` overrides it).
    fn store_whole(&self, id: Option<&str>, body: Vec<u8>, msg: Submitted, done: WholeDone) {
        let result = self.begin(id).and_then(|mut sink| {
            sink.write_all(&body).map_err(StoreError::new)?;
            sink.flush().map_err(StoreError::new)?;
            sink.commit(msg)
        });
        done(result);
    }
}

/// One streamed message. Dropping it without `commit` must leave nothing behind.
pub trait MessageSink: Write + Send {
    /// Returns the queue id only once the message is durable.
    fn commit(self: Box<Self>, msg: Submitted) -> Result<String, StoreError>;
}

enum PipeMsg {
    Chunk(Vec<u8>),
    Commit(Box<Submitted>, oneshot::Sender<Result<String, StoreError>>),
}

enum Mode {
    /// Everything so far, while it fits [`MessageStore::whole_body_max`].
    Buffer(Vec<u8>),
    /// Streaming into a writer on the blocking pool.
    Stream(mpsc::Sender<PipeMsg>),
}

/// A message on its way into the store. Dropping it aborts the message.
///
/// A body that stays within the store's `whole_body_max` (64 KiB for the queue: most mail) is
/// collected here and handed over whole at commit, costing no thread of its own; the first
/// chunk that would exceed it starts a writer on the blocking pool, which gets the collected
/// bytes and then every further chunk through a small bounded channel.
pub struct BodyPipe {
    store: Arc<dyn MessageStore>,
    id: Option<String>,
    mode: Mode,
}

impl BodyPipe {
    /// Starts a message and returns it with its future queue id, when the store has one.
    pub fn start(store: Arc<dyn MessageStore>) -> (Self, Option<String>) {
        let id = store.reserve();
        let pipe = Self {
            store,
            id: id.clone(),
            mode: Mode::Buffer(Vec::new()),
        };
        (pipe, id)
    }

    /// Adds a chunk; waits while a streaming writer is busy (backpressure).
    pub async fn write(&mut self, chunk: Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        let tx = match &mut self.mode {
            Mode::Buffer(buf) if buf.len() + chunk.len() <= self.store.whole_body_max() => {
                if buf.is_empty() {
                    *buf = chunk;
                } else {
                    buf.extend_from_slice(&chunk);
                }
                return;
            }
            Mode::Buffer(buf) => {
                let collected = std::mem::take(buf);
                let tx = spawn_writer(self.store.clone(), self.id.clone());
                if !collected.is_empty() {
                    // A closed channel means the writer died; commit will report it.
                    let _ = tx.send(PipeMsg::Chunk(collected)).await;
                }
                self.mode = Mode::Stream(tx.clone());
                tx
            }
            Mode::Stream(tx) => tx.clone(),
        };
        let _ = tx.send(PipeMsg::Chunk(chunk)).await;
    }

    /// Commits and waits for durability.
    pub async fn commit(self, msg: Submitted) -> Result<String, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        match self.mode {
            Mode::Buffer(body) => {
                self.store.store_whole(
                    self.id.as_deref(),
                    body,
                    msg,
                    Box::new(move |r| {
                        let _ = reply_tx.send(r);
                    }),
                );
            }
            Mode::Stream(tx) => tx
                .send(PipeMsg::Commit(Box::new(msg), reply_tx))
                .await
                .map_err(|_| StoreError::new("message writer stopped"))?,
        }
        reply_rx
            .await
            .map_err(|_| StoreError::new("message writer stopped"))?
    }
}

/// Starts the blocking writer of a streamed message.
fn spawn_writer(store: Arc<dyn MessageStore>, id: Option<String>) -> mpsc::Sender<PipeMsg> {
    let (tx, mut rx) = mpsc::channel::<PipeMsg>(PIPE_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut sink = store.begin(id.as_deref());
        let mut failed: Option<StoreError> = None;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                PipeMsg::Chunk(bytes) => {
                    if failed.is_some() {
                        continue;
                    }
                    match sink.as_mut() {
                        Ok(s) => {
                            if let Err(e) = s.write_all(&bytes) {
                                failed = Some(StoreError::new(e));
                            }
                        }
                        Err(e) => failed = Some(e.clone()),
                    }
                }
                PipeMsg::Commit(submitted, reply) => {
                    let result = match (failed.take(), sink) {
                        (Some(e), _) | (None, Err(e)) => Err(e),
                        (None, Ok(mut s)) => match s.flush() {
                            Ok(()) => s.commit(*submitted),
                            Err(e) => Err(StoreError::new(e)),
                        },
                    };
                    let _ = reply.send(result);
                    return;
                }
            }
        }
        // Channel closed without commit: `sink` drops here and aborts.
    });
    tx
}

/// The production store: the durable queue.
impl MessageStore for danerelay_queue::Queue {
    fn begin(&self, id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
        let writer = match id {
            Some(id) => self.begin_with_id(parse_id(id)?),
            None => danerelay_queue::Queue::begin(self).map_err(StoreError::new)?,
        };
        Ok(Box::new(writer))
    }

    fn reserve(&self) -> Option<String> {
        Some(self.reserve_id().to_string())
    }

    fn whole_body_max(&self) -> usize {
        danerelay_queue::Queue::whole_body_max(self)
    }

    fn refusal(&self) -> Option<Reply> {
        match self.health() {
            danerelay_queue::StorageHealth::Ok => None,
            danerelay_queue::StorageHealth::LowSpace { .. } => Some(Reply::insufficient_storage()),
            danerelay_queue::StorageHealth::Failed { .. } => Some(Reply::storage_failure()),
        }
    }

    fn store_whole(&self, id: Option<&str>, body: Vec<u8>, msg: Submitted, done: WholeDone) {
        let id = match id.map(parse_id).unwrap_or_else(|| Ok(self.reserve_id())) {
            Ok(id) => id,
            Err(e) => return done(Err(e)),
        };
        let (env, rcpts) = to_queue(msg);
        self.submit(id, body, env, rcpts, move |r| {
            done(r.map(|id| id.to_string()).map_err(StoreError::new))
        });
    }
}

fn parse_id(id: &str) -> Result<danerelay_queue::QueueId, StoreError> {
    id.parse()
        .map_err(|e| StoreError::new(format!("reserved queue id {id:?}: {e:?}")))
}

impl MessageSink for danerelay_queue::MessageWriter {
    fn commit(self: Box<Self>, msg: Submitted) -> Result<String, StoreError> {
        let (env, rcpts) = to_queue(msg);
        danerelay_queue::MessageWriter::commit(*self, env, rcpts)
            .map(|id| id.to_string())
            .map_err(StoreError::new)
    }
}

/// Maps the session's transaction onto the queue's envelope model.
pub fn to_queue(
    msg: Submitted,
) -> (
    danerelay_queue::Envelope,
    Vec<danerelay_queue::RecipientSpec>,
) {
    let tx = msg.tx;
    let env = danerelay_queue::Envelope {
        sender: tx.sender,
        ret: tx.ret,
        envid: tx.envid,
        body_8bit: tx.body_8bit,
        smtputf8: tx.smtputf8,
        auth_user: msg.auth_user,
        client_addr: Some(msg.client),
        received_at: msg.received_at,
        relay_signed: msg.relay_signed,
        // Client mail never gets the relay's own TLS-RPT exemption (a
        // client's `TLS-Required: No` is not honoured either).
        tls_report: false,
    };
    let rcpts = tx
        .recipients
        .into_iter()
        .map(|r| danerelay_queue::RecipientSpec {
            address: r.address,
            orcpt: r.orcpt.as_deref().map(queue_edge::orcpt_to_queue),
            notify: queue_edge::notify_to_queue(r.notify),
        })
        .collect();
    (env, rcpts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::smtp::server::session::Transaction;

    type Stored = Mutex<Vec<(Option<String>, Vec<u8>)>>;

    /// Records which path each message took.
    #[derive(Default)]
    struct Probe {
        limit: usize,
        whole: Arc<Stored>,
        streamed: Arc<Stored>,
    }

    struct ProbeSink(Arc<Stored>, Option<String>, Vec<u8>);

    impl Write for ProbeSink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.2.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MessageSink for ProbeSink {
        fn commit(self: Box<Self>, _: Submitted) -> Result<String, StoreError> {
            let this = *self;
            this.0.lock().unwrap().push((this.1, this.2));
            Ok("STREAMED".into())
        }
    }

    impl MessageStore for Probe {
        fn begin(&self, id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
            Ok(Box::new(ProbeSink(
                self.streamed.clone(),
                id.map(str::to_string),
                Vec::new(),
            )))
        }
        fn reserve(&self) -> Option<String> {
            Some("RESERVED".into())
        }
        fn whole_body_max(&self) -> usize {
            self.limit
        }
        fn store_whole(&self, id: Option<&str>, body: Vec<u8>, _: Submitted, done: WholeDone) {
            self.whole
                .lock()
                .unwrap()
                .push((id.map(str::to_string), body));
            done(Ok("WHOLE".into()));
        }
    }

    fn submitted() -> Submitted {
        Submitted {
            tx: Transaction {
                sender: "a@example.org".into(),
                body_8bit: false,
                smtputf8: false,
                ret: None,
                envid: None,
                recipients: Vec::new(),
            },
            auth_user: None,
            client: IpAddr::from([127, 0, 0, 1]),
            received_at: SystemTime::now(),
            relay_signed: false,
        }
    }

    fn probe(limit: usize) -> (Arc<Probe>, Arc<Stored>, Arc<Stored>) {
        let p = Arc::new(Probe {
            limit,
            ..Probe::default()
        });
        let (w, s) = (p.whole.clone(), p.streamed.clone());
        (p, w, s)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_handed_over_whole() {
        let (store, whole, streamed) = probe(100);
        let (mut pipe, id) = BodyPipe::start(store);
        assert_eq!(id.as_deref(), Some("RESERVED"));
        for chunk in [&b"0123456789"[..], &[b'x'; 80], b"abcdefghij"] {
            pipe.write(chunk.to_vec()).await;
        }
        assert_eq!(pipe.commit(submitted()).await.unwrap(), "WHOLE");
        let whole = whole.lock().unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].0.as_deref(), Some("RESERVED"));
        assert_eq!(whole[0].1.len(), 100);
        assert!(whole[0].1.starts_with(b"0123456789x") && whole[0].1.ends_with(b"xabcdefghij"));
        assert!(streamed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn crossing_the_limit_streams_every_byte_in_order() {
        let (store, whole, streamed) = probe(100);
        let (mut pipe, _) = BodyPipe::start(store);
        let mut want = Vec::new();
        for i in 0..7u8 {
            let chunk = vec![b'a' + i; 40];
            want.extend_from_slice(&chunk);
            pipe.write(chunk).await;
        }
        assert_eq!(pipe.commit(submitted()).await.unwrap(), "STREAMED");
        let streamed = streamed.lock().unwrap();
        assert_eq!(streamed.len(), 1);
        assert_eq!(
            streamed[0].0.as_deref(),
            Some("RESERVED"),
            "same id as in Received:"
        );
        assert_eq!(streamed[0].1, want);
        assert!(whole.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_without_a_whole_path_always_streams() {
        let (store, whole, streamed) = probe(0);
        let (mut pipe, _) = BodyPipe::start(store);
        pipe.write(b"hi\r\n".to_vec()).await;
        assert_eq!(pipe.commit(submitted()).await.unwrap(), "STREAMED");
        assert_eq!(streamed.lock().unwrap()[0].1, b"hi\r\n");
        assert!(whole.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_pipe_stores_nothing() {
        let (store, whole, streamed) = probe(10);
        let (mut small, _) = BodyPipe::start(store.clone());
        small.write(b"abc".to_vec()).await;
        drop(small);
        let (mut big, _) = BodyPipe::start(store);
        big.write(vec![b'z'; 50]).await;
        drop(big);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(whole.lock().unwrap().is_empty());
        assert!(streamed.lock().unwrap().is_empty());
    }
}
