//! Every command's front end: its arguments (clap), its output, its exit
//! code. The work itself lives where it belongs ([`crate::dane`] for
//! `dane verify`, [`crate::dkim::keygen`] for `dkim keygen`,
//! [`crate::delivery::tls_check`] for `tls-check`,
//! [`crate::auth`] for `user add`, [`crate::serve`] for `serve`); the admin
//! API's HTTP client is in [`queue`] because only `danerelay queue` uses it.
//! Exit codes are defined once, in [`exit`] (README "Command line").

pub mod config;
pub mod dane;
pub mod dkim;
pub mod exit;
pub mod queue;
pub mod sendmail;
pub mod serve;
pub mod tls_check;
pub mod tls_rpt;
pub mod user;

use std::ffi::OsString;

use self::exit::Exit;

/// Global options that take their value as the next argument; the
/// usage-error scan below must step over those values.
const GLOBAL_OPTIONS_WITH_VALUE: [&str; 2] = ["--log-format", "--log"];

/// The exit code for a command line clap rejected: 0 for `--help` and
/// `--version`, 2 for `dane verify` (the README fixes it), else 64.
pub fn parse_error_exit(err: &clap::Error, args: &[OsString]) -> Exit {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::OK,
        _ => usage_exit(args),
    }
}

/// Which command a rejected command line was meant for, from its first two
/// words (clap's error does not say).
fn usage_exit(args: &[OsString]) -> Exit {
    let mut words = Vec::new();
    let mut tokens = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(t) = tokens.next() {
        if GLOBAL_OPTIONS_WITH_VALUE.contains(&t.as_ref()) {
            tokens.next();
        } else if !t.starts_with('-') {
            words.push(t);
            if words.len() == 2 {
                break;
            }
        }
    }
    match words.as_slice() {
        [a, b] if a == "dane" && b == "verify" => Exit::DANE_USAGE,
        _ => Exit::USAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(line: &str) -> u8 {
        let args: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        usage_exit(&args).code()
    }

    #[test]
    fn usage_errors_are_64_except_dane_verify() {
        assert_eq!(usage("danerelay frobnicate"), 64);
        assert_eq!(usage("danerelay queue hold"), 64);
        assert_eq!(usage("danerelay"), 64);
        assert_eq!(usage("danerelay dane"), 64);
        assert_eq!(usage("danerelay dane verify --name mx.example"), 2);
        assert_eq!(usage("danerelay --log-format json dane verify"), 2);
        assert_eq!(usage("danerelay --log dane queue list"), 64);
        assert_eq!(usage("danerelay --log=info dane verify --json"), 2);
    }
}
