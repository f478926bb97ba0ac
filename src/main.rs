//! danerelay command line. Only `user add` is wired here so far (the
//! submission engineer's part); `serve` and the rest are wired by the
//! integrator.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "danerelay", version, about = "Outbound SMTP relay with DANE")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage submission users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Reads a password from stdin and writes/updates EMAIL with an Argon2id hash.
    Add {
        email: String,
        /// The users file (auth.users_file).
        #[arg(long, default_value = "/etc/danerelay/users.toml")]
        users: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::User {
            command: UserCommand::Add { email, users },
        } => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("danerelay: reading the password from stdin: {e}");
                return ExitCode::from(1);
            }
            // One line: the password, without its line ending.
            let password = input.lines().next().unwrap_or("");
            match danerelay::auth::user_add(&users, &email, password) {
                Ok(()) => {
                    eprintln!("user {email} written to {}", users.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("danerelay: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
