//! `dns.dnssec = "trust-ad"` (the Postfix model) and `"off"`: one query per
//! lookup to the configured recursive resolver(s) through hickory-net's
//! low-level client, UDP first and TCP when the reply is truncated
//! (RFC 7766 §5).
//!
//! In `trust-ad` mode every query carries AD=1 (RFC 6840 §5.7: ask for the
//! AD bit) and DO=1 (RFC 3225), and the reply's AD bit *is* the status:
//! AD=1 ⇒ [`Security::Secure`], AD=0 ⇒ [`Security::Insecure`], SERVFAIL ⇒
//! temporary failure (a validating resolver answers SERVFAIL for bogus data,
//! RFC 4035 §5.5). hickory-resolver's high-level API never sets AD, which is
//! why this module talks to the wire itself. The resolver must be trusted and
//! the path to it secure (loopback or a local network), as RFC 7672 §1.3 and
//! Postfix assume.
//!
//! In `off` mode neither bit is sent and everything is `Insecure`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::FirstAnswer;
use hickory_net::{DnsHandle, NetError};
use hickory_proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Edns, Message, Query, ResponseCode,
};
use hickory_proto::rr::{RData, Record as HRecord};
use tracing::debug;

use super::types::{
    normalize_name, Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, RecordType, Security,
};
use super::wire::{follow_chain, min_ttl, to_fqdn, to_hickory_type, wire_name};

/// Whether the AD bit is asked for and trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdMode {
    TrustAd,
    Off,
}

/// The wire client for `trust-ad` and `off`.
#[derive(Debug, Clone)]
pub struct TrustAdResolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    mode: AdMode,
}

impl TrustAdResolver {
    /// `servers` are tried in order when one does not answer (timeouts,
    /// transport errors, REFUSED); an answer, even SERVFAIL, is final.
    pub fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        mode: AdMode,
    ) -> Result<Self, DnsError> {
        if servers.is_empty() {
            return Err(DnsError::Setup {
                detail: "no name servers configured".into(),
            });
        }
        Ok(TrustAdResolver {
            servers,
            timeout,
            mode,
        })
    }

    fn request(&self, qname: &str, rtype: RecordType) -> Result<DnsRequest, DnsError> {
        let mut message = Message::query();
        message.add_query(Query::query(to_fqdn(qname)?, to_hickory_type(rtype)));
        message.metadata.recursion_desired = true;
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if self.mode == AdMode::TrustAd {
            // RFC 6840 §5.7: AD=1 in a query asks for the AD bit in the reply.
            message.metadata.authentic_data = true;
            edns.set_dnssec_ok(true);
        }
        message.set_edns(edns);
        let mut options = DnsRequestOptions::default();
        options.edns_set_dnssec_ok = self.mode == AdMode::TrustAd;
        options.edns_payload_len = 1232;
        Ok(DnsRequest::new(message, options))
    }

    async fn resolve(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        let request = self.request(name, rtype)?;
        let mut last = DnsError::Setup {
            detail: "no name servers".into(),
        };
        for server in &self.servers {
            match exchange(*server, request.clone(), self.timeout).await {
                Ok(response) => match interpret(name, rtype, response.into_message(), self.mode) {
                    Err(DnsError::ResponseCode { code, .. }) if code == "REFUSED" => {
                        last = DnsError::ResponseCode {
                            name: normalize_name(name),
                            rtype,
                            code,
                        };
                    }
                    result => return result,
                },
                Err(NetError::Timeout) => {
                    last = DnsError::Timeout {
                        name: normalize_name(name),
                        rtype,
                    }
                }
                Err(e) => {
                    last = DnsError::Transport {
                        name: normalize_name(name),
                        rtype,
                        detail: format!("{server}: {e}"),
                    }
                }
            }
        }
        Err(last)
    }
}

impl DnsLookup for TrustAdResolver {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            let result = self.resolve(name, rtype).await;
            super::log_result(name, rtype, &result);
            result
        })
    }
}

/// One query to `server` through hickory-net's client: UDP, then TCP when
/// the reply is truncated (RFC 7766 §5); `timeout` per transport.
pub(super) async fn exchange(
    server: SocketAddr,
    request: DnsRequest,
    timeout: Duration,
) -> Result<DnsResponse, NetError> {
    let provider = TokioRuntimeProvider::default();
    let udp = UdpClientStream::builder(server, provider.clone())
        .with_timeout(Some(timeout))
        .exchange();
    let response = udp.send(request.clone()).first_answer().await?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    debug!(%server, "truncated UDP reply, retrying over TCP");
    let tcp = TcpClientStream::exchange(server, None, timeout, None, provider).await?;
    tcp.send(request).first_answer().await
}

/// Turns a reply into an [`Answer`]: a pure function of the message.
pub(crate) fn interpret(
    name: &str,
    rtype: RecordType,
    message: Message,
    mode: AdMode,
) -> Result<Answer, DnsError> {
    let qname = wire_name(name);
    let security = match mode {
        AdMode::TrustAd if message.metadata.authentic_data => Security::Secure,
        _ => Security::Insecure,
    };
    let code = message.metadata.response_code;
    let chain = follow_chain(&qname, rtype, &message.answers);
    if code == ResponseCode::NoError {
        chain.check_connected(&qname, rtype, &message.answers)?;
    }
    let kind = match code {
        ResponseCode::NoError if !chain.records.is_empty() => AnswerKind::Records(chain.records),
        ResponseCode::NoError => AnswerKind::NoData,
        // RFC 6604: with a CNAME chain the RCODE describes the last name.
        ResponseCode::NXDomain => AnswerKind::NxDomain,
        ResponseCode::ServFail => {
            return Err(DnsError::ServFail { name: qname, rtype });
        }
        other => {
            return Err(DnsError::ResponseCode {
                name: qname,
                rtype,
                code: other.to_str().to_string(),
            })
        }
    };
    let ttl = match kind {
        AnswerKind::Records(_) => min_ttl(&chain.used),
        AnswerKind::NoData | AnswerKind::NxDomain => negative_ttl(&message.authorities),
    };
    Ok(Answer {
        name: qname,
        rtype,
        canonical_name: chain.canonical_name,
        kind,
        security,
        ttl,
    })
}

/// RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM); no SOA ⇒ 0
/// (do not cache).
pub(crate) fn negative_ttl(authorities: &[HRecord]) -> u32 {
    authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record as HRecord};

    use super::*;
    use crate::dns::Record;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply(
        code: ResponseCode,
        ad: bool,
        answers: Vec<HRecord>,
        authorities: Vec<HRecord>,
    ) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.authentic_data = ad;
        m.answers = answers;
        m.authorities = authorities;
        m
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> HRecord {
        HRecord::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn cname(owner: &str, target: &str) -> HRecord {
        HRecord::from_rdata(name(owner), 600, RData::CNAME(CNAME(name(target))))
    }

    fn soa(ttl: u32, minimum: u32) -> HRecord {
        let soa = SOA::new(name("ns.example."), name("h.example."), 1, 1, 1, 1, minimum);
        HRecord::from_rdata(name("example."), ttl, RData::SOA(soa))
    }

    #[test]
    fn the_ad_bit_is_the_status_only_in_trust_ad_mode() {
        let m = || {
            reply(
                ResponseCode::NoError,
                true,
                vec![a("mx.example.", 60, [192, 0, 2, 1])],
                vec![],
            )
        };
        let got = interpret("MX.example.", RecordType::A, m(), AdMode::TrustAd).unwrap();
        assert_eq!(got.security, Security::Secure);
        assert_eq!(got.name, "mx.example");
        assert_eq!(got.records(), &[Record::A(Ipv4Addr::new(192, 0, 2, 1))]);
        assert_eq!(got.ttl, 60);
        let got = interpret("mx.example", RecordType::A, m(), AdMode::Off).unwrap();
        assert_eq!(got.security, Security::Insecure, "off ignores AD");
        let mut plain = m();
        plain.metadata.authentic_data = false;
        let got = interpret("mx.example", RecordType::A, plain, AdMode::TrustAd).unwrap();
        assert_eq!(got.security, Security::Insecure);
    }

    #[test]
    fn denials_and_failures() {
        let nx = reply(ResponseCode::NXDomain, true, vec![], vec![soa(300, 60)]);
        let got = interpret("x.example", RecordType::A, nx, AdMode::TrustAd).unwrap();
        assert_eq!(
            (got.kind, got.security, got.ttl),
            (AnswerKind::NxDomain, Security::Secure, 60)
        );
        let nodata = reply(ResponseCode::NoError, false, vec![], vec![soa(30, 600)]);
        let got = interpret("x.example", RecordType::Aaaa, nodata, AdMode::TrustAd).unwrap();
        assert_eq!(
            (got.kind, got.security, got.ttl),
            (AnswerKind::NoData, Security::Insecure, 30)
        );
        let sf = reply(ResponseCode::ServFail, false, vec![], vec![]);
        let err = interpret("x.example", RecordType::Mx, sf, AdMode::TrustAd).unwrap_err();
        assert!(matches!(err, DnsError::ServFail { .. }) && err.is_temporary());
        let refused = reply(ResponseCode::Refused, false, vec![], vec![]);
        let err = interpret("x.example", RecordType::Mx, refused, AdMode::TrustAd).unwrap_err();
        assert!(matches!(err, DnsError::ResponseCode { .. }));
    }

    #[test]
    fn cname_chains_are_followed_and_must_connect() {
        let chain = vec![
            cname("alias.example.", "mid.example."),
            cname("mid.example.", "mx.example."),
            a("mx.example.", 120, [192, 0, 2, 7]),
        ];
        let got = interpret(
            "alias.example",
            RecordType::A,
            reply(ResponseCode::NoError, true, chain, vec![]),
            AdMode::TrustAd,
        )
        .unwrap();
        assert_eq!(got.canonical_name, "mx.example");
        assert_eq!(got.records().len(), 1);
        assert_eq!(got.ttl, 120, "the smallest TTL along the chain");
        // Records that the chain does not reach are an error, not NODATA.
        let broken = vec![
            cname("alias.example.", "mid.example."),
            a("mx.example.", 120, [192, 0, 2, 7]),
        ];
        let err = interpret(
            "alias.example",
            RecordType::A,
            reply(ResponseCode::NoError, true, broken, vec![]),
            AdMode::TrustAd,
        )
        .unwrap_err();
        assert!(err.is_temporary(), "{err}");
        // IDN query names are matched in their A-label form.
        let idn = vec![a("xn--bcher-kva.example.", 60, [192, 0, 2, 8])];
        let got = interpret(
            "Bücher.example",
            RecordType::A,
            reply(ResponseCode::NoError, true, idn, vec![]),
            AdMode::TrustAd,
        )
        .unwrap();
        assert_eq!(
            (got.name.as_str(), got.records().len()),
            ("xn--bcher-kva.example", 1)
        );
        // A CNAME loop ends without records instead of spinning.
        let looped = vec![
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
        ];
        let got = interpret(
            "a.example",
            RecordType::A,
            reply(ResponseCode::NoError, true, looped, vec![]),
            AdMode::TrustAd,
        )
        .unwrap();
        assert_eq!(got.kind, AnswerKind::NoData);
    }
}
