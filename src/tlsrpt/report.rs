//! The RFC 8460 §4.4 aggregate report: JSON built from one policy domain's
//! counts for one UTC day, and its gzip form (§5.1: `application/tlsrpt+gzip`).
//! Pure and deterministic: `tls-rpt preview` prints exactly what is sent.

use std::io::Write;

use serde_json::{json, Map, Value};

use super::day::Day;
use super::model::{DomainDay, PolicyType};

/// Who reports, and for which day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMeta {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: String,
    /// The submitter host name (`TLS-Report-Submitter`, and the right-hand
    /// side of the report id).
    pub submitter: String,
    pub day: Day,
}

impl ReportMeta {
    /// `report-id`: unique per day, domain and submitter, and the same each
    /// time it is computed (so a preview names the report that is sent).
    pub fn report_id(&self, domain: &str) -> String {
        format!("{}_{}@{}", self.day, domain, self.submitter)
    }
}

/// The report for `domain` on `meta.day`.
pub fn build(meta: &ReportMeta, domain: &str, counts: &DomainDay) -> Value {
    let policies: Vec<Value> = counts
        .policies
        .iter()
        .map(|(policy, c)| {
            let mut p = Map::new();
            p.insert("policy-type".into(), json!(policy.kind));
            if policy.kind != PolicyType::NoPolicyFound {
                p.insert("policy-string".into(), json!(policy.strings));
            }
            p.insert("policy-domain".into(), json!(domain));
            if !policy.mx_host.is_empty() {
                p.insert("mx-host".into(), json!(policy.mx_host));
            }
            let details: Vec<Value> = c
                .failures
                .iter()
                .map(|(f, n)| {
                    let mut d = Map::new();
                    d.insert("result-type".into(), json!(f.result));
                    if let Some(ip) = f.sending_mta_ip {
                        d.insert("sending-mta-ip".into(), json!(ip.to_string()));
                    }
                    if let Some(h) = &f.receiving_mx_hostname {
                        d.insert("receiving-mx-hostname".into(), json!(h));
                    }
                    if let Some(ip) = f.receiving_ip {
                        d.insert("receiving-ip".into(), json!(ip.to_string()));
                    }
                    d.insert("failed-session-count".into(), json!(n));
                    if let Some(r) = &f.reason {
                        d.insert("failure-reason-code".into(), json!(r));
                    }
                    Value::Object(d)
                })
                .collect();
            let mut out = Map::new();
            out.insert("policy".into(), Value::Object(p));
            out.insert(
                "summary".into(),
                json!({
                    "total-successful-session-count": c.success,
                    "total-failure-session-count": c.failure_total(),
                }),
            );
            if !details.is_empty() {
                out.insert("failure-details".into(), Value::Array(details));
            }
            Value::Object(out)
        })
        .collect();
    json!({
        "organization-name": meta.organization,
        "date-range": {
            "start-datetime": format!("{}T00:00:00Z", meta.day),
            "end-datetime": format!("{}T23:59:59Z", meta.day),
        },
        "contact-info": meta.contact,
        "report-id": meta.report_id(domain),
        "policies": policies,
    })
}

/// The report as sent: compact JSON, gzip'd (RFC 8460 §5.1).
pub fn gzip(report: &Value) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(report.to_string().as_bytes());
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::super::model::{Failure, Policy, ResultType};
    use super::*;

    fn meta() -> ReportMeta {
        ReportMeta {
            organization: "Relay Org".into(),
            contact: "postmaster@relay.test".into(),
            submitter: "relay.test".into(),
            day: Day::parse("2026-12-04").unwrap(),
        }
    }

    fn counts() -> DomainDay {
        let dane = Policy {
            kind: PolicyType::Tlsa,
            strings: vec!["3 1 1 AABB".into()],
            mx_host: vec!["mx.example.net".into()],
        };
        let mut d = DomainDay::default();
        for _ in 0..3 {
            d.add(&dane, None);
        }
        d.add(
            &dane,
            Some(Failure {
                result: ResultType::TlsaInvalid,
                sending_mta_ip: Some("192.0.2.7".parse().unwrap()),
                receiving_mx_hostname: Some("mx.example.net".into()),
                receiving_ip: Some("192.0.2.1".parse().unwrap()),
                reason: Some("no usable TLSA record matches".into()),
            }),
        );
        d.add(&Policy::no_policy(), None);
        d
    }

    #[test]
    fn the_report_has_the_rfc_8460_fields_and_the_counts() {
        let r = build(&meta(), "example.net", &counts());
        assert_eq!(r["organization-name"], "Relay Org");
        assert_eq!(r["contact-info"], "postmaster@relay.test");
        assert_eq!(r["report-id"], "2026-12-04_example.net@relay.test");
        assert_eq!(r["date-range"]["start-datetime"], "2026-12-04T00:00:00Z");
        assert_eq!(r["date-range"]["end-datetime"], "2026-12-04T23:59:59Z");
        let p = &r["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "tlsa");
        assert_eq!(p["policy"]["policy-string"][0], "3 1 1 AABB");
        assert_eq!(p["policy"]["policy-domain"], "example.net");
        assert_eq!(p["policy"]["mx-host"][0], "mx.example.net");
        assert_eq!(p["summary"]["total-successful-session-count"], 3);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "tlsa-invalid");
        assert_eq!(f["sending-mta-ip"], "192.0.2.7");
        assert_eq!(f["receiving-ip"], "192.0.2.1");
        assert_eq!(f["receiving-mx-hostname"], "mx.example.net");
        assert_eq!(f["failed-session-count"], 1);
        let none = &r["policies"][1];
        assert_eq!(none["policy"]["policy-type"], "no-policy-found");
        assert!(none["policy"].get("policy-string").is_none());
        assert!(none.get("failure-details").is_none());
    }

    #[test]
    fn gzip_round_trips_to_the_same_json() {
        let r = build(&meta(), "example.net", &counts());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gzip(&r)[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), r);
    }
}
