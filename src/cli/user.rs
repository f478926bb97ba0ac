//! `danerelay user add EMAIL`: the password is the first line of stdin (so
//! `echo pw |` and a terminal both work); the users file is `--users`, else
//! the config's `auth.users_file`, else the conventional path.

use std::io::Read;
use std::path::PathBuf;

use crate::auth::AuthError;

use super::config::{ConfigArg, Warnings};
use super::exit::Exit;

/// Where the users file is when neither `--users` nor `--config` says.
const DEFAULT_USERS_FILE: &str = "/etc/danerelay/users.toml";

/// `danerelay user add EMAIL [--users FILE] [--config FILE]`
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    /// The login: a full email address.
    pub email: String,
    /// Users file (default: auth.users_file of --config, else /etc/danerelay/users.toml).
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Mark the account `relay = true`: another danerelay handing its queue
    /// over (`queue drain`); exempt from sender_policy, may send MAIL FROM:<>
    /// and X-DANERELAY-ARRIVAL. Without it (or --no-relay) an existing flag is kept.
    #[arg(long, conflicts_with = "no_relay")]
    pub relay: bool,
    /// Clear the relay flag.
    #[arg(long)]
    pub no_relay: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Adds or updates the user.
pub fn add(args: &AddArgs) -> Exit {
    let users = match users_file(args) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("danerelay user add: reading the password from stdin: {e}");
        return Exit::IO;
    }
    let password = input.lines().next().unwrap_or("");
    match crate::auth::user_add(&users, &args.email, password, relay_flag(args)) {
        Ok(()) => {
            eprintln!("user {} written to {}", args.email, users.display());
            Exit::OK
        }
        Err(e) => {
            eprintln!("danerelay user add: {e}");
            exit_for(&e)
        }
    }
}

fn relay_flag(args: &AddArgs) -> Option<bool> {
    match (args.relay, args.no_relay) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn users_file(args: &AddArgs) -> Result<PathBuf, Exit> {
    if let Some(u) = &args.users {
        return Ok(u.clone());
    }
    if args.config.config.is_none() {
        return Ok(PathBuf::from(DEFAULT_USERS_FILE));
    }
    let config = args.config.load_or_exit(Warnings::Plain)?;
    config.auth.users_file.ok_or_else(|| {
        eprintln!(
            "danerelay user add: auth.users_file is not set in the config; pass --users FILE"
        );
        Exit::CONFIG
    })
}

/// File problems are 66/73 rather than 77, as sysexits.h asks.
fn exit_for(e: &AuthError) -> Exit {
    match e {
        AuthError::BadEmail { .. } => Exit::USAGE,
        AuthError::EmptyPassword | AuthError::Parse { .. } => Exit::DATA,
        AuthError::Read { .. } => Exit::NO_INPUT,
        AuthError::Write { .. } => Exit::CANT_CREATE,
        AuthError::Hash(_) | AuthError::Task(_) => Exit::SOFTWARE,
    }
}
