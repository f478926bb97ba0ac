//! The front of the configuration: `[[listener]]`, `[tls]` (certificate
//! files read and checked now), `[auth]` and `[limits]`.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::super::raw::*;
use super::super::*;
use super::Validator;

impl Validator {
    pub(super) fn listeners(&mut self, raw: &[RawListener]) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.err("listener", "at least one [[listener]] is required");
        }
        let mut out: Vec<ListenerConfig> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let path = format!("listener[{i}].address");
            let Some(addr) = l.address.clone() else {
                self.err(&path, "missing (e.g. \"0.0.0.0:587\")");
                continue;
            };
            let Ok(address) = addr.0.map_err(|e| self.err(&path, e)) else {
                continue;
            };
            if let Some(j) = out.iter().position(|o| o.address == address) {
                self.err(&path, format!("{address} is already used by listener[{j}]"));
            }
            let tls = match l.tls {
                RawListenerTls::Starttls => ListenerTls::StartTls,
                RawListenerTls::Implicit => ListenerTls::Implicit,
                RawListenerTls::None => ListenerTls::None,
            };
            out.push(ListenerConfig { address, tls });
        }
        out
    }

    pub(super) fn tls(&mut self, raw: &RawTls, listeners: &[ListenerConfig]) -> TlsSource {
        let needs_tls = listeners.iter().position(|l| l.tls != ListenerTls::None);
        match (raw.certificate.is_empty(), raw.private_key.is_empty()) {
            (true, true) => {
                if let Some(i) = needs_tls.filter(|_| !self.self_signed_ok) {
                    self.err(
                        "tls.certificate",
                        format!("required: listener[{i}] uses TLS (only the development default generates a self-signed certificate)"),
                    );
                }
                TlsSource::SelfSigned
            }
            (false, true) => {
                self.err("tls.private_key", "required when tls.certificate is set");
                TlsSource::SelfSigned
            }
            (true, false) => {
                self.err("tls.certificate", "required when tls.private_key is set");
                TlsSource::SelfSigned
            }
            (false, false) => {
                let certificate = PathBuf::from(&raw.certificate);
                let private_key = PathBuf::from(&raw.private_key);
                if let Some(bytes) = self.read_file("tls.certificate", &certificate) {
                    if CertificateDer::pem_slice_iter(&bytes)
                        .next()
                        .is_none_or(|c| c.is_err())
                    {
                        self.err(
                            "tls.certificate",
                            format!("{} holds no PEM certificate", certificate.display()),
                        );
                    }
                }
                if let Some(bytes) = self.read_file("tls.private_key", &private_key) {
                    if PrivateKeyDer::from_pem_slice(&bytes).is_err() {
                        self.err(
                            "tls.private_key",
                            format!("{} holds no PEM private key", private_key.display()),
                        );
                    }
                }
                TlsSource::Files {
                    certificate,
                    private_key,
                }
            }
        }
    }

    /// A file that exists but cannot be read is an error; one that does not
    /// exist yet is a warning (Kubernetes mounts secrets after the config is
    /// checked; `serve` refuses to start without it).
    pub(super) fn read_file(&mut self, path: &str, file: &Path) -> Option<Vec<u8>> {
        match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warnings.push(ConfigError::new(
                    path,
                    format!("{} does not exist (yet); serve needs it", file.display()),
                ));
                None
            }
            Err(e) => {
                self.err(path, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    }

    pub(super) fn auth(&mut self, raw: RawAuth) -> AuthConfig {
        let users_file =
            Some(PathBuf::from(&raw.users_file)).filter(|_| !raw.users_file.is_empty());
        if let Some(file) = &users_file {
            let _ = self.read_file("auth.users_file", file);
        }
        let trusted_networks = raw
            .trusted_networks
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.0.map_err(|e| self.err(format!("auth.trusted_networks[{i}]"), e))
                    .ok()
            })
            .map(|n| n.trunc())
            .collect();
        AuthConfig {
            users_file,
            trusted_networks,
            sender_policy: match raw.sender_policy {
                RawSenderPolicy::OwnAddress => SenderPolicy::OwnAddress,
                RawSenderPolicy::OwnDomain => SenderPolicy::OwnDomain,
                RawSenderPolicy::Any => SenderPolicy::Any,
            },
        }
    }

    pub(super) fn limits(&mut self, raw: RawLimits) -> Limits {
        let max_message_size = self.take("limits.max_message_size", raw.max_message_size.0);
        if max_message_size < 1024 {
            self.err("limits.max_message_size", "must be at least 1KiB");
        }
        Limits {
            max_message_size,
            max_recipients: self.positive("limits.max_recipients", raw.max_recipients),
            max_connections: self.positive("limits.max_connections", raw.max_connections),
            max_auth_failures: u32::try_from(
                self.positive("limits.max_auth_failures", raw.max_auth_failures),
            )
            .unwrap_or(u32::MAX),
            command_timeout: self.duration("limits.command_timeout", raw.command_timeout, false),
            max_connections_per_ip: self
                .positive("limits.max_connections_per_ip", raw.max_connections_per_ip),
            connection_rate_per_ip: self
                .positive_u32("limits.connection_rate_per_ip", raw.connection_rate_per_ip),
            max_junk_commands: self.positive_u32("limits.max_junk_commands", raw.max_junk_commands),
            messages_per_user_per_hour: self.positive_u32(
                "limits.messages_per_user_per_hour",
                raw.messages_per_user_per_hour,
            ),
            session_timeout: self.duration("limits.session_timeout", raw.session_timeout, false),
            data_timeout: self.duration("limits.data_timeout", raw.data_timeout, false),
            max_header_size: self.header_size(raw.max_header_size, max_message_size),
            max_header_fields: self.positive("limits.max_header_fields", raw.max_header_fields),
            max_recipients_per_session: self.positive(
                "limits.max_recipients_per_session",
                raw.max_recipients_per_session,
            ),
        }
    }

    pub(super) fn positive_u32(&mut self, path: &str, n: u64) -> u32 {
        match u32::try_from(n) {
            Ok(v) => {
                self.positive(path, n);
                v
            }
            Err(_) => {
                self.err(path, format!("must be at most {}", u32::MAX));
                u32::MAX
            }
        }
    }

    /// A header section needs room for a few fields; it is never larger than
    /// the message may be, so a small `max_message_size` caps it silently.
    pub(super) fn header_size(&mut self, raw: Size, max_message_size: u64) -> u64 {
        let path = "limits.max_header_size";
        let size = self.take(path, raw.0);
        if size < 1024 {
            self.err(path, "must be at least 1KiB");
        }
        size.min(max_message_size.max(1024))
    }
}
