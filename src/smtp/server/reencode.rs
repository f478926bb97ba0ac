//! What is accepted is deliverable (issue #18): every message is scanned on
//! its way into the store ([`crate::mime`]), and one with lines over 998
//! octets is re-encoded before it is committed — or refused with `550 5.6.0`,
//! before any `250`, when that cannot be done without changing its content.
//! The scan also records what the content really is: `body_8bit` when it has
//! 8-bit octets, and `smtputf8` only when an address or a header needs it
//! (RFC 6531 §3.2), so delivery can tell what a peer must support.
//!
//! [`Reencoding`] wraps the real store. A whole (small) body is rewritten in
//! memory; a streamed one goes to the store *and* to an unlinked temporary file
//! while it is scanned, and only when the scan calls for a rewrite is the
//! store's copy dropped and the temporary file streamed through the apply
//! pass into a fresh sink with the same id. Memory stays bounded either way.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::sync::Arc;

use super::store::{MessageSink, MessageStore, StoreError, Submitted, WholeDone};
use crate::mime::{self, Report, Walker, Want};
use crate::smtp::Reply;

/// A [`MessageStore`] that re-encodes what needs it; see the module docs.
pub struct Reencoding {
    inner: Arc<dyn MessageStore>,
}

impl Reencoding {
    pub fn new(inner: Arc<dyn MessageStore>) -> Reencoding {
        Reencoding { inner }
    }
}

/// Records what the content is in the envelope.
fn note_content(msg: &mut Submitted, report: &Report) {
    let tx = &mut msg.tx;
    tx.body_8bit = report.eight_bit;
    let addresses_ascii =
        tx.sender.is_ascii() && tx.recipients.iter().all(|r| r.address.is_ascii());
    tx.smtputf8 &= report.header_eight_bit || !addresses_ascii;
}

fn refused(r: &mime::Refusal) -> StoreError {
    StoreError::refused(format!("Message cannot be re-encoded for delivery: {r}"))
}

impl MessageStore for Reencoding {
    fn begin(&self, id: Option<&str>) -> Result<Box<dyn MessageSink>, StoreError> {
        let spool = tempfile::tempfile().map_err(StoreError::new)?;
        Ok(Box::new(ReencodingSink {
            store: self.inner.clone(),
            id: id.map(str::to_string),
            sink: self.inner.begin(id)?,
            spool: BufWriter::with_capacity(64 * 1024, spool),
            scan: Walker::scan(),
        }))
    }

    fn reserve(&self) -> Option<String> {
        self.inner.reserve()
    }

    fn whole_body_max(&self) -> usize {
        self.inner.whole_body_max()
    }

    fn refusal(&self) -> Option<Reply> {
        self.inner.refusal()
    }

    fn store_whole(&self, id: Option<&str>, body: Vec<u8>, mut msg: Submitted, done: WholeDone) {
        let report = mime::scan(&body);
        note_content(&mut msg, &report);
        match mime::plan(&report, Want::SHORT_LINES) {
            Err(r) => done(Err(refused(&r))),
            Ok(None) => self.inner.store_whole(id, body, msg, done),
            Ok(Some(actions)) => {
                let mut out = Vec::with_capacity(body.len() + body.len() / 4);
                if let Err(e) = mime::apply_stream(body.as_slice(), actions, &mut out) {
                    return done(Err(StoreError::new(e)));
                }
                tracing::info!(
                    from = body.len(),
                    to = out.len(),
                    "re-encoded over-long lines"
                );
                self.inner.store_whole(id, out, msg, done)
            }
        }
    }
}

struct ReencodingSink {
    store: Arc<dyn MessageStore>,
    id: Option<String>,
    sink: Box<dyn MessageSink>,
    spool: BufWriter<File>,
    scan: Walker,
}

impl Write for ReencodingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.scan.feed(data, &mut Vec::new());
        self.sink.write_all(data)?;
        self.spool.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()?;
        self.spool.flush()
    }
}

impl MessageSink for ReencodingSink {
    fn commit(self: Box<Self>, mut msg: Submitted) -> Result<String, StoreError> {
        let ReencodingSink {
            store,
            id,
            sink,
            spool,
            mut scan,
        } = *self;
        scan.finish(&mut Vec::new());
        let report = scan.into_report();
        note_content(&mut msg, &report);
        let actions = match mime::plan(&report, Want::SHORT_LINES) {
            Err(r) => return Err(refused(&r)),
            Ok(None) => return sink.commit(msg),
            Ok(Some(actions)) => actions,
        };
        // Abort the verbatim copy first: a fresh sink reuses its id.
        drop(sink);
        let mut file = spool.into_inner().map_err(|e| StoreError::new(e.error()))?;
        file.rewind().map_err(StoreError::new)?;
        let mut fresh = store.begin(id.as_deref())?;
        let size = mime::apply_stream(
            BufReader::with_capacity(64 * 1024, file),
            actions,
            &mut fresh,
        )
        .map_err(StoreError::new)?;
        fresh.flush().map_err(StoreError::new)?;
        tracing::info!(to = size, "re-encoded over-long lines");
        fresh.commit(msg)
    }
}
