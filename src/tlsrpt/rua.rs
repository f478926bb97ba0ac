//! RFC 8460 §3: the `_smtp._tls.<domain>` TXT record — `v=TLSRPTv1;
//! rua=<uri>[,<uri>…]` — parsed strictly into the report destinations.

/// One reporting URI (`rua`) the relay can use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Rua {
    /// `mailto:` — the address (percent-decoded, query dropped).
    Mailto(String),
    /// `https:` — the URI as published.
    Https(String),
}

impl Rua {
    /// The URI, for logs and the outbox key.
    pub fn uri(&self) -> String {
        match self {
            Rua::Mailto(a) => format!("mailto:{a}"),
            Rua::Https(u) => u.clone(),
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Rua::Mailto(_) => "mailto",
            Rua::Https(_) => "https",
        }
    }
}

/// The destinations from a TXT RRset: `None` unless exactly one record
/// starts with `v=TLSRPTv1` (§3: otherwise the domain "does not implement
/// TLSRPT") and it names at least one usable `rua`. Unknown schemes are
/// skipped; unknown fields (§3 `ext`) are ignored.
pub fn parse_txt(records: &[String]) -> Option<Vec<Rua>> {
    let mut ours = records.iter().filter(|r| {
        r.trim_start()
            .strip_prefix("v=TLSRPTv1")
            .is_some_and(|rest| rest.trim_start().is_empty() || rest.trim_start().starts_with(';'))
    });
    let record = ours.next()?;
    if ours.next().is_some() {
        return None;
    }
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    fields.next(); // v=TLSRPTv1
    let mut ruas = Vec::new();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("rua") {
            continue;
        }
        for uri in value.split(',').map(str::trim) {
            if let Some(r) = parse_uri(uri) {
                if !ruas.contains(&r) {
                    ruas.push(r);
                }
            }
        }
    }
    (!ruas.is_empty()).then_some(ruas)
}

fn parse_uri(uri: &str) -> Option<Rua> {
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("mailto") {
        let addr = percent_decode(rest.split('?').next()?)?;
        let (local, domain) = addr.rsplit_once('@')?;
        let bad = |s: &str| {
            s.is_empty()
                || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        };
        (!bad(local) && !bad(domain) && crate::config::is_hostname(domain))
            .then(|| Rua::Mailto(addr.clone()))
    } else if scheme.eq_ignore_ascii_case("https") {
        let parsed: hyper::Uri = uri.parse().ok()?;
        (parsed.host().is_some_and(|h| !h.is_empty()) && !uri.contains(char::is_whitespace))
            .then(|| Rua::Https(uri.to_string()))
    } else {
        None
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(records: &[&str]) -> Option<Vec<Rua>> {
        parse_txt(&records.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_rfc_examples_parse() {
        assert_eq!(
            txt(&["v=TLSRPTv1; rua=mailto:reports@example.com"]),
            Some(vec![Rua::Mailto("reports@example.com".into())])
        );
        assert_eq!(
            txt(&["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"]),
            Some(vec![Rua::Https(
                "https://reporting.example.com/v1/tlsrpt".into()
            )])
        );
        assert_eq!(
            txt(&["v=TLSRPTv1;rua=mailto:a%2Bb@example.com?subject=x, https://r.example/x ;ext=1"]),
            Some(vec![
                Rua::Mailto("a+b@example.com".into()),
                Rua::Https("https://r.example/x".into())
            ])
        );
    }

    #[test]
    fn anything_but_exactly_one_tlsrpt_record_means_no_reports() {
        assert_eq!(txt(&[]), None);
        assert_eq!(txt(&["v=spf1 -all"]), None);
        assert_eq!(
            txt(&[
                "v=TLSRPTv1; rua=mailto:a@x.example",
                "v=TLSRPTv1; rua=mailto:b@x.example"
            ]),
            None
        );
        assert_eq!(txt(&["v=TLSRPTv10; rua=mailto:a@x.example"]), None);
        assert_eq!(txt(&["rua=mailto:a@x.example; v=TLSRPTv1"]), None);
        // Other TXT records beside it do not matter.
        assert!(txt(&["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@x.example"]).is_some());
    }

    #[test]
    fn unusable_uris_are_skipped() {
        assert_eq!(txt(&["v=TLSRPTv1; rua=http://plain.example/x"]), None);
        assert_eq!(txt(&["v=TLSRPTv1; rua=mailto:not-an-address"]), None);
        assert_eq!(txt(&["v=TLSRPTv1; rua=mailto:a@b@"]), None);
        assert_eq!(txt(&["v=TLSRPTv1; rua=mailto:a%zz@x.example"]), None);
        assert_eq!(txt(&["v=TLSRPTv1"]), None);
        assert_eq!(
            txt(&["v=TLSRPTv1; rua=ftp://x.example/,mailto:ok@x.example"]),
            Some(vec![Rua::Mailto("ok@x.example".into())])
        );
    }
}
