//! `danerelay dkim keygen --domain D --selector S [--algorithm ed25519|rsa-2048]
//! --out FILE`: writes a new private key (PKCS#8 PEM, mode 0600, never over
//! an existing file) and prints the TXT record to publish at
//! `S._domainkey.D`, its value split into strings of at most 255 octets.

use std::io::Write;
use std::path::PathBuf;

use crate::dkim::keygen::{self, KeygenError};

use super::exit::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeygenAlgorithm {
    /// Ed25519 (RFC 8463): small and fast; not every verifier knows it yet.
    Ed25519,
    /// RSA, 2048 bits (RFC 8301): what every verifier accepts.
    #[value(name = "rsa-2048")]
    Rsa2048,
}

/// `danerelay dkim keygen`
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// The signing domain (`d=`), e.g. example.com.
    #[arg(long)]
    pub domain: String,
    /// The selector (`s=`), e.g. s2026.
    #[arg(long)]
    pub selector: String,
    /// Key type.
    #[arg(long, value_enum, default_value_t = KeygenAlgorithm::Rsa2048)]
    pub algorithm: KeygenAlgorithm,
    /// Where to write the private key (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Generates the key; the TXT record goes to `stdout`, the rest to stderr.
/// 0 written · 64 bad domain/selector · 73 FILE exists or cannot be written
/// · 70 the generator failed.
pub fn run_keygen(args: &KeygenArgs, stdout: &mut impl Write) -> Exit {
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    if !crate::config::is_hostname(&domain) {
        eprintln!(
            "danerelay dkim keygen: --domain {:?} is not a domain name",
            args.domain
        );
        return Exit::USAGE;
    }
    if !crate::config::is_hostname(&args.selector) {
        eprintln!(
            "danerelay dkim keygen: --selector {:?} is not a selector (letters, digits, hyphens)",
            args.selector
        );
        return Exit::USAGE;
    }
    // Before the (slow, for RSA) generation: refuse early.
    if args.out.symlink_metadata().is_ok() {
        eprintln!(
            "danerelay dkim keygen: {}",
            KeygenError::Exists {
                path: args.out.clone()
            }
        );
        return Exit::CANT_CREATE;
    }
    let algorithm = match args.algorithm {
        KeygenAlgorithm::Ed25519 => keygen::Algorithm::Ed25519,
        KeygenAlgorithm::Rsa2048 => keygen::Algorithm::Rsa2048,
    };
    let key = match keygen::generate(algorithm) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("danerelay dkim keygen: {e}");
            return Exit::SOFTWARE;
        }
    };
    if let Err(e) = keygen::write_key_file(&args.out, &key.pem) {
        eprintln!("danerelay dkim keygen: {e}");
        return match e {
            KeygenError::Generate(_) => Exit::SOFTWARE,
            KeygenError::Exists { .. } | KeygenError::Write { .. } => Exit::CANT_CREATE,
        };
    }
    eprintln!(
        "private key written to {} (mode 0600); publish this TXT record, then add a [[dkim]] table with domain = \"{domain}\", selector = \"{}\", private_key = \"{}\":",
        args.out.display(),
        args.selector,
        args.out.display()
    );
    if writeln!(
        stdout,
        "{}",
        keygen::zone_line(&args.selector, &domain, &key.record)
    )
    .is_err()
    {
        return Exit::IO;
    }
    Exit::OK
}
