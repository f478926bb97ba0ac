//! A minimal SMTP sink on 127.0.0.1: accepts every message with 250 and
//! records it with the epoch (the relay run) it arrived in.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Delivery {
    pub epoch: usize,
    pub data: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Sink {
    pub port: u16,
    pub epoch: Arc<AtomicUsize>,
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

impl Sink {
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = Sink {
            port: listener.local_addr().unwrap().port(),
            ..Sink::default()
        };
        let s = sink.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = s.serve(conn);
                });
            }
        });
        sink
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        let mut r = BufReader::new(conn.try_clone()?);
        let mut w = conn;
        w.write_all(b"220 sink.test ESMTP\r\n")?;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => w.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?,
                "DATA" => {
                    w.write_all(b"354 go ahead\r\n")?;
                    let mut data = Vec::new();
                    let mut l = Vec::new();
                    loop {
                        l.clear();
                        if r.read_until(b'\n', &mut l)? == 0 {
                            return Ok(());
                        }
                        if l == b".\r\n" {
                            break;
                        }
                        let start = usize::from(l.starts_with(b".."));
                        data.extend_from_slice(&l[start..]);
                    }
                    // Recorded before the 250: a delivery the relay saw
                    // confirmed is always on record.
                    let epoch = self.epoch.load(Ordering::SeqCst);
                    self.got.lock().unwrap().push(Delivery { epoch, data });
                    w.write_all(b"250 2.0.0 ok\r\n")?;
                }
                "QUIT" => {
                    w.write_all(b"221 bye\r\n")?;
                    return Ok(());
                }
                _ => w.write_all(b"250 ok\r\n")?,
            }
        }
    }
}
