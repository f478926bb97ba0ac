//! `danerelay_dns_lookups_total{type,status}`: a [`DnsLookup`] wrapper that
//! counts every lookup the delivery side asks for (answers from the cache
//! included: the metric shows what delivery depended on, by DNSSEC status).

use std::sync::Arc;

use crate::dns::{Answer, AnswerKind, BoxFuture, DnsError, DnsLookup, RecordType, Security};
use crate::metrics::{DnsStatus, DnsType, Metrics};

/// Counts lookups, then hands the answer on unchanged.
pub struct MeteredDns {
    inner: Arc<dyn DnsLookup>,
    metrics: Metrics,
}

impl MeteredDns {
    pub fn new(inner: Arc<dyn DnsLookup>, metrics: Metrics) -> MeteredDns {
        MeteredDns { inner, metrics }
    }
}

/// The labels for one result.
pub fn labels(rtype: RecordType, result: &Result<Answer, DnsError>) -> (DnsType, DnsStatus) {
    let kind = match rtype {
        RecordType::A => DnsType::A,
        RecordType::Aaaa => DnsType::Aaaa,
        RecordType::Mx => DnsType::Mx,
        RecordType::Tlsa => DnsType::Tlsa,
        RecordType::Cname => DnsType::Cname,
        RecordType::Soa => DnsType::Soa,
        RecordType::Txt => DnsType::Txt,
    };
    let status = match result {
        Ok(a) => match (&a.kind, a.security) {
            (AnswerKind::NxDomain, _) => DnsStatus::NxDomain,
            (AnswerKind::NoData, _) => DnsStatus::NoData,
            (AnswerKind::Records(_), Security::Secure) => DnsStatus::Secure,
            (AnswerKind::Records(_), Security::Insecure) => DnsStatus::Insecure,
        },
        Err(DnsError::Bogus { .. }) => DnsStatus::Bogus,
        Err(_) => DnsStatus::Error,
    };
    (kind, status)
}

impl DnsLookup for MeteredDns {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            let result = self.inner.lookup(name, rtype).await;
            let (kind, status) = labels(rtype, &result);
            self.metrics.dns_lookup(kind, status);
            result
        })
    }

    fn dnssec_ready(&self) -> BoxFuture<'_, bool> {
        self.inner.dnssec_ready()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dns::FakeDns;

    #[tokio::test]
    async fn counts_by_type_and_status() {
        let fake = FakeDns::new();
        fake.mx("a.test", Security::Secure, &[(10, "mx.a.test")]);
        fake.bogus("b.test", RecordType::Mx);
        fake.nxdomain("c.test", RecordType::A, Security::Insecure);
        let metrics = Metrics::new();
        let dns = MeteredDns::new(Arc::new(fake), metrics.clone());
        dns.lookup("a.test", RecordType::Mx).await.unwrap();
        assert!(dns.lookup("b.test", RecordType::Mx).await.is_err());
        dns.lookup("c.test", RecordType::A).await.unwrap();
        let text = metrics.render();
        for line in [
            "danerelay_dns_lookups_total{status=\"secure\",type=\"MX\"} 1",
            "danerelay_dns_lookups_total{status=\"bogus\",type=\"MX\"} 1",
            "danerelay_dns_lookups_total{status=\"nxdomain\",type=\"A\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
