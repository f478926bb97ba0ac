//! [`SigningPipe`]: a [`BodyPipe`] with DKIM signing in front (SPEC
//! "Submission": signed once, at acceptance, after the relay's own header
//! fields, before the message is stored). Messages that will not be signed
//! stream into the store as before; one that will is held until its content
//! is complete, signed, and stored with its `DKIM-Signature:` fields first.
//! A signature that cannot be made fails the commit: `451 4.3.0`, nothing stored.

use std::sync::Arc;

use super::store::{BodyPipe, MessageStore, StoreError, Submitted};
use crate::dkim::{Finish, Signer, Stage};

/// Messages up to this size are signed on the session's task; larger ones
/// on the blocking pool (hashing 25 MiB takes tens of milliseconds).
const INLINE_SIGN_MAX: usize = 256 * 1024;

pub struct SigningPipe {
    pipe: BodyPipe,
    stage: Stage,
    signer: Arc<Signer>,
    id: Option<String>,
}

impl SigningPipe {
    /// Starts a message; returns it with its future queue id, when known.
    pub fn start(store: Arc<dyn MessageStore>, signer: Arc<Signer>) -> (Self, Option<String>) {
        let (pipe, id) = BodyPipe::start(store);
        let stage = Stage::new(signer.clone(), id.clone());
        let pipe = SigningPipe {
            pipe,
            stage,
            signer,
            id: id.clone(),
        };
        (pipe, id)
    }

    /// Adds a chunk of the assembled message.
    pub async fn write(&mut self, chunk: Vec<u8>) {
        if let Some(out) = self.stage.push(chunk) {
            self.pipe.write(out).await;
        }
    }

    /// Signs if needed, then commits; waits for durability.
    pub async fn commit(self, mut msg: Submitted) -> Result<String, StoreError> {
        let SigningPipe {
            mut pipe,
            stage,
            signer,
            id,
        } = self;
        match stage.finish() {
            Finish::Pass(rest) => pipe.write(rest).await,
            Finish::Sign(message) => {
                // Sign 7-bit content with short lines, so that no later
                // conversion (acceptance re-encoding, 8BITMIME downgrade)
                // touches signed bytes (RFC 6376 §5.3).
                let message = match crate::mime::make_seven_bit_safe(&message) {
                    Ok(Some(safe)) => safe,
                    Ok(None) => message,
                    Err(r) => {
                        return Err(StoreError::refused(format!(
                            "Message cannot be made 7-bit for signing: {r}"
                        )))
                    }
                };
                let (message, signed) = if message.len() <= INLINE_SIGN_MAX {
                    let signed = signer.sign(&message);
                    (message, signed)
                } else {
                    tokio::task::spawn_blocking(move || {
                        let signed = signer.sign(&message);
                        (message, signed)
                    })
                    .await
                    .map_err(|e| StoreError::new(format!("DKIM signing task: {e}")))?
                };
                match signed {
                    Ok(fields) => {
                        msg.relay_signed = true;
                        pipe.write(fields).await;
                        pipe.write(message).await;
                    }
                    Err(e) => {
                        tracing::error!(queue_id = id.as_deref().unwrap_or("-"), error = %e,
                            "DKIM signature cannot be made; refusing the message with 451");
                        // Dropping `pipe` stores nothing.
                        return Err(StoreError::new(e));
                    }
                }
            }
        }
        pipe.commit(msg).await
    }
}
