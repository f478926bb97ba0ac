//! Where accepted messages go: the [`MessageStore`] seam (the queue in
//! production, fakes in tests) and [`BodyPipe`], which streams a message's
//! bytes from the async session into the blocking queue writer on the blocking
//! pool through a small bounded channel — so a connection holds at most a few
//! chunks in memory, whatever the message size, and a slow disk slows the
//! client (backpressure) instead of growing buffers.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::session::Transaction;

/// Bytes per chunk handed to the writer.
pub const CHUNK: usize = 32 * 1024;
/// Chunks in flight per message.
const PIPE_DEPTH: usize = 2;

#[derive(Debug, Clone, thiserror::Error)]
#[error("message storage failed: {detail}")]
pub struct StoreError {
    pub detail: String,
}

impl StoreError {
    pub fn new(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: detail.to_string(),
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
}

/// Blocking, like the queue: called on the blocking pool only.
pub trait MessageStore: Send + Sync + 'static {
    fn begin(&self) -> Result<Box<dyn MessageSink>, StoreError>;
}

/// One message being written. Dropping it without `commit` must leave nothing behind.
pub trait MessageSink: Write + Send {
    /// The id the message will have, if the store knows it before commit
    /// (it then appears in the `Received:` field, as Postfix does).
    fn queue_id(&self) -> Option<String> {
        None
    }

    /// Returns the queue id only once the message is durable.
    fn commit(self: Box<Self>, msg: Submitted) -> Result<String, StoreError>;
}

enum PipeMsg {
    Chunk(Vec<u8>),
    Commit(Box<Submitted>, oneshot::Sender<Result<String, StoreError>>),
}

/// A message on its way into the store. Dropping it aborts the message.
pub struct BodyPipe {
    tx: mpsc::Sender<PipeMsg>,
}

impl BodyPipe {
    /// Starts the writer on the blocking pool (`store.begin()` runs there
    /// too) and returns with the future queue id, when the store has one.
    pub async fn start(store: Arc<dyn MessageStore>) -> (Self, Option<String>) {
        let (tx, mut rx) = mpsc::channel::<PipeMsg>(PIPE_DEPTH);
        let (id_tx, id_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let mut sink = store.begin();
            let _ = id_tx.send(sink.as_ref().ok().and_then(|s| s.queue_id()));
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
        let id = id_rx.await.ok().flatten();
        (Self { tx }, id)
    }

    /// Hands a chunk to the writer, waiting while it is busy.
    pub async fn write(&mut self, chunk: Vec<u8>) {
        if !chunk.is_empty() {
            // A closed channel means the writer died; commit will report it.
            let _ = self.tx.send(PipeMsg::Chunk(chunk)).await;
        }
    }

    /// Commits and waits for durability.
    pub async fn commit(self, msg: Submitted) -> Result<String, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(PipeMsg::Commit(Box::new(msg), reply_tx))
            .await
            .map_err(|_| StoreError::new("message writer stopped"))?;
        reply_rx
            .await
            .map_err(|_| StoreError::new("message writer stopped"))?
    }
}

/// The production store: the durable queue.
impl MessageStore for danerelay_queue::Queue {
    fn begin(&self) -> Result<Box<dyn MessageSink>, StoreError> {
        danerelay_queue::Queue::begin(self)
            .map(|w| Box::new(w) as Box<dyn MessageSink>)
            .map_err(StoreError::new)
    }
}

impl MessageSink for danerelay_queue::MessageWriter {
    fn queue_id(&self) -> Option<String> {
        Some(self.id().to_string())
    }

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
    use super::session::RetParam;
    let tx = msg.tx;
    let env = danerelay_queue::Envelope {
        sender: tx.sender,
        ret: tx.ret.map(|r| match r {
            RetParam::Full => danerelay_queue::Ret::Full,
            RetParam::Headers => danerelay_queue::Ret::Headers,
        }),
        envid: tx.envid,
        body_8bit: tx.body_8bit,
        smtputf8: tx.smtputf8,
        auth_user: msg.auth_user,
        client_addr: Some(msg.client),
        received_at: msg.received_at,
    };
    let rcpts = tx
        .recipients
        .into_iter()
        .map(|r| danerelay_queue::RecipientSpec {
            address: r.address,
            // The queue keeps ORCPT with its address type, as received (RFC 3461 §4.2).
            orcpt: r.orcpt.map(|a| format!("rfc822;{a}")),
            notify: r
                .notify
                .map(|n| danerelay_queue::Notify {
                    success: n.success,
                    failure: n.failure,
                    delay: n.delay,
                    never: n.never,
                })
                .unwrap_or_default(),
        })
        .collect();
    (env, rcpts)
}
