//! `danerelay dane verify`: an offline RFC 7672 check of a PEM chain against
//! TLSA records, through the same [`verify_chain`] delivery uses. Prints the
//! verdict word first (`verified`, `no-usable-tlsa`, `failed`); exit 0, 3, 1,
//! or 2 for a usage error (the README fixes these four).

use std::io::Write;
use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::json;

use crate::dane::policy::DaneTarget;
use crate::dane::tlsa::TlsaRecord;
use crate::dane::verify::{verify_chain, Verdict};
use crate::dane::DaneError;

use super::exit::Exit;

/// `danerelay dane verify --name HOST --chain FILE.pem --tlsa "U S M HEX"…`
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// TLSA base domain (the MX host name after CNAME expansion).
    #[arg(long, value_name = "HOST")]
    pub name: String,
    /// PEM file with the chain the server sends, leaf first.
    #[arg(long, value_name = "FILE.pem")]
    pub chain: PathBuf,
    /// TLSA record in presentation form "U S M HEX"; repeatable.
    #[arg(long = "tlsa", value_name = "U S M HEX", required = true)]
    pub tlsa: Vec<String>,
    /// Another name a DANE-TA leaf may carry (the original MX name, the
    /// next-hop domain); a leading dot (`.example.com`) accepts any strict
    /// subdomain.
    #[arg(long = "reference-name", value_name = "NAME")]
    pub reference_names: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command, writing its report to `out`; returns the exit code.
pub fn run_verify(args: &VerifyArgs, out: &mut dyn Write) -> Exit {
    let (code, report) = match evaluate(args) {
        Ok((verdict, records)) => (exit_code(&verdict), render(args.json, &verdict, &records)),
        Err(e) => (
            Exit::DANE_USAGE,
            if args.json {
                json!({ "error": e.to_string() }).to_string()
            } else {
                format!("error: {e}")
            },
        ),
    };
    // A closed stdout cannot change the verdict; the exit code still does.
    let _ = writeln!(out, "{report}");
    code
}

fn evaluate(args: &VerifyArgs) -> Result<(Verdict, Vec<TlsaRecord>), DaneError> {
    let records = args
        .tlsa
        .iter()
        .map(|t| TlsaRecord::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let name = args.name.trim_end_matches('.');
    if name.is_empty() {
        return Err(DaneError::InvalidName {
            name: args.name.clone(),
        });
    }
    let chain = read_chain(&args.chain)?;
    let target = DaneTarget::new(name, name, records.clone());
    let mut reference_names = target.reference_names;
    reference_names.extend(args.reference_names.iter().cloned());
    let verdict = verify_chain(
        &target.base_domain,
        &reference_names,
        &chain,
        &records,
        UnixTime::now(),
    );
    Ok((verdict, records))
}

fn read_chain(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, DaneError> {
    let err = |reason: String| DaneError::ChainFile {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(chain)
}

fn exit_code(verdict: &Verdict) -> Exit {
    match verdict {
        Verdict::Verified(_) => Exit::OK,
        Verdict::Failed(_) => Exit::DANE_FAILED,
        Verdict::NoUsableTlsa => Exit::DANE_NO_USABLE_TLSA,
    }
}

fn verdict_parts(verdict: &Verdict) -> (&'static str, String) {
    match verdict {
        Verdict::Verified(m) => ("verified", format!("dane-verified ({m})")),
        Verdict::NoUsableTlsa => (
            "no-usable-tlsa",
            "no record is DANE-TA(2)/DANE-EE(3) with a known selector, matching type and valid data"
                .into(),
        ),
        Verdict::Failed(f) => ("failed", f.to_string()),
    }
}

fn render(as_json: bool, verdict: &Verdict, records: &[TlsaRecord]) -> String {
    let (word, reason) = verdict_parts(verdict);
    if as_json {
        let matched = match verdict {
            Verdict::Verified(m) => json!({
                "usage": m.usage, "selector": m.selector, "matching": m.matching, "depth": m.depth,
            }),
            _ => serde_json::Value::Null,
        };
        let records: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "record": r.to_string(),
                    "usable": r.is_usable(),
                    "unusable_reason": r.usability().err().map(|e| e.to_string()),
                })
            })
            .collect();
        return json!({ "verdict": word, "reason": reason, "match": matched, "records": records })
            .to_string();
    }
    let mut text = format!("{word} - {reason}");
    for r in records {
        if let Err(why) = r.usability() {
            text.push_str(&format!("\n  ignored unusable TLSA {}: {why}", r.params()));
        }
    }
    text
}
