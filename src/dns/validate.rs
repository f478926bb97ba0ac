//! `dns.dnssec = "validate"`: hickory-resolver validates in process
//! (`dnssec-ring`) from the IANA root anchor, or from `dns.trust_anchor` (a
//! file of DS and/or DNSKEY records; DS records are turned into DNSKEY
//! anchors at start by `super::anchor`). Each record comes
//! back with a `Proof`; an answer is [`Security::Secure`] only when every
//! record used (CNAMEs included) is secure, and any bogus or indeterminate
//! record makes the whole lookup a [`DnsError::Bogus`] (temporary).
//!
//! Denials: hickory reports NXDOMAIN/NODATA as `NoRecordsFound` carrying the
//! authority section it validated, and a failed denial proof as
//! `DnsError::Nsec { proof }`. [`denial_security`] judges the section
//! itself (RFC 4035 §5.4): secure only with a secure NSEC/NSEC3 proof,
//! insecure only when a record in it is provably unsigned, and **bogus**
//! otherwise — an empty section, or a signed zone's SOA without NSEC/NSEC3,
//! is a proof stripped on the way (or a server breaking RFC 2308 §3's
//! "MUST include the SOA"), and calling it insecure would switch DANE off.
//! hickory 0.26.3 already refuses such replies (measured in
//! `tests/it/dns.rs`, `validate_calls_a_stripped_denial_bogus_not_insecure`);
//! this keeps the verdict ours.
//!
//! What hickory 0.26.3's validator gets wrong, measured in
//! `tests/it/dns.rs` (`validate_proves_wildcard_expansions`) against a
//! private signed root served by knotd, directly and through unbound:
//!
//! * Wildcard-synthesised answers (RFC 4592) come back **bogus** when the
//!   expansion is one label below the wildcard's parent in an NSEC zone
//!   (`a.wc` from `*.wc`: A, MX, TLSA alike), and in NSEC and NSEC3 zones
//!   whenever the wildcard sits behind a CNAME (hickory checks the proof
//!   against the query name, not the CNAME target). unbound calls them
//!   secure. hickory's resolver drops the response of a failed proof, so on
//!   a bogus verdict the query is asked once more through hickory's
//!   validating handle (`recheck_wildcard`) and the wildcard proof checked
//!   by `super::wildcard` (RFC 4035 §5.3.4, RFC 5155 §8.8); only a proven
//!   expansion with every record of the chain secure turns secure, anything
//!   else stays bogus. Our own check rather than a patched hickory: the
//!   check is ~150 lines we own and table-test, applies only where hickory
//!   already said bogus (it can only un-bogus a proven wildcard, never
//!   weaken another verdict), and needs no vendored fork to carry across
//!   hickory upgrades. Wildcard NODATA and multi-label expansions hickory
//!   gets right by itself.
//! * Plain CNAME → TLSA chains, in one zone or across zone cuts, validate
//!   correctly, directly and behind unbound.
//! * hickory's response cache answers a CNAME whose target is already cached
//!   with the target records only (the CNAMEs are dropped), so the chain
//!   cannot be followed; its cache is therefore disabled here (our
//!   `CachingLookup` caches whole answers), and an answer whose records do
//!   not connect to the query name is an error, never NODATA.
//!
//! Prefer `trust-ad` with a local validating resolver in production (the
//! Postfix model); `validate` is for hosts without one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_net::dnssec::DnssecDnsHandle;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::FirstAnswer;
use hickory_net::{DnsError as HDnsError, DnsHandle, NetError};
use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_proto::rr::{Name, Record as HRecord, RecordType as HType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioResolver;
use tracing::debug;

use super::trust_ad::negative_ttl;
use super::types::{Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, RecordType, Security};
use super::wire::{follow_chain, min_ttl, name_to_string, to_fqdn, to_hickory_type};

/// The in-process validating resolver.
#[derive(Clone)]
pub struct ValidatingResolver {
    inner: TokioResolver,
    /// For the second look at answers hickory calls bogus (`super::wildcard`).
    recheck: Recheck,
}

/// What the wildcard re-check queries with: the same servers (resolved
/// from resolv.conf when none are configured), anchors and timeout.
#[derive(Clone)]
struct Recheck {
    servers: Vec<SocketAddr>,
    anchors: Arc<TrustAnchors>,
    timeout: Duration,
}

impl std::fmt::Debug for ValidatingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatingResolver").finish_non_exhaustive()
    }
}

impl ValidatingResolver {
    /// `servers` empty ⇒ /etc/resolv.conf. `trust_anchor` `None` ⇒ the IANA
    /// root anchors built into hickory. DS records in the anchor file are
    /// bootstrapped here (`super::anchor`): one DNSKEY query per DS owner, at
    /// most `timeout` per server and every server tried, so construction may
    /// take that long; a failure is [`DnsError::Setup`].
    pub async fn new(
        servers: &[SocketAddr],
        trust_anchor: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, DnsError> {
        let anchors = match trust_anchor {
            Some(path) => Some(super::anchor::load(path, servers, timeout).await?),
            None => None,
        };
        Self::with_anchors(servers, anchors, timeout)
    }

    fn with_anchors(
        servers: &[SocketAddr],
        anchors: Option<TrustAnchors>,
        timeout: Duration,
    ) -> Result<Self, DnsError> {
        let setup = |detail: String| DnsError::Setup { detail };
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| setup(format!("/etc/resolv.conf: {e}")))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                provider,
            )
        };
        let mut opts = ResolverOpts::default();
        opts.validate = true;
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.ndots = 0;
        opts.preserve_intermediates = true;
        // hickory's own cache answers a CNAME whose target it has cached with
        // the target records only, dropping the CNAMEs (measured with
        // 0.26.3): the chain, and so its security, could not be checked.
        // Our `CachingLookup` caches whole answers instead.
        opts.cache_size = 0;
        *builder.options_mut() = opts;
        let anchors = Arc::new(anchors.unwrap_or_default());
        builder = builder.with_trust_anchor(anchors.clone());
        let inner = builder
            .build()
            .map_err(|e| setup(format!("building resolver: {e}")))?;
        let servers = if servers.is_empty() {
            // hickory found some in resolv.conf, or the build above failed.
            super::system_nameservers().unwrap_or_default()
        } else {
            servers.to_vec()
        };
        Ok(ValidatingResolver {
            inner,
            recheck: Recheck {
                servers,
                anchors,
                timeout,
            },
        })
    }

    async fn resolve(&self, name: &str, rtype: RecordType) -> Result<Answer, DnsError> {
        let fqdn = to_fqdn(name)?;
        let qname = name_to_string(&fqdn);
        match self
            .inner
            .lookup(fqdn.clone(), to_hickory_type(rtype))
            .await
        {
            Ok(lookup) => positive(&qname, rtype, lookup.answers()),
            Err(NetError::Dns(HDnsError::DnssecBogus)) => {
                match self.recheck_wildcard(&fqdn, &qname, rtype).await {
                    Some(answer) => Ok(answer),
                    None => negative(qname, rtype, NetError::Dns(HDnsError::DnssecBogus)),
                }
            }
            Err(e) => negative(qname, rtype, e),
        }
    }

    /// A second look at an answer hickory called bogus: ask again through
    /// hickory's validating handle directly (its resolver drops the
    /// response of a failed proof), and accept the answer only when it is a
    /// wildcard expansion that `super::wildcard` proves, with every record
    /// of the chain secure and records of the type asked for. Anything else
    /// stays bogus.
    async fn recheck_wildcard(
        &self,
        fqdn: &Name,
        qname: &str,
        rtype: RecordType,
    ) -> Option<Answer> {
        let Recheck {
            servers,
            anchors,
            timeout,
        } = &self.recheck;
        for server in servers {
            let exchange = UdpClientStream::builder(*server, TokioRuntimeProvider::default())
                .with_timeout(Some(*timeout))
                .exchange();
            let handle = DnssecDnsHandle::with_trust_anchor(exchange, anchors.clone());
            let mut options = DnsRequestOptions::default();
            options.recursion_desired = true;
            options.edns_payload_len = 1232;
            let query = Query::query(fqdn.clone(), to_hickory_type(rtype));
            let response = match handle.lookup(query, options).first_answer().await {
                Err(NetError::Dns(HDnsError::Nsec {
                    proof: Proof::Bogus,
                    response,
                    ..
                })) => response,
                Err(NetError::Timeout | NetError::Io(_)) => continue,
                _ => return None,
            };
            if let Err(why) = super::wildcard::check(&response.answers, &response.authorities) {
                debug!(name = qname, %rtype, %why, "bogus stays bogus");
                return None;
            }
            let answer = positive(qname, rtype, &response.answers).ok()?;
            let accepted = answer.is_secure() && !answer.records().is_empty();
            debug!(name = qname, %rtype, accepted, "wildcard expansion re-checked (RFC 4035 §5.3.4)");
            return accepted.then_some(answer);
        }
        None
    }
}

impl DnsLookup for ValidatingResolver {
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

/// Security of a set of records; bogus/indeterminate ⇒ error.
fn proofs(qname: &str, rtype: RecordType, records: &[&HRecord]) -> Result<Security, DnsError> {
    if let Some(bad) = records
        .iter()
        .find(|r| matches!(r.proof, Proof::Bogus | Proof::Indeterminate))
    {
        return Err(DnsError::Bogus {
            name: qname.to_string(),
            rtype,
            detail: format!("{} {} is {}", bad.name, bad.record_type(), bad.proof),
        });
    }
    if !records.is_empty() && records.iter().all(|r| r.proof == Proof::Secure) {
        Ok(Security::Secure)
    } else {
        Ok(Security::Insecure)
    }
}

/// The security of a denial from its validated authority section (see the
/// module docs): any bogus record ⇒ bogus; a secure NSEC/NSEC3 and nothing
/// unproven ⇒ secure; a provably insecure record ⇒ insecure; no proof ⇒
/// bogus.
pub(crate) fn denial_security(
    qname: &str,
    rtype: RecordType,
    authorities: &[&HRecord],
) -> Result<Security, DnsError> {
    let security = proofs(qname, rtype, authorities)?;
    let proven = authorities
        .iter()
        .any(|r| r.proof == Proof::Secure && matches!(r.record_type(), HType::NSEC | HType::NSEC3));
    let unsigned = authorities.iter().any(|r| r.proof == Proof::Insecure);
    match security {
        Security::Secure if proven => Ok(Security::Secure),
        Security::Insecure if unsigned => Ok(Security::Insecure),
        _ => Err(DnsError::Bogus {
            name: qname.to_string(),
            rtype,
            detail: if authorities.is_empty() {
                "denial of existence without authority records (no SOA, no NSEC/NSEC3 proof)".into()
            } else {
                "denial of existence without an NSEC/NSEC3 proof".into()
            },
        }),
    }
}

fn positive(qname: &str, rtype: RecordType, answers: &[HRecord]) -> Result<Answer, DnsError> {
    let chain = follow_chain(qname, rtype, answers);
    chain.check_connected(qname, rtype, answers)?;
    let security = proofs(qname, rtype, &chain.used)?;
    let ttl = min_ttl(&chain.used);
    let kind = if chain.records.is_empty() {
        AnswerKind::NoData
    } else {
        AnswerKind::Records(chain.records)
    };
    Ok(Answer {
        name: qname.to_string(),
        rtype,
        canonical_name: chain.canonical_name,
        kind,
        security,
        ttl,
    })
}

fn negative(qname: String, rtype: RecordType, error: NetError) -> Result<Answer, DnsError> {
    let dns = match error {
        NetError::Dns(dns) => dns,
        NetError::Timeout => return Err(DnsError::Timeout { name: qname, rtype }),
        other => {
            return Err(DnsError::Transport {
                name: qname,
                rtype,
                detail: other.to_string(),
            })
        }
    };
    match dns {
        HDnsError::NoRecordsFound(no) => {
            let authorities: Vec<&HRecord> = no.authorities.iter().flat_map(|a| a.iter()).collect();
            let security = denial_security(&qname, rtype, &authorities)?;
            let ttl = no
                .authorities
                .as_deref()
                .map(negative_ttl)
                .or(no.negative_ttl)
                .unwrap_or(0);
            let kind = if no.response_code == ResponseCode::NXDomain {
                AnswerKind::NxDomain
            } else {
                AnswerKind::NoData
            };
            Ok(Answer {
                canonical_name: qname.clone(),
                name: qname,
                rtype,
                kind,
                security,
                ttl,
            })
        }
        HDnsError::Nsec {
            proof: Proof::Insecure,
            response,
            ..
        } => Ok(Answer {
            canonical_name: qname.clone(),
            name: qname,
            rtype,
            kind: if response.metadata.response_code == ResponseCode::NXDomain {
                AnswerKind::NxDomain
            } else {
                AnswerKind::NoData
            },
            security: Security::Insecure,
            ttl: 0,
        }),
        HDnsError::Nsec { proof, .. } => Err(DnsError::Bogus {
            name: qname,
            rtype,
            detail: format!("denial of existence is {proof}"),
        }),
        HDnsError::DnssecBogus => Err(DnsError::Bogus {
            name: qname,
            rtype,
            detail: "validation failed".into(),
        }),
        HDnsError::ResponseCode(ResponseCode::ServFail) => {
            Err(DnsError::ServFail { name: qname, rtype })
        }
        HDnsError::ResponseCode(code) => Err(DnsError::ResponseCode {
            name: qname,
            rtype,
            code: code.to_str().to_string(),
        }),
        other => Err(DnsError::Transport {
            name: qname,
            rtype,
            detail: other.to_string(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name, RData};

    fn soa(proof: Proof) -> HRecord {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let soa = SOA::new(n("ns.example."), n("h.example."), 1, 1, 1, 1, 60);
        let mut r = HRecord::from_rdata(n("example."), 60, RData::SOA(soa));
        r.proof = proof;
        r
    }

    fn nsec(proof: Proof) -> HRecord {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let nsec = NSEC::new(n("b.example."), [HType::A]);
        let mut r =
            HRecord::from_rdata(n("a.example."), 60, RData::DNSSEC(DNSSECRData::NSEC(nsec)));
        r.proof = proof;
        r
    }

    #[test]
    fn a_denial_is_secure_only_with_a_proof_and_insecure_only_when_provably_unsigned() {
        let judge = |records: &[HRecord]| {
            let refs: Vec<&HRecord> = records.iter().collect();
            denial_security("x.example", RecordType::Tlsa, &refs)
        };
        use Proof::{Bogus, Insecure, Secure};
        assert_eq!(judge(&[soa(Secure), nsec(Secure)]), Ok(Security::Secure));
        assert_eq!(judge(&[soa(Insecure)]), Ok(Security::Insecure));
        for stripped in [vec![], vec![soa(Secure)]] {
            let err = judge(&stripped).unwrap_err();
            assert!(matches!(err, DnsError::Bogus { .. }), "{stripped:?}: {err}");
        }
        for broken in [
            vec![soa(Secure), nsec(Bogus)],
            vec![soa(Bogus), nsec(Secure)],
        ] {
            assert!(judge(&broken).is_err(), "{broken:?}");
        }
        // A secure NSEC next to an unproven record is not a secure denial.
        let err = judge(&[soa(Proof::Indeterminate), nsec(Secure)]).unwrap_err();
        assert!(matches!(err, DnsError::Bogus { .. }));
    }

    const ROOT_DNSKEY: &str = ". IN DNSKEY 257 3 13 jW4b7dCspRb+K6v0qmJxg5v5ZgIt/nGopr2odE4QC0KHmNu8RWdBwI400omvPtbslcwdmev7lP1XTMk8r49nmQ==\n";

    #[tokio::test]
    async fn trust_anchor_file_errors_are_setup_errors() {
        let dir = tempfile::tempdir().unwrap();
        // A server that never answers: DS anchors cannot be bootstrapped.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let servers = [silent.local_addr().unwrap()];
        let t = Duration::from_millis(300);
        let good = dir.path().join("root.key");
        std::fs::write(&good, ROOT_DNSKEY).unwrap();
        assert!(ValidatingResolver::new(&servers, Some(&good), t)
            .await
            .is_ok());
        // A DS anchor whose DNSKEYs cannot be fetched stops the start,
        // naming the file; it never falls back to the IANA root.
        let ds = dir.path().join("root.ds");
        std::fs::write(
            &ds,
            ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        )
        .unwrap();
        let err = ValidatingResolver::new(&servers, Some(&ds), t)
            .await
            .unwrap_err();
        assert!(matches!(err, DnsError::Setup { .. }), "{err}");
        assert!(err.to_string().contains("root.ds"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "; nothing\n").unwrap();
        assert!(ValidatingResolver::new(&servers, Some(&empty), t)
            .await
            .is_err());
        let missing = dir.path().join("missing");
        assert!(ValidatingResolver::new(&servers, Some(&missing), t)
            .await
            .is_err());
    }
}
