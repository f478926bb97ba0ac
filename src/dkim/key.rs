//! Loading one `[[dkim]]` private key: PEM (PKCS#8, or PKCS#1 for RSA),
//! RSA of 1024–4096 bits (RFC 8301 §3.2) or Ed25519 (RFC 8463), not readable
//! or writable by other users. Every key is proven by a trial signature, so
//! a key that loads is a key that signs.
//!
//! ring signs RSA keys of 2048–4096 bits and Ed25519; it refuses the
//! 1024–2047-bit RSA keys that RFC 8301 still allows, so those (and only
//! those) are signed with the `rsa` crate, with blinding.

use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Algorithm, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// The signature algorithm a key makes (the `a=` tag), declared with the metrics (its label).
pub use crate::metrics::DkimAlgorithm;

/// RFC 8301 §3.2: signers MUST use at least 1024 bits (SHOULD 2048).
pub const RSA_MIN_BITS: usize = 1024;
/// Below this, `check-config` warns.
pub const RSA_RECOMMENDED_BITS: usize = 2048;
/// RFC 8301 §3.2: verifiers need only handle keys up to 4096 bits.
pub const RSA_MAX_BITS: usize = 4096;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is readable or writable by other users (mode {mode:04o}); a private key must not be: chmod o-rwx (0600, or 0440 as Kubernetes mounts secrets)", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} holds no unencrypted PEM private key (\"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\")", path.display())]
    NotPem { path: PathBuf },
    #[error("{} holds {kind} key, which cannot sign DKIM: use RSA or Ed25519 (`danerelay dkim keygen`)", path.display())]
    WrongType { path: PathBuf, kind: &'static str },
    #[error("{} holds an RSA key of {bits} bits: RFC 8301 §3.2 requires at least {RSA_MIN_BITS} (use 2048)", path.display())]
    RsaTooSmall { path: PathBuf, bits: usize },
    #[error("{} holds an RSA key of {bits} bits: verifiers need not accept more than {RSA_MAX_BITS} (RFC 8301 §3.2)", path.display())]
    RsaTooLarge { path: PathBuf, bits: usize },
    #[error("{} holds an invalid {kind} key: {detail}", path.display())]
    Invalid {
        path: PathBuf,
        kind: &'static str,
        detail: String,
    },
}

impl KeyError {
    /// True when the file is simply not there (yet): `check-config` warns,
    /// `serve` refuses to start.
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyError::Missing { .. })
    }
}

/// What a loaded key is, for logs, metrics and `check-config` warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    pub algorithm: DkimAlgorithm,
    /// Modulus size for RSA; 256 for Ed25519.
    pub bits: usize,
}

/// One `[[dkim]]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The `d=` domain: lower-case, no trailing dot.
    pub domain: String,
    /// The `s=` selector (the key is published at `selector._domainkey.domain`).
    pub selector: String,
    pub private_key: PathBuf,
    /// Also sign mail whose From: domain is a subdomain of `domain`.
    pub subdomains: bool,
}

impl KeyInfo {
    /// The `check-config` warning this key deserves, if any.
    pub fn warning(&self) -> Option<String> {
        (self.algorithm == DkimAlgorithm::RsaSha256 && self.bits < RSA_RECOMMENDED_BITS).then(|| {
            format!(
                "RSA key of {} bits: RFC 8301 allows it, but use {RSA_RECOMMENDED_BITS} bits or more",
                self.bits
            )
        })
    }
}

enum Pair {
    /// 2048–4096-bit RSA, signed by ring.
    Rsa(RsaKey<Sha256>),
    /// 1024–2047-bit RSA, which ring refuses.
    LegacyRsa(rsa::pkcs1v15::SigningKey<sha2::Sha256>),
    Ed25519(Ed25519Key),
}

/// A private key ready to sign.
pub struct LoadedKey {
    pair: Pair,
    pub info: KeyInfo,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// mail-auth's signer takes its key by value; this lends it ours.
pub(super) struct KeyRef<'a>(pub(super) &'a LoadedKey);

impl SigningKey for KeyRef<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &self.0.pair {
            Pair::Rsa(k) => k.sign(input),
            Pair::Ed25519(k) => k.sign(input),
            Pair::LegacyRsa(k) => {
                use rsa::signature::{RandomizedSigner, SignatureEncoding};
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                k.try_sign_with_rng(&mut rsa::rand_core::OsRng, &data)
                    .map(|s| s.to_vec())
                    .map_err(|e| {
                        mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                            e.to_string(),
                        ))
                    })
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self.0.info.algorithm {
            DkimAlgorithm::RsaSha256 => Algorithm::RsaSha256,
            DkimAlgorithm::Ed25519Sha256 => Algorithm::Ed25519Sha256,
        }
    }
}

/// Reads, checks and trial-signs the key at `path`.
pub fn load(path: &Path) -> Result<LoadedKey, KeyError> {
    check_permissions(path)?;
    let pem = std::fs::read(path).map_err(|source| read_error(path, source))?;
    let key = parse(path, &pem)?;
    // ring checks some RSA key relations only when signing: prove it now.
    let probe = mail_auth::dkim::DkimSigner::from_key(KeyRef(&key))
        .domain("example.invalid")
        .selector("probe")
        .headers(["From"])
        .sign(b"From: probe@example.invalid\r\n\r\n");
    if let Err(e) = probe {
        return Err(invalid(path, kind_name(key.info.algorithm), e));
    }
    Ok(key)
}

fn read_error(path: &Path, source: std::io::Error) -> KeyError {
    if source.kind() == std::io::ErrorKind::NotFound {
        KeyError::Missing { path: path.into() }
    } else {
        KeyError::Read {
            path: path.into(),
            source,
        }
    }
}

/// Others may neither read nor write a private key; the group may (Kubernetes
/// mounts secrets 0440 with an fsGroup).
fn check_permissions(path: &Path) -> Result<(), KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| read_error(path, source))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o006 != 0 {
            return Err(KeyError::Permissions {
                path: path.into(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

fn kind_name(a: DkimAlgorithm) -> &'static str {
    match a {
        DkimAlgorithm::RsaSha256 => "RSA",
        DkimAlgorithm::Ed25519Sha256 => "Ed25519",
    }
}

fn invalid(path: &Path, kind: &'static str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid {
        path: path.into(),
        kind,
        detail: e.to_string(),
    }
}

/// Parses PEM bytes into a signing key (no file system access).
pub fn parse(path: &Path, pem: &[u8]) -> Result<LoadedKey, KeyError> {
    let der =
        PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem { path: path.into() })?;
    match der {
        PrivateKeyDer::Pkcs1(k) => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| invalid(path, "RSA", e))?;
            rsa_key(path, rsa, || {
                PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(k.secret_pkcs1_der().to_vec()))
            })
        }
        PrivateKeyDer::Pkcs8(k) => {
            let bytes = k.secret_pkcs8_der();
            let info = rsa::pkcs8::PrivateKeyInfo::try_from(bytes)
                .map_err(|e| invalid(path, "PKCS#8", e))?;
            match info.algorithm.oid.to_string().as_str() {
                OID_RSA => {
                    let rsa =
                        rsa::RsaPrivateKey::try_from(info).map_err(|e| invalid(path, "RSA", e))?;
                    rsa_key(path, rsa, || {
                        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes.to_vec()))
                    })
                }
                OID_ED25519 => {
                    // "maybe_unchecked": PKCS#8 v1 as `openssl genpkey` writes
                    // it carries no public key to check against.
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes)
                        .map_err(|e| invalid(path, "Ed25519", e))?;
                    Ok(LoadedKey {
                        pair: Pair::Ed25519(key),
                        info: KeyInfo {
                            algorithm: DkimAlgorithm::Ed25519Sha256,
                            bits: 256,
                        },
                    })
                }
                other => Err(KeyError::WrongType {
                    path: path.into(),
                    kind: oid_kind(other),
                }),
            }
        }
        PrivateKeyDer::Sec1(_) => Err(KeyError::WrongType {
            path: path.into(),
            kind: "an EC (ECDSA)",
        }),
        _ => Err(KeyError::WrongType {
            path: path.into(),
            kind: "an unknown kind of",
        }),
    }
}

fn oid_kind(oid: &str) -> &'static str {
    match oid {
        "1.2.840.10045.2.1" => "an EC (ECDSA)",
        "1.3.101.110" => "an X25519",
        "1.3.101.111" => "an X448",
        "1.3.101.113" => "an Ed448",
        "1.2.840.10040.4.1" => "a DSA",
        "1.2.840.113549.1.1.10" => "an RSA-PSS",
        _ => "an unknown kind of",
    }
}

fn rsa_key(
    path: &Path,
    rsa: rsa::RsaPrivateKey,
    der: impl FnOnce() -> PrivateKeyDer<'static>,
) -> Result<LoadedKey, KeyError> {
    let bits = rsa.n().bits();
    if bits < RSA_MIN_BITS {
        return Err(KeyError::RsaTooSmall {
            path: path.into(),
            bits,
        });
    }
    if bits > RSA_MAX_BITS {
        return Err(KeyError::RsaTooLarge {
            path: path.into(),
            bits,
        });
    }
    let pair = if bits < RSA_RECOMMENDED_BITS {
        Pair::LegacyRsa(rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa))
    } else {
        Pair::Rsa(RsaKey::<Sha256>::from_key_der(der()).map_err(|e| invalid(path, "RSA", e))?)
    };
    Ok(LoadedKey {
        pair,
        info: KeyInfo {
            algorithm: DkimAlgorithm::RsaSha256,
            bits,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "key_tests.rs"]
mod tests;
