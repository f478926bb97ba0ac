//! How a negotiated TLS session is named in logs and `Received:` headers, in
//! both directions: `TLSv1.3` and the IANA cipher-suite name
//! (`TLS_AES_256_GCM_SHA384`), which is what OpenSSL and Postfix print.

/// `(version, cipher)` of an established connection.
pub fn negotiated(conn: &rustls::CommonState) -> (String, String) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map(iana_name)
        .unwrap_or_else(|| "unknown".to_string());
    (version, cipher)
}

/// rustls names TLS 1.3 suites `TLS13_AES_…`; IANA (and OpenSSL) say `TLS_AES_…`.
/// TLS 1.2 names are already IANA's.
fn iana_name(rustls_name: &str) -> String {
    rustls_name
        .strip_prefix("TLS13_")
        .map_or_else(|| rustls_name.to_string(), |rest| format!("TLS_{rest}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn iana_names() {
        assert_eq!(
            super::iana_name("TLS13_AES_256_GCM_SHA384"),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            super::iana_name("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        );
    }
}
