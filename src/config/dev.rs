//! The embedded development default: what `danerelay serve` runs on without
//! `--config`. Loopback only, a self-signed certificate generated at start,
//! 127.0.0.0/8 trusted, the queue under `./danerelay-data`, everything else
//! as the file defaults (so the two cannot drift apart) — including
//! `dns.dnssec = "auto"`, which picks its mode in the background so that
//! a machine without outside DNS still starts at once.

use std::net::SocketAddr;

use super::raw::{Addr, Net, RawConfig, RawListener, RawListenerTls};
use super::*;

/// The development configuration.
pub fn development() -> Config {
    let mut raw = RawConfig {
        listener: vec![
            RawListener {
                address: Some(Addr(Ok(SocketAddr::from(([127, 0, 0, 1], 2587))))),
                tls: RawListenerTls::Starttls,
            },
            RawListener {
                address: Some(Addr(Ok(SocketAddr::from(([127, 0, 0, 1], 2465))))),
                tls: RawListenerTls::Implicit,
            },
        ],
        ..RawConfig::default()
    };
    raw.auth.trusted_networks = vec![Net("127.0.0.0/8".parse().map_err(|_| String::new()))];
    raw.queue.path = "danerelay-data/queue".into();
    match validate::from_raw(raw, true) {
        Ok(loaded) => loaded.config,
        // Built from constants only; the unit test below proves it valid.
        Err(errors) => unreachable!("embedded default invalid: {errors:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn development_default_is_loopback_only() {
        let cfg = development();
        assert!(cfg.listeners.iter().all(|l| l.address.ip().is_loopback()));
        assert_eq!(cfg.listeners[0].address.port(), 2587);
        assert_eq!(cfg.listeners[0].tls, ListenerTls::StartTls);
        assert_eq!(cfg.listeners[1].address.port(), 2465);
        assert_eq!(cfg.listeners[1].tls, ListenerTls::Implicit);
        assert_eq!(cfg.tls, TlsSource::SelfSigned);
        assert_eq!(cfg.http.address, SocketAddr::from(([127, 0, 0, 1], 9587)));
        assert!(cfg.dns.nameservers.is_empty());
        // SPEC: DANE active on any machine that reaches DNS, validating resolver or not.
        assert_eq!(cfg.dns.dnssec, DnssecMode::Auto);
        assert_eq!(cfg.dns.dnssec_probe.as_deref(), Some("."));
        assert_eq!(cfg.queue.path, PathBuf::from("danerelay-data/queue"));
        let inside: std::net::IpAddr = "127.9.9.9".parse().unwrap();
        assert!(cfg.auth.trusted_networks[0].contains(&inside));
        assert_eq!(cfg.delivery.helo_name, cfg.hostname);
    }
}
