//! The A and AAAA addresses of a host whose identity a certificate proves
//! (an HTTPS policy host or report endpoint): DNSSEC status plays no part.

use std::net::IpAddr;

use super::types::{DnsLookup, RecordType};

/// Every A then AAAA address of `host`; a literal IP address is itself.
/// `Err` (the last lookup error, or "no A or AAAA record") when there is none.
pub async fn host_addresses(dns: &dyn DnsLookup, host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse() {
        return Ok(vec![ip]);
    }
    let name = super::normalize_name(host);
    let mut out = Vec::new();
    let mut error = None;
    for rtype in [RecordType::A, RecordType::Aaaa] {
        match dns.lookup(&name, rtype).await {
            Ok(a) => out.extend(a.addresses()),
            Err(e) => error = Some(e.to_string()),
        }
    }
    if out.is_empty() {
        return Err(error.unwrap_or_else(|| "no A or AAAA record".into()));
    }
    Ok(out)
}
