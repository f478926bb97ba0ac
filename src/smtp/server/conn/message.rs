//! Message intake of a [`Conn`]: the `Received:` field, DATA read to the
//! end-of-data line (RFC 5321 §4.1.1.4), BDAT chunks (RFC 3030 §2), header
//! limits while the content streams past, and handing the result to the
//! store and the [`Session`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::super::data::{ChunkChecker, ContentStatus, DataReader};
use super::super::headers::{received, MessageAssembler, ReceivedInfo};
use super::super::limits::{HeaderCheck, HeaderViolation};
use super::super::session::{MessageOutcome, Session};
use super::super::signing::SigningPipe;
use super::super::store::{Submitted, CHUNK};
use super::{Conn, ConnError};
use crate::dkim::Signer;
use crate::smtp::Reply;
use tokio::time::Instant;

impl Conn {
    pub(super) fn received_header(
        &self,
        session: &Session,
        id: Option<&str>,
        now: SystemTime,
    ) -> String {
        received(&ReceivedInfo {
            id,
            helo: session.helo(),
            client: self.peer,
            tls: session.tls(),
            auth_user: session.auth_user(),
            hostname: session.hostname(),
            esmtp: session.esmtp(),
            smtputf8: session.transaction().is_some_and(|t| t.smtputf8),
            for_rcpt: session
                .transaction()
                .filter(|t| t.recipients.len() == 1)
                .and_then(|t| t.recipients.first())
                .map(|r| r.address.as_str()),
            when: now,
        })
    }

    /// The signing pipe and header assembler for the transaction: a relay's
    /// handoff is neither signed again nor completed (`Transaction::handoff`).
    fn intake(&self, session: &Session, now: SystemTime) -> (SigningPipe, MessageAssembler) {
        let handoff = session.transaction().is_some_and(|t| t.handoff);
        let signer = if handoff {
            Arc::new(Signer::disabled(self.shared.metrics.clone()))
        } else {
            self.shared.dkim.clone()
        };
        let (pipe, id) = SigningPipe::start(self.shared.store.clone(), signer);
        let received = self.received_header(session, id.as_deref(), now);
        let assembler = MessageAssembler::new(received, session.hostname(), now);
        let assembler = if handoff {
            assembler.trace_only()
        } else {
            assembler
        };
        (pipe, assembler)
    }

    /// DATA: reads to the real `<CRLF>.<CRLF>`, streaming into the store.
    pub(super) async fn read_data(&mut self, session: &mut Session) -> Result<Reply, ConnError> {
        let now = SystemTime::now();
        let (mut pipe, mut assembler) = self.intake(session, now);
        let mut reader = DataReader::new(session.max_message_size());
        let mut header = self.header_check();
        let mut content = Vec::with_capacity(CHUNK);
        let mut assembled = Vec::with_capacity(CHUNK);
        loop {
            let end = reader.feed(&self.buf, &mut content);
            let consumed = end.unwrap_or(self.buf.len());
            let _ = self.buf.split_to(consumed);
            header.feed(&content);
            if header.violation().is_some() {
                content.clear(); // keep reading to the end, store nothing more
            }
            assembler.push(&content, &mut assembled);
            content.clear();
            if end.is_some() {
                assembler.finish(&mut assembled);
            }
            if assembled.len() >= CHUNK || end.is_some() {
                pipe.write(std::mem::take(&mut assembled)).await;
            }
            if end.is_some() {
                break;
            }
            self.need_more(session, false).await?;
        }
        Ok(self
            .finish_message(session, pipe, reader.status(), header.violation(), now)
            .await)
    }

    pub(super) fn header_check(&self) -> HeaderCheck {
        HeaderCheck::new(self.shared.max_header_size, self.shared.max_header_fields)
    }

    /// Maps the content status (and the commit) to the final reply.
    pub(super) async fn finish_message(
        &mut self,
        session: &mut Session,
        pipe: SigningPipe,
        status: ContentStatus,
        header: Option<HeaderViolation>,
        now: SystemTime,
    ) -> Reply {
        let outcome = if status.bare_line_ending {
            MessageOutcome::BareLineEnding
        } else if status.too_large {
            MessageOutcome::TooLarge
        } else if header == Some(HeaderViolation::TooLarge) {
            MessageOutcome::HeaderTooLarge
        } else if header == Some(HeaderViolation::TooManyFields) {
            MessageOutcome::TooManyHeaderFields
        } else if let Some(tx) = session.transaction().cloned() {
            let received_at = arrival_or(tx.arrival, now);
            let submitted = Submitted {
                tx,
                auth_user: session.auth_user().map(str::to_string),
                client: self.peer,
                received_at,
                relay_signed: false,
            };
            let rcpts = submitted.tx.recipients.len();
            let from = submitted.tx.sender.clone();
            match pipe.commit(submitted).await {
                Ok(id) => {
                    tracing::info!(queue_id = %id, from = %from, rcpts, size = status.octets, "message accepted");
                    self.shared.metrics.messages_received_total.inc();
                    self.shared
                        .metrics
                        .received_bytes_total
                        .inc_by(status.octets);
                    MessageOutcome::Queued(id)
                }
                Err(e) if e.refused => MessageOutcome::Unencodable(e.detail),
                Err(e) => {
                    tracing::error!(error = %e, "storing message failed");
                    MessageOutcome::StorageFailed
                }
            }
        } else {
            MessageOutcome::StorageFailed
        };
        if !matches!(outcome, MessageOutcome::Queued(_)) {
            tracing::info!(peer = %self.peer, ?outcome, "message rejected");
        }
        session.message_done(outcome)
    }

    /// BDAT: reads exactly `size` octets (RFC 3030 §2), even when rejecting.
    pub(super) async fn read_chunk(
        &mut self,
        session: &mut Session,
        state: &mut Option<BdatState>,
        size: usize,
        last: bool,
        reject: Option<Reply>,
    ) -> Result<Reply, ConnError> {
        let mut left = size;
        if reject.is_none() && state.is_none() {
            let now = SystemTime::now();
            let (pipe, assembler) = self.intake(session, now);
            self.data_deadline = Some(Instant::now() + self.shared.data_timeout);
            *state = Some(BdatState {
                assembler,
                checker: ChunkChecker::new(session.max_message_size()),
                header: self.header_check(),
                pipe,
                now,
            });
        }
        let mut assembled = Vec::new();
        while left > 0 {
            if self.buf.is_empty() {
                self.need_more(session, false).await?;
            }
            let take = left.min(self.buf.len());
            let bytes = self.buf.split_to(take);
            left -= take;
            if let (None, Some(st)) = (&reject, state.as_mut()) {
                let mut keep = st.checker.feed(&bytes);
                st.header.feed(keep);
                if st.header.violation().is_some() {
                    keep = &[];
                }
                st.assembler.push(keep, &mut assembled);
                if assembled.len() >= CHUNK {
                    st.pipe.write(std::mem::take(&mut assembled)).await;
                }
            }
        }
        if let Some(reply) = reject {
            return Ok(reply);
        }
        let Some(mut st) = state.take() else {
            return Ok(Reply::storage_failure());
        };
        if !last {
            st.pipe.write(assembled).await;
            *state = Some(st);
            return Ok(session.chunk_done(size));
        }
        st.assembler.finish(&mut assembled);
        st.pipe.write(assembled).await;
        let status = st.checker.finish();
        let header = st.header.violation();
        Ok(self
            .finish_message(session, st.pipe, status, header, st.now)
            .await)
    }
}

/// The received time of a message: the first relay's arrival time when one
/// handed it on (so `queue.max_age` and `delay_warning` keep counting from
/// there), never later than now (a clock ahead must not make mail younger).
fn arrival_or(arrival: Option<u64>, now: SystemTime) -> SystemTime {
    arrival
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .map_or(now, |at| at.min(now))
}

/// A BDAT message between chunks.
pub(super) struct BdatState {
    assembler: MessageAssembler,
    checker: ChunkChecker,
    header: HeaderCheck,
    pipe: SigningPipe,
    now: SystemTime,
}
