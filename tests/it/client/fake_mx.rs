//! A scripted fake MX for the client tests: in-process over a tokio duplex,
//! answers from a [`Script`] (whose `Default` is a happy ESMTP server) and
//! records everything it received in a [`Transcript`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_rustls::TlsAcceptor;

/// What the fake answers. Special replies: `STALL` never answers, `CLOSE`
/// closes without a word, `354 STALLREAD` (to DATA) accepts and stops
/// reading; a `421` reply is sent and then the link closed.
pub struct Script {
    pub greeting: String,
    /// Extensions advertised after the first EHLO line.
    pub extensions: Vec<String>,
    /// Answer to EHLO instead of the capability list (e.g. `502 …`).
    pub ehlo_reply: Option<String>,
    /// (command prefix, reply): first match wins, checked before the defaults.
    pub rules: Vec<(String, String)>,
    /// Replies to the end of data, one per message; then `250 2.0.0 Ok`.
    pub final_replies: VecDeque<String>,
    /// Present: STARTTLS is accepted and the stream upgraded with it.
    pub tls: Option<TlsAcceptor>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 mx.test ESMTP fake".into(),
            extensions: [
                "PIPELINING",
                "SIZE 10000000",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
            ]
            .map(String::from)
            .to_vec(),
            ehlo_reply: None,
            rules: Vec::new(),
            final_replies: VecDeque::new(),
            tls: None,
        }
    }
}

impl Script {
    pub fn rule(mut self, prefix: &str, reply: &str) -> Script {
        self.rules.push((prefix.to_string(), reply.to_string()));
        self
    }
    pub fn without(mut self, ext: &str) -> Script {
        self.extensions.retain(|e| !e.starts_with(ext));
        self
    }
    pub fn with(mut self, ext: &str) -> Script {
        self.extensions.push(ext.to_string());
        self
    }
}

/// What the fake saw.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    /// Command lines (without CRLF), `<TLS>` where the stream was upgraded.
    pub commands: Vec<String>,
    /// Commands grouped by the read that brought them in (pipelining shows).
    pub batches: Vec<Vec<String>>,
    /// Each message's data exactly as on the wire (DATA: stuffed, up to and
    /// excluding the final `.` line; BDAT: chunks concatenated).
    pub messages: Vec<Vec<u8>>,
    /// Data that never got its terminator (the client gave up).
    pub incomplete: Option<Vec<u8>>,
    /// BDAT command lines.
    pub bdat: Vec<String>,
}

pub type Shared = Arc<Mutex<Transcript>>;

/// Starts the fake on one end of a duplex; returns the client's end.
pub fn start(script: Script) -> (DuplexStream, Shared) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let transcript = Shared::default();
    let t = transcript.clone();
    tokio::spawn(async move { run(server, script, t).await });
    (client, transcript)
}

async fn run(io: DuplexStream, mut script: Script, t: Shared) {
    let mut conn = Conn {
        io,
        buf: Vec::new(),
        batch: 0,
        t: t.clone(),
    };
    if !conn.send(&script.greeting.clone()).await {
        return;
    }
    if let Some(plain) = serve(conn, &mut script).await {
        let Some(acceptor) = script.tls.clone() else {
            return;
        };
        let Ok(tls) = acceptor.accept(plain).await else {
            return;
        };
        t.lock().unwrap().commands.push("<TLS>".into());
        let conn = Conn {
            io: tls,
            buf: Vec::new(),
            batch: 0,
            t,
        };
        serve(conn, &mut script).await;
    }
}

struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    batch: usize,
    t: Shared,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 1 << 16];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.batch += 1;
                true
            }
        }
    }

    /// One CRLF line, recorded as a command in its read batch.
    async fn command(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                let mut t = self.t.lock().unwrap();
                t.commands.push(line.clone());
                if t.batches.len() < self.batch {
                    t.batches.resize(self.batch, Vec::new());
                }
                t.batches[self.batch - 1].push(line.clone());
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Sends a reply; false when the session is over (`CLOSE`, `421`, error).
    async fn send(&mut self, reply: &str) -> bool {
        match reply {
            "STALL" => std::future::pending::<bool>().await,
            "CLOSE" => false,
            _ => {
                let ok = self
                    .io
                    .write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .is_ok();
                ok && !reply.starts_with("421")
            }
        }
    }

    /// DATA content up to `CRLF.CRLF` (kept stuffed), or None if the link died.
    async fn data(&mut self) -> Option<Vec<u8>> {
        // Where the terminator search resumes, so big bodies stay linear.
        let mut from = 0;
        loop {
            let end = if self.buf.starts_with(b".\r\n") {
                Some((0, 3))
            } else {
                self.buf[from..]
                    .windows(5)
                    .position(|w| w == b"\r\n.\r\n")
                    .map(|p| (from + p + 2, from + p + 5))
            };
            if let Some((body_end, consumed)) = end {
                let body = self.buf[..body_end].to_vec();
                self.buf.drain(..consumed);
                return Some(body);
            }
            from = self.buf.len().saturating_sub(4);
            if !self.fill().await {
                self.t.lock().unwrap().incomplete = Some(std::mem::take(&mut self.buf));
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                self.t.lock().unwrap().incomplete = Some(std::mem::take(&mut self.buf));
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

fn rule_for(script: &Script, cmd: &str) -> Option<String> {
    let upper = cmd.to_ascii_uppercase();
    script
        .rules
        .iter()
        .find(|(prefix, _)| upper.starts_with(&prefix.to_ascii_uppercase()))
        .map(|(_, r)| r.clone())
}

fn ehlo_reply(script: &Script) -> String {
    if let Some(r) = &script.ehlo_reply {
        return r.clone();
    }
    let mut lines = vec!["250-mx.test greets you".to_string()];
    if script.tls.is_some() {
        lines.push("250-STARTTLS".into());
    }
    lines.extend(script.extensions.iter().map(|e| format!("250-{e}")));
    lines.push("250 HELP".into());
    lines.join("\r\n")
}

/// Serves commands; returns the plain stream when STARTTLS was accepted.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut c: Conn<S>,
    script: &mut Script,
) -> Option<S> {
    let mut bdat_body: Vec<u8> = Vec::new();
    while let Some(cmd) = c.command().await {
        let verb = cmd
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let ruled = rule_for(script, &cmd);
        let reply = match (verb.as_str(), ruled) {
            (_, Some(r)) if verb != "DATA" && verb != "BDAT" => r,
            ("EHLO", None) => ehlo_reply(script),
            ("HELO", None) => "250 mx.test".into(),
            ("STARTTLS", None) => {
                if script.tls.is_none() || !c.send("220 2.0.0 Ready to start TLS").await {
                    return None;
                }
                return Some(c.io);
            }
            ("MAIL", None) => "250 2.1.0 Ok".into(),
            ("RCPT", None) => "250 2.1.5 Ok".into(),
            ("DATA", ruled) => {
                let first = ruled.unwrap_or_else(|| "354 End data with <CR><LF>.<CR><LF>".into());
                if first == "354 STALLREAD" {
                    // Accept DATA, then never read again: the client's writes back up.
                    let _ = c.send("354 go ahead").await;
                    std::future::pending::<()>().await;
                }
                if !first.starts_with("354") {
                    if !c.send(&first).await {
                        return None;
                    }
                    continue;
                }
                if !c.send(&first).await {
                    return None;
                }
                let body = c.data().await?;
                c.t.lock().unwrap().messages.push(body);
                script
                    .final_replies
                    .pop_front()
                    .unwrap_or_else(|| "250 2.0.0 Ok: queued".into())
            }
            ("BDAT", ruled) => {
                c.t.lock().unwrap().bdat.push(cmd.clone());
                let mut parts = cmd.split_whitespace().skip(1);
                let size: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let last = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("LAST"));
                let chunk = c.exact(size).await?;
                if let Some(r) = ruled {
                    // RFC 3030: a refused chunk voids the whole message.
                    bdat_body.clear();
                    if !c.send(&r).await {
                        return None;
                    }
                    continue;
                }
                bdat_body.extend_from_slice(&chunk);
                if last {
                    c.t.lock()
                        .unwrap()
                        .messages
                        .push(std::mem::take(&mut bdat_body));
                    script
                        .final_replies
                        .pop_front()
                        .unwrap_or_else(|| "250 2.0.0 Ok: queued".into())
                } else {
                    format!("250 2.0.0 {size} octets received")
                }
            }
            ("RSET", None) => {
                bdat_body.clear();
                "250 2.0.0 Ok".into()
            }
            ("QUIT", None) => {
                let _ = c.send("221 2.0.0 Bye").await;
                return None;
            }
            _ => "502 5.5.2 Error: command not recognized".into(),
        };
        if !c.send(&reply).await {
            return None;
        }
    }
    None
}
