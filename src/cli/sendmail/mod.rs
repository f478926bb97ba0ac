//! `danerelay sendmail` (also the binary invoked as `sendmail`): the
//! sendmail(8) interface for applications that cannot speak SMTP (cron,
//! PHP's `mail()`, scripts). Reads one message on stdin, fixes it up as
//! sendmail would ([`message`]), submits it to the relay over SMTP
//! ([`submit`]) and answers with sendmail's exit codes (sysexits.h): 0
//! once the relay has queued the message; 75 when it should be tried
//! again, with nothing sent.
//!
//! Where it submits: the first listener of `--config FILE`, else
//! `DANERELAY_SUBMIT=host:port` (implicit TLS on 465 and 2465, STARTTLS
//! otherwise), else the development default's `127.0.0.1:2587`.
//! Credentials: `DANERELAY_USER` with the password in
//! `DANERELAY_PASSWORD_FILE`; without them the relay must trust our address.

mod args;
mod message;
mod submit;

use std::ffi::OsString;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use self::args::Args;
use self::message::{Additions, Message};
use self::submit::{Credentials, Relay, Submission, TlsMode};
use super::config::{ConfigArg, Warnings};
use super::exit::Exit;
use crate::config::ListenerTls;

const USAGE: &str = "\
usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [--config FILE] [RCPT...] < message
  -t          recipients from To:, Cc:, Bcc: (and any RCPT given); Bcc: is removed
  -i, -oi     a line with a single dot does not end the message
  -f SENDER   envelope sender (default: DANERELAY_USER, else $LOGNAME@hostname)
  -F NAME     full name for an added From:
  --config F  submit to the first [[listener]] of this danerelay configuration
environment: DANERELAY_SUBMIT=host:port (465/2465 implicit TLS, else STARTTLS),
  DANERELAY_USER, DANERELAY_PASSWORD_FILE (AUTH PLAIN), DANERELAY_CA_FILE (trust anchors)
exit: 0 queued, 64 usage, 65 data, 67 recipient refused, 69 unavailable,
  75 try again (nothing queued), 77 no permission, 78 configuration
";

/// Why sendmail gives up: the exit code and the reason for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub reason: String,
}

impl Failure {
    fn new(exit: Exit, reason: impl Into<String>) -> Failure {
        Failure {
            exit,
            reason: reason.into(),
        }
    }
}

/// Whether the program was invoked as `sendmail` (a symlink, or a copy
/// at /usr/sbin/sendmail), so it should read sendmail's command line.
pub fn invoked_as_sendmail(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "sendmail")
}

/// Runs sendmail with the arguments after the program (or subcommand) name.
pub fn run(argv: &[OsString]) -> Exit {
    match try_run(argv) {
        Ok(()) => Exit::OK,
        Err(f) => {
            eprintln!("sendmail: {}", f.reason);
            f.exit
        }
    }
}

fn try_run(argv: &[OsString]) -> Result<(), Failure> {
    let args = args::parse(argv).map_err(|e| Failure::new(Exit::USAGE, e.to_string()))?;
    if args.help {
        print!("{USAGE}");
        return Ok(());
    }
    let relay = relay(&args)?;
    let creds = credentials()?;
    let hostname = local_hostname();
    let sender = match (&args.sender, &creds) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.user.clone(),
        (None, None) => format!("{}@{hostname}", login_name()),
    };
    if !args.from_headers && args.recipients.is_empty() {
        return Err(Failure::new(
            Exit::USAGE,
            "no recipients given (name them, or use -t)",
        ));
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| Failure::new(Exit::IO, format!("reading the message from stdin: {e}")))?;
    let mut msg = Message::parse(&message::read_lines(&input, args.ignore_dots));
    let mut recipients = Vec::new();
    if args.from_headers {
        recipients = msg.header_recipients();
    }
    // With -t, recipients named on the command line are added (Postfix's
    // behaviour; Sendmail's would remove them).
    for r in &args.recipients {
        if !recipients.contains(r) {
            recipients.push(r.clone());
        }
    }
    if recipients.is_empty() {
        return Err(Failure::new(
            Exit::USAGE,
            "no recipient addresses found in the message header",
        ));
    }
    msg.remove_bcc();
    msg.add_missing(&Additions {
        sender: &sender,
        full_name: args.full_name.as_deref(),
        hostname: &hostname,
        now: std::time::SystemTime::now(),
    });
    let sub = Submission {
        helo: hostname,
        sender,
        recipients,
        message: msg.into_bytes(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::SOFTWARE, format!("async runtime: {e}")))?;
    rt.block_on(submit::submit(&relay, creds.as_ref(), &sub))?;
    Ok(())
}

/// `--config`'s first listener, else `DANERELAY_SUBMIT`, else the
/// development default's STARTTLS listener.
fn relay(args: &Args) -> Result<Relay, Failure> {
    let ca_file = std::env::var_os("DANERELAY_CA_FILE").map(Into::into);
    let from_listener = |address: std::net::SocketAddr, tls: ListenerTls| {
        let ip = match address.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Relay {
            host: match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            },
            port: address.port(),
            tls: match tls {
                ListenerTls::Implicit => TlsMode::Implicit,
                ListenerTls::StartTls => TlsMode::StartTls,
                ListenerTls::None => TlsMode::None,
            },
            ca_file: ca_file.clone(),
        }
    };
    if args.config.is_some() || std::env::var_os("DANERELAY_SUBMIT").is_none() {
        let arg = ConfigArg {
            config: args.config.clone(),
        };
        let config = arg
            .load(Warnings::Plain)
            .map_err(|f| Failure::new(f.exit(), "cannot use the configuration (see above)"))?;
        let Some(first) = config.listeners.first() else {
            return Err(Failure::new(
                Exit::CONFIG,
                "the configuration has no [[listener]]",
            ));
        };
        return Ok(from_listener(first.address, first.tls));
    }
    let target = std::env::var("DANERELAY_SUBMIT")
        .map_err(|_| Failure::new(Exit::CONFIG, "DANERELAY_SUBMIT is not valid UTF-8"))?;
    let (host, port) = target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| {
            Failure::new(
                Exit::CONFIG,
                format!("DANERELAY_SUBMIT={target:?} is not host:port"),
            )
        })?;
    Ok(Relay {
        host: host.to_string(),
        port,
        tls: if matches!(port, 465 | 2465) {
            TlsMode::Implicit
        } else {
            TlsMode::StartTls
        },
        ca_file,
    })
}

/// `DANERELAY_USER` and the first line of `DANERELAY_PASSWORD_FILE` (a
/// file, so the password is in neither the environment nor `ps`).
fn credentials() -> Result<Option<Credentials>, Failure> {
    let Some(user) = std::env::var("DANERELAY_USER")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let Some(path) = std::env::var_os("DANERELAY_PASSWORD_FILE") else {
        return Err(Failure::new(
            Exit::CONFIG,
            "DANERELAY_USER is set but DANERELAY_PASSWORD_FILE is not",
        ));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::new(
            Exit::NO_INPUT,
            format!("{}: {e}", Path::new(&path).display()),
        )
    })?;
    let password = text.lines().next().unwrap_or("").to_string();
    Ok(Some(Credentials { user, password }))
}

fn local_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn login_name() -> String {
    ["LOGNAME", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "nobody".to_string())
}
