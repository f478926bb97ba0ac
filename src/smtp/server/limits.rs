//! Abuse limits of `[limits]` that need shared state or byte counting
//! (README "Configuration", `[limits]`): concurrent connections and connection rate per client address
//! ([`ClientLimiter`]), mail transactions per authenticated user
//! ([`UserRate`], a GCRA from `governor`), and the header section size and
//! field count of a message ([`HeaderCheck`], sans I/O). Every map here is
//! bounded, so an address scan or a login spray cannot grow memory without
//! limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::metrics::LimitHit;
use crate::sync::lock;

/// Keys kept by a keyed rate limiter before stale ones are swept.
const MAX_KEYS: usize = 100_000;

/// `n` events per `period`, with a burst of `n` (so the first `n` are never
/// delayed). `n` = 0 is treated as 1 (validation refuses 0 anyway).
fn quota(n: u32, period: Duration) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let per_cell = (period / n.get()).max(Duration::from_nanos(1));
    Quota::with_period(per_cell)
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

fn sweep<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>) {
    if limiter.len() >= MAX_KEYS {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Per client address: concurrent connections and new connections per minute.
pub struct ClientLimiter {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    rate: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("max_per_ip", &self.max_per_ip)
            .finish_non_exhaustive()
    }
}

/// Holds one connection slot of an address; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    limiter: Arc<ClientLimiter>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.limiter.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ClientLimiter {
    pub fn new(max_per_ip: usize, per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip,
            open: Mutex::new(HashMap::new()),
            rate: RateLimiter::hashmap(quota(per_minute, Duration::from_secs(60))),
        })
    }

    /// Admits a new connection from `ip` or names the limit it hit. Every
    /// attempt counts against the rate, refused ones included.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, LimitHit> {
        sweep(&self.rate);
        if self.rate.check_key(&ip).is_err() {
            return Err(LimitHit::ConnectionRate);
        }
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(LimitHit::ConnectionsPerIp);
        }
        *n += 1;
        Ok(IpSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        lock(&self.open).get(&ip).copied().unwrap_or(0)
    }
}

/// Mail transactions per authenticated user per hour.
pub struct UserRate {
    rate: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for UserRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRate").finish_non_exhaustive()
    }
}

impl UserRate {
    pub fn per_hour(n: u32) -> Arc<Self> {
        Arc::new(Self {
            rate: RateLimiter::hashmap(quota(n, Duration::from_secs(3600))),
        })
    }

    /// True when `user` may start another transaction now (and counts it).
    pub fn allow(&self, user: &str) -> bool {
        sweep(&self.rate);
        self.rate.check_key(&user.to_ascii_lowercase()).is_ok()
    }
}

/// Why a header section was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderViolation {
    TooLarge,
    TooManyFields,
}

/// Counts the header section (RFC 5322 §2.2: fields up to the first empty
/// line; a line starting with SP/HT continues the previous field) as content
/// streams past, without buffering it.
#[derive(Debug, Clone)]
pub struct HeaderCheck {
    max_size: u64,
    max_fields: usize,
    size: u64,
    fields: usize,
    /// At the start of a line (after LF, or at the very start).
    line_start: bool,
    /// The current line so far is only `\r` (a candidate empty line).
    only_cr: bool,
    done: bool,
    violation: Option<HeaderViolation>,
}

impl HeaderCheck {
    pub fn new(max_size: u64, max_fields: usize) -> Self {
        Self {
            max_size,
            max_fields,
            size: 0,
            fields: 0,
            line_start: true,
            only_cr: false,
            done: false,
            violation: None,
        }
    }

    /// Feeds message content (after dot-unstuffing).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done || self.violation.is_some() {
                return;
            }
            self.size += 1;
            if self.line_start {
                self.line_start = false;
                match b {
                    b'\r' => {
                        self.only_cr = true;
                        continue;
                    }
                    b'\n' => {
                        self.done = true; // bare empty line; flagged elsewhere
                        continue;
                    }
                    b' ' | b'\t' => {}
                    _ => self.fields += 1,
                }
            }
            if b == b'\n' {
                if self.only_cr {
                    self.done = true;
                    continue;
                }
                self.line_start = true;
            }
            self.only_cr = false;
            if self.fields > self.max_fields {
                self.violation = Some(HeaderViolation::TooManyFields);
            } else if self.size > self.max_size {
                self.violation = Some(HeaderViolation::TooLarge);
            }
        }
    }

    pub fn violation(&self) -> Option<HeaderViolation> {
        self.violation
    }

    /// Header fields seen so far.
    pub fn fields(&self) -> usize {
        self.fields
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_released_on_drop() {
        let l = ClientLimiter::new(2, 1000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.admit(a).unwrap();
        let _s2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), LimitHit::ConnectionsPerIp);
        let _sb = l.admit(b).unwrap();
        drop(s1);
        assert_eq!(l.open(a), 1);
        let _s3 = l.admit(a).unwrap();
    }

    #[test]
    fn connection_rate_counts_attempts_per_ip() {
        let l = ClientLimiter::new(100, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            drop(l.admit(a).unwrap());
        }
        assert_eq!(l.admit(a).unwrap_err(), LimitHit::ConnectionRate);
        assert!(l.admit("192.0.2.9".parse().unwrap()).is_ok());
    }

    #[test]
    fn user_rate_is_per_user_and_case_insensitive() {
        let r = UserRate::per_hour(2);
        assert!(r.allow("alice@example.com"));
        assert!(r.allow("Alice@Example.com"));
        assert!(!r.allow("alice@example.com"));
        assert!(r.allow("bob@example.com"));
    }

    fn check(input: &[u8], size: u64, fields: usize) -> (Option<HeaderViolation>, usize) {
        let mut c = HeaderCheck::new(size, fields);
        c.feed(input);
        (c.violation(), c.fields())
    }

    #[test]
    fn header_fields_counted_with_folding_and_body_ignored() {
        let msg = b"A: 1\r\nB: 2\r\n  folded\r\n\tmore\r\nC: 3\r\n\r\nX: not a header\r\n";
        assert_eq!(check(msg, 1000, 3), (None, 3));
        assert_eq!(check(msg, 1000, 2).0, Some(HeaderViolation::TooManyFields));
        assert_eq!(check(msg, 20, 10).0, Some(HeaderViolation::TooLarge));
        // The body may be as large as it likes.
        let mut big = b"A: 1\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 10_000));
        assert_eq!(check(&big, 100, 10), (None, 1));
        // Split anywhere: same answer.
        for cut in 0..msg.len() {
            let mut c = HeaderCheck::new(1000, 2);
            c.feed(&msg[..cut]);
            c.feed(&msg[cut..]);
            assert_eq!(c.violation(), Some(HeaderViolation::TooManyFields));
        }
    }
}
