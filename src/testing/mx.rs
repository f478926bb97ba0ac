//! The fake MX: a receiving MTA that answers from a [`Script`] (whose
//! `Default` is a happy ESMTP server) and records everything it received in
//! a [`Transcript`]. It serves one in-memory duplex ([`start`], for the
//! client tests) or every connection to a port on 127.0.0.1
//! ([`FakeMx::listen`], for the delivery tests).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the fake answers. Special replies: `STALL` never answers, `CLOSE`
/// closes without a word, `354 STALLREAD` (to DATA) accepts and stops
/// reading; a `421` reply is sent and then the link closed.
#[derive(Clone)]
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
    /// Waited before answering the end of a message's data.
    pub data_delay: Duration,
    /// Greetings shared by every connection, taken in turn before
    /// `greeting` (e.g. the first connection gets a 421).
    pub greetings: Option<Arc<Mutex<VecDeque<String>>>>,
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
            data_delay: Duration::ZERO,
            greetings: None,
        }
    }
}

impl Script {
    /// A plain receiving MTA that answers each recipient by its local part:
    /// `reject…` 550 5.1.1, `later…` 451 4.3.0, anything else 250.
    pub fn by_local_part() -> Script {
        Script {
            extensions: ["PIPELINING", "8BITMIME", "SIZE 100000000"]
                .map(String::from)
                .to_vec(),
            ..Script::default()
        }
        .rule("RCPT TO:<reject", "550 5.1.1 No such user")
        .rule("RCPT TO:<later", "451 4.3.0 Try again later")
    }

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

/// One message the fake accepted, with its envelope.
#[derive(Debug, Clone)]
pub struct Received {
    /// `MAIL FROM` (`""` for the null sender).
    pub from: String,
    /// The `RCPT TO`s that were accepted.
    pub rcpts: Vec<String>,
    /// As in [`Transcript::messages`].
    pub data: Vec<u8>,
    /// When the fake accepted it (real time: rates are measured on it).
    pub at: std::time::Instant,
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
    /// Every accepted message with its envelope.
    pub received: Vec<Received>,
    /// Connections accepted in all, open now, and most open at once.
    pub connections: usize,
    pub active: usize,
    pub max_active: usize,
    /// DATA commands answered 354.
    pub data_started: usize,
}

pub type Shared = Arc<Mutex<Transcript>>;

/// A fake MX listening on 127.0.0.1: its port and what it saw.
#[derive(Clone)]
pub struct FakeMx {
    pub port: u16,
    pub transcript: Shared,
}

impl FakeMx {
    /// Serves every connection with its own copy of `script`.
    pub async fn listen(script: Script) -> FakeMx {
        FakeMx::listen_on("127.0.0.1:0", script).await
    }

    /// [`FakeMx::listen`] on a given address (a second MX host on another
    /// 127/8 address, same port).
    pub async fn listen_on(address: &str, script: Script) -> FakeMx {
        let listener = TcpListener::bind(address).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let transcript = Shared::default();
        let t = transcript.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (t, script) = (t.clone(), script.clone());
                tokio::spawn(async move {
                    {
                        let mut st = t.lock().unwrap();
                        st.connections += 1;
                        st.active += 1;
                        st.max_active = st.max_active.max(st.active);
                    }
                    run(tcp, script, t.clone()).await;
                    t.lock().unwrap().active -= 1;
                });
            }
        });
        FakeMx { port, transcript }
    }

    /// [`Script::by_local_part`], waiting `data_delay` before each final reply.
    pub async fn start(data_delay: Duration) -> FakeMx {
        FakeMx::listen(Script {
            data_delay,
            ..Script::by_local_part()
        })
        .await
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.transcript.lock().unwrap().received.clone()
    }
}

/// Starts the fake on one end of a duplex; returns the client's end.
pub fn start(script: Script) -> (DuplexStream, Shared) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let transcript = Shared::default();
    let t = transcript.clone();
    tokio::spawn(async move { run(server, script, t).await });
    (client, transcript)
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(io: S, mut script: Script, t: Shared) {
    let mut conn = Conn {
        io,
        buf: Vec::new(),
        batch: 0,
        t: t.clone(),
    };
    let shared = script
        .greetings
        .as_ref()
        .and_then(|g| g.lock().unwrap().pop_front());
    if !conn
        .send(&shared.unwrap_or_else(|| script.greeting.clone()))
        .await
    {
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

    /// Records an accepted message: its data and its envelope.
    fn received(&self, from: &str, rcpts: &[String], data: Vec<u8>) {
        let mut t = self.t.lock().unwrap();
        t.messages.push(data.clone());
        t.received.push(Received {
            from: from.to_string(),
            rcpts: rcpts.to_vec(),
            data,
            at: std::time::Instant::now(),
        });
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

/// The path of `MAIL FROM:<…>` / `RCPT TO:<…>` (`""` for `<>`).
fn address(cmd: &str) -> String {
    let path = cmd.split_once(':').map_or("", |(_, p)| p.trim_start());
    let path = path.strip_prefix('<').unwrap_or(path);
    let end = path.find(['>', ' ']).unwrap_or(path.len());
    path[..end].to_string()
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
    let (mut from, mut rcpts) = (String::new(), Vec::new());
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
            ("DATA", ruled) => match on_data(&mut c, script, ruled, &from, &rcpts).await {
                Step::Reply(r) => r,
                Step::Replied => continue,
                Step::Close => return None,
            },
            ("BDAT", ruled) => {
                match on_bdat(&mut c, script, &cmd, ruled, &mut bdat_body, (&from, &rcpts)).await {
                    Step::Reply(r) => r,
                    Step::Replied => continue,
                    Step::Close => return None,
                }
            }
            ("RSET", None) => {
                bdat_body.clear();
                rcpts.clear();
                "250 2.0.0 Ok".into()
            }
            ("QUIT", None) => {
                let _ = c.send("221 2.0.0 Bye").await;
                return None;
            }
            _ => "502 5.5.2 Error: command not recognized".into(),
        };
        if reply.starts_with('2') && verb == "MAIL" {
            from = address(&cmd);
            rcpts.clear();
        } else if reply.starts_with('2') && verb == "RCPT" {
            rcpts.push(address(&cmd));
        }
        if !c.send(&reply).await {
            return None;
        }
    }
    None
}

/// What a command handler left to do.
enum Step {
    /// Send this reply.
    Reply(String),
    /// Already answered.
    Replied,
    /// Drop the connection.
    Close,
}

/// DATA: the scripted first reply, the body, then the final reply.
async fn on_data<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conn<S>,
    script: &mut Script,
    ruled: Option<String>,
    from: &str,
    rcpts: &[String],
) -> Step {
    let first = ruled.unwrap_or_else(|| "354 End data with <CR><LF>.<CR><LF>".into());
    if first == "354 STALLREAD" {
        // Accept DATA, then never read again: the client's writes back up.
        let _ = c.send("354 go ahead").await;
        std::future::pending::<()>().await;
    }
    if !c.send(&first).await {
        return Step::Close;
    }
    if !first.starts_with("354") {
        return Step::Replied;
    }
    c.t.lock().unwrap().data_started += 1;
    let Some(body) = c.data().await else {
        return Step::Close;
    };
    if !script.data_delay.is_zero() {
        tokio::time::sleep(script.data_delay).await;
    }
    c.received(from, rcpts, body);
    Step::Reply(final_reply(script))
}

/// BDAT: one chunk; the LAST one completes the message (RFC 3030).
async fn on_bdat<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conn<S>,
    script: &mut Script,
    cmd: &str,
    ruled: Option<String>,
    body: &mut Vec<u8>,
    (from, rcpts): (&str, &[String]),
) -> Step {
    c.t.lock().unwrap().bdat.push(cmd.to_string());
    let mut parts = cmd.split_whitespace().skip(1);
    let size: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let last = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("LAST"));
    let Some(chunk) = c.exact(size).await else {
        return Step::Close;
    };
    if let Some(r) = ruled {
        // RFC 3030: a refused chunk voids the whole message.
        body.clear();
        return if c.send(&r).await {
            Step::Replied
        } else {
            Step::Close
        };
    }
    body.extend_from_slice(&chunk);
    if !last {
        return Step::Reply(format!("250 2.0.0 {size} octets received"));
    }
    c.received(from, rcpts, std::mem::take(body));
    Step::Reply(final_reply(script))
}

fn final_reply(script: &mut Script) -> String {
    script
        .final_replies
        .pop_front()
        .unwrap_or_else(|| "250 2.0.0 Ok: queued".into())
}
