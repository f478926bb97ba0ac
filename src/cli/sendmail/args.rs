//! The sendmail(8) command line, parsed by hand: its flags predate getopt
//! conventions (`-oi`, `-odi`, `-fSENDER` glued to its value), so clap
//! cannot read them. Flags applications commonly pass and that mean nothing
//! for a submission client are accepted and ignored, as Postfix's sendmail
//! does.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-t`: recipients from To/Cc/Bcc (plus any given as arguments).
    pub from_headers: bool,
    /// `-i` / `-oi`: a line with a single dot does not end the input.
    pub ignore_dots: bool,
    /// `-f SENDER` / `-r SENDER`: the envelope sender (`""` for `<>`).
    pub sender: Option<String>,
    /// `-F NAME`: the full name for an added From:.
    pub full_name: Option<String>,
    /// `--config FILE` / `-C FILE`: submit to this relay's first listener.
    pub config: Option<PathBuf>,
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
    /// `--help`: print the usage and do nothing else.
    pub help: bool,
}

/// A command line sendmail cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("unsupported option {0} (only message submission, -bm, is supported)")]
    Unsupported(String),
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// Parses the arguments after the program name (and after `sendmail` for
/// `danerelay sendmail`).
pub fn parse(args: &[OsString]) -> Result<Args, ArgsError> {
    let mut strings = Vec::with_capacity(args.len());
    for a in args {
        strings.push(
            a.to_str()
                .ok_or_else(|| ArgsError::NotUtf8(a.clone()))?
                .to_string(),
        );
    }
    let mut out = Args::default();
    let mut it = strings.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--help" {
            out.help = true;
            continue;
        }
        if arg == "--" {
            out.recipients.extend(it.by_ref());
            break;
        }
        if let Some(v) = arg.strip_prefix("--config") {
            out.config = Some(PathBuf::from(match v.strip_prefix('=') {
                Some(v) => v.to_string(),
                None if v.is_empty() => value(&mut it, "--config")?,
                None => return Err(ArgsError::Unsupported(arg)),
            }));
            continue;
        }
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            out.recipients.push(arg);
            continue;
        };
        let (letter, rest) = flag.split_at(1);
        match letter {
            "t" if rest.is_empty() => out.from_headers = true,
            "i" if rest.is_empty() => out.ignore_dots = true,
            "f" | "r" => out.sender = Some(unbracket(&glued(rest, &mut it, &arg)?)),
            "F" => out.full_name = Some(glued(rest, &mut it, &arg)?),
            "C" => out.config = Some(PathBuf::from(glued(rest, &mut it, &arg)?)),
            // -oi is -i; every other -oX (-odi, -oem, -oep, -om, …) tunes
            // the local queue or error reporting, which a submission client has not.
            "o" if rest == "i" => out.ignore_dots = true,
            "o" => {}
            // -bm: "read mail from stdin and deliver" is the only mode there is.
            "b" if rest == "m" => {}
            "b" => return Err(ArgsError::Unsupported(arg)),
            // Verbose, DSN-on-failure hints, body type, ESMTP envelope
            // extras: accepted and ignored; the relay applies its own defaults.
            "v" | "m" | "U" | "n" => {}
            "B" | "N" | "R" | "V" | "X" | "h" | "L" | "q" => {
                glued(rest, &mut it, &arg)?;
            }
            _ => return Err(ArgsError::Unsupported(arg)),
        }
    }
    Ok(out)
}

/// The value glued to a flag (`-fme@x`) or the next argument (`-f me@x`).
fn glued(
    rest: &str,
    it: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<String, ArgsError> {
    if rest.is_empty() {
        value(it, flag)
    } else {
        Ok(rest.to_string())
    }
}

fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, ArgsError> {
    it.next()
        .ok_or_else(|| ArgsError::MissingValue(flag.to_string()))
}

/// `-f '<me@x>'` and `-f '<>'` are common in scripts.
fn unbracket(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Args, ArgsError> {
        let v: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn cron_and_php_command_lines() {
        let a = p("-t -i").unwrap();
        assert!(a.from_headers && a.ignore_dots && a.recipients.is_empty());
        let a = p("-FCron Daemon -i -odi -oem -oi -t -f root").unwrap();
        assert_eq!(a.full_name.as_deref(), Some("Cron"));
        assert_eq!(a.recipients, vec!["Daemon".to_string()]);
        assert_eq!(a.sender.as_deref(), Some("root"));
        assert!(a.ignore_dots && a.from_headers);
    }

    #[test]
    fn glued_and_separate_values() {
        let a = p("-fme@a.example -F Me a@b.example b@b.example").unwrap();
        assert_eq!(a.sender.as_deref(), Some("me@a.example"));
        assert_eq!(a.full_name.as_deref(), Some("Me"));
        assert_eq!(a.recipients, ["a@b.example", "b@b.example"]);
        assert_eq!(p("-f <>").unwrap().sender.as_deref(), Some(""));
        assert_eq!(p("-r <x@y>").unwrap().sender.as_deref(), Some("x@y"));
        let a = p("--config /etc/r.toml -oi x@y").unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/etc/r.toml")));
        assert!(a.ignore_dots);
        let a = p("--config=/c.toml -- -odd@y").unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(a.recipients, ["-odd@y"]);
        assert_eq!(p("-bm -v -N never x@y").unwrap().recipients, ["x@y"]);
        assert!(p("--help").unwrap().help);
    }

    #[test]
    fn usage_errors() {
        assert_eq!(p("-f"), Err(ArgsError::MissingValue("-f".into())));
        assert_eq!(p("-bp"), Err(ArgsError::Unsupported("-bp".into())));
        assert_eq!(p("-bs"), Err(ArgsError::Unsupported("-bs".into())));
        assert_eq!(p("-Z"), Err(ArgsError::Unsupported("-Z".into())));
        assert_eq!(p("-tx"), Err(ArgsError::Unsupported("-tx".into())));
        assert_eq!(
            p("--configx"),
            Err(ArgsError::Unsupported("--configx".into()))
        );
    }
}
