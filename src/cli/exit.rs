//! Every exit code a `danerelay` command can return, defined once.
//!
//! The policy: sysexits.h codes (64–78) for every kind of failure, so that
//! scripts and service managers can tell a typo from an unreachable relay
//! from a full disk. The exceptions are the results the README's "Command
//! line" table fixes: `check-config` answers 64 for an invalid file,
//! `dane verify` and `tls-check` report their verdict in 0–3.

use std::process::ExitCode;

/// A process exit status. A newtype with named constants rather than an
/// enum, because the verdict codes of different commands share numbers
/// (`dane verify` 1 = failed, `tls-check` 1 = undeliverable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(u8);

impl Exit {
    /// 0: the command did what was asked (or the verdict is the good one).
    pub const OK: Exit = Exit(0);

    /// 64 EX_USAGE: wrong arguments (unknown flag, missing or malformed
    /// parameter); also `check-config` on an invalid or unreadable file.
    pub const USAGE: Exit = Exit(64);
    /// 65 EX_DATAERR: the input was read but is wrong: an unknown or
    /// malformed queue id, an empty password, an unparsable users file.
    pub const DATA: Exit = Exit(65);
    /// 66 EX_NOINPUT: a named input file (`--config`, the users file) does
    /// not exist or cannot be read.
    pub const NO_INPUT: Exit = Exit(66);
    /// 67 EX_NOUSER: `sendmail`: the relay refused a recipient address.
    pub const NO_USER: Exit = Exit(67);
    /// 69 EX_UNAVAILABLE: a service we need is not there: the relay's admin
    /// API is unreachable or failing, a listener cannot bind, or startup
    /// failed for a reason no narrower code names.
    pub const UNAVAILABLE: Exit = Exit(69);
    /// 70 EX_SOFTWARE: an internal error (a bug, or the async runtime would
    /// not start).
    pub const SOFTWARE: Exit = Exit(70);
    /// 73 EX_CANTCREAT: an output file (the users file) cannot be written,
    /// whatever the reason (missing directory, permissions, full disk).
    pub const CANT_CREATE: Exit = Exit(73);
    /// 74 EX_IOERR: reading stdin or another I/O operation failed.
    pub const IO: Exit = Exit(74);
    /// 75 EX_TEMPFAIL: try again later (the admin API answered 503, e.g.
    /// while the relay drains).
    pub const TEMP_FAIL: Exit = Exit(75);
    /// 76 EX_PROTOCOL: the admin API answered something that is not its
    /// protocol (not the JSON it documents).
    pub const PROTOCOL: Exit = Exit(76);
    /// 77 EX_NOPERM: the admin API refused the token (401/403). File
    /// permission problems are 66 or 73, as sysexits.h asks.
    pub const NO_PERM: Exit = Exit(77);
    /// 78 EX_CONFIG: the configuration is invalid or lacks a needed key
    /// (any command but `check-config`, which answers 64).
    pub const CONFIG: Exit = Exit(78);

    /// `dane verify`: usable TLSA records exist and none authenticates the
    /// chain (RFC 7672 §2.2, §3: no delivery to that host).
    pub const DANE_FAILED: Exit = Exit(1);
    /// `dane verify`: bad arguments, a malformed TLSA record or an
    /// unreadable chain — the README fixes 2 here, not 64.
    pub const DANE_USAGE: Exit = Exit(2);
    /// `dane verify`: no usable TLSA record was given (RFC 7672 §3.1: only
    /// DANE-TA(2) and DANE-EE(3) count).
    pub const DANE_NO_USABLE_TLSA: Exit = Exit(3);

    /// `tls-check`: every candidate host (or the routing itself) would
    /// defer or bounce; 0 means at least one host would take mail now.
    pub const TLS_CHECK_UNDELIVERABLE: Exit = Exit(1);

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self.0
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.0)
    }
}
