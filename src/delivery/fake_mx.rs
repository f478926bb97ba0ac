//! A small in-process receiving MTA on 127.0.0.1 (ephemeral port) for the
//! scheduler tests: plaintext ESMTP with PIPELINING, per-recipient answers
//! chosen by the local part (`reject…` ⇒ 550 5.1.1, `later…` ⇒ 451 4.3.0,
//! else 250), an optional pause before answering the end of DATA, and a
//! record of every message and of connection concurrency.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the fake MX accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: usize,
    pub active: usize,
    pub max_active: usize,
    pub data_started: usize,
    pub messages: Vec<Received>,
}

/// Handle: the port and what happened.
#[derive(Clone)]
pub struct FakeMx {
    pub port: u16,
    pub stats: Arc<Mutex<Stats>>,
}

impl FakeMx {
    /// Starts the server; `data_delay` is waited before the final DATA reply.
    pub async fn start(data_delay: Duration) -> FakeMx {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let s = stats.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    {
                        let mut st = s.lock().unwrap();
                        st.connections += 1;
                        st.active += 1;
                        st.max_active = st.max_active.max(st.active);
                    }
                    let _ = session(tcp, &s, data_delay).await;
                    s.lock().unwrap().active -= 1;
                });
            }
        });
        FakeMx { port, stats }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.stats.lock().unwrap().messages.clone()
    }
}

async fn session(tcp: TcpStream, stats: &Mutex<Stats>, delay: Duration) -> std::io::Result<()> {
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 fake.test ESMTP\r\n").await?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let arg = |prefix: &str| {
            let rest = &line[prefix.len()..];
            let end = rest.find('>').unwrap_or(rest.len());
            rest.trim_start_matches('<')[..end.saturating_sub(1)].to_string()
        };
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-fake.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = arg("MAIL FROM:");
            rcpts.clear();
            b"250 2.1.0 Ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            let to = arg("RCPT TO:");
            if to.starts_with("reject") {
                b"550 5.1.1 No such user\r\n"
            } else if to.starts_with("later") {
                b"451 4.3.0 Try again later\r\n"
            } else {
                rcpts.push(to);
                b"250 2.1.5 Ok\r\n"
            }
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go ahead\r\n").await?;
            stats.lock().unwrap().data_started += 1;
            let mut data = Vec::new();
            let mut byte = [0u8; 1];
            while !data.ends_with(b"\r\n.\r\n") {
                if r.read(&mut byte).await? == 0 {
                    return Ok(());
                }
                data.push(byte[0]);
            }
            data.truncate(data.len() - 3);
            tokio::time::sleep(delay).await;
            stats.lock().unwrap().messages.push(Received {
                from: from.clone(),
                rcpts: rcpts.clone(),
                data,
            });
            b"250 2.0.0 Ok: queued\r\n"
        } else if upper.starts_with("RSET") {
            b"250 2.0.0 Ok\r\n"
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.2 Unknown command\r\n"
        };
        w.write_all(reply).await?;
    }
}
