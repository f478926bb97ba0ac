//! An in-process [`DnsLookup`] for tests (unit tests, and `tests/it` through
//! the `test-util` feature; never in a release build): a table of answers, CNAMEs
//! followed like a recursive resolver would (the chain is secure only if
//! every link is), and a log of the queries asked so tests can assert order.
//! Names never set answer NXDOMAIN; a name with some other type answers NODATA.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use super::types::{
    normalize_name, Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, Mx, Record, RecordType,
    Security, Tlsa,
};

#[derive(Debug, Clone)]
enum Entry {
    Records(Vec<Record>, Security),
    NoData(Security),
    NxDomain(Security),
    ServFail,
    Bogus,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<(String, RecordType), Entry>,
    queries: Vec<(String, RecordType)>,
    ttl: u32,
}

/// The fake resolver. Setters take `&self` so a test can share it behind an
/// `Arc` and still change it.
#[derive(Debug, Default)]
pub struct FakeDns {
    state: Mutex<State>,
}

/// A test's mistyped address literal fails that test at once, loudly.
fn parse<T: std::str::FromStr>(s: &str) -> T {
    match s.parse() {
        Ok(v) => v,
        Err(_) => panic!("FakeDns: bad literal {s:?}"),
    }
}

impl FakeDns {
    pub fn new() -> Self {
        let fake = FakeDns::default();
        fake.set_ttl(300);
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, name: &str, rtype: RecordType, entry: Entry) -> &Self {
        self.state()
            .entries
            .insert((normalize_name(name), rtype), entry);
        self
    }

    /// TTL of every answer from now on.
    pub fn set_ttl(&self, ttl: u32) -> &Self {
        self.state().ttl = ttl;
        self
    }

    pub fn records(
        &self,
        name: &str,
        rtype: RecordType,
        security: Security,
        records: Vec<Record>,
    ) -> &Self {
        self.set(name, rtype, Entry::Records(records, security))
    }

    /// `("", 0)` is the RFC 7505 null MX.
    pub fn mx(&self, name: &str, security: Security, mx: &[(u16, &str)]) -> &Self {
        let records = mx
            .iter()
            .map(|(preference, exchange)| {
                Record::Mx(Mx {
                    preference: *preference,
                    exchange: normalize_name(exchange),
                })
            })
            .collect();
        self.records(name, RecordType::Mx, security, records)
    }

    pub fn a(&self, name: &str, security: Security, addrs: &[&str]) -> &Self {
        let records = addrs
            .iter()
            .map(|a| Record::A(parse::<Ipv4Addr>(a)))
            .collect();
        self.records(name, RecordType::A, security, records)
    }

    pub fn aaaa(&self, name: &str, security: Security, addrs: &[&str]) -> &Self {
        let records = addrs
            .iter()
            .map(|a| Record::Aaaa(parse::<Ipv6Addr>(a)))
            .collect();
        self.records(name, RecordType::Aaaa, security, records)
    }

    pub fn tlsa(&self, name: &str, security: Security, tlsa: Vec<Tlsa>) -> &Self {
        self.records(
            name,
            RecordType::Tlsa,
            security,
            tlsa.into_iter().map(Record::Tlsa).collect(),
        )
    }

    /// One TXT record per string (each a single character-string).
    pub fn txt(&self, name: &str, security: Security, texts: &[&str]) -> &Self {
        let records = texts
            .iter()
            .map(|t| Record::Txt(vec![t.as_bytes().to_vec()]))
            .collect();
        self.records(name, RecordType::Txt, security, records)
    }

    pub fn cname(&self, name: &str, security: Security, target: &str) -> &Self {
        self.records(
            name,
            RecordType::Cname,
            security,
            vec![Record::Cname(normalize_name(target))],
        )
    }

    pub fn nodata(&self, name: &str, rtype: RecordType, security: Security) -> &Self {
        self.set(name, rtype, Entry::NoData(security))
    }

    pub fn nxdomain(&self, name: &str, rtype: RecordType, security: Security) -> &Self {
        self.set(name, rtype, Entry::NxDomain(security))
    }

    pub fn servfail(&self, name: &str, rtype: RecordType) -> &Self {
        self.set(name, rtype, Entry::ServFail)
    }

    pub fn bogus(&self, name: &str, rtype: RecordType) -> &Self {
        self.set(name, rtype, Entry::Bogus)
    }

    /// Every query asked so far, in order (normalised names).
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.state().queries.clone()
    }

    fn answer(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        let qname = normalize_name(name);
        let mut state = self.state();
        state.queries.push((qname.clone(), rtype));
        let mut current = qname.clone();
        let mut chain_security = Security::Secure;
        for _ in 0..16 {
            let entry = state.entries.get(&(current.clone(), rtype)).cloned();
            let cname = state
                .entries
                .get(&(current.clone(), RecordType::Cname))
                .cloned();
            let entry = match (entry, cname) {
                (Some(e), _) => e,
                (None, Some(Entry::Records(records, security))) if rtype != RecordType::Cname => {
                    if let Some(Record::Cname(target)) = records.first() {
                        chain_security = chain_security.and(security);
                        current = target.clone();
                        continue;
                    }
                    Entry::NoData(security)
                }
                (None, _) => {
                    let exists = state.entries.keys().any(|(n, _)| *n == current);
                    if exists {
                        Entry::NoData(Security::Insecure)
                    } else {
                        Entry::NxDomain(Security::Insecure)
                    }
                }
            };
            let (kind, security) = match entry {
                Entry::Records(r, s) => (AnswerKind::Records(r), s),
                Entry::NoData(s) => (AnswerKind::NoData, s),
                Entry::NxDomain(s) => (AnswerKind::NxDomain, s),
                Entry::ServFail => return Err(DnsError::ServFail { name: qname, rtype }),
                Entry::Bogus => {
                    return Err(DnsError::Bogus {
                        name: qname,
                        rtype,
                        detail: "fake bogus".into(),
                    })
                }
            };
            return Ok(Answer {
                name: qname,
                rtype,
                canonical_name: current,
                kind,
                security: chain_security.and(security),
                ttl: state.ttl,
            });
        }
        Err(DnsError::ServFail { name: qname, rtype })
    }
}

impl DnsLookup for FakeDns {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        let result = self.answer(name, rtype);
        super::log_result(name, rtype, &result);
        Box::pin(std::future::ready(result))
    }
}
