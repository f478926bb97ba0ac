//! The `danerelay` command line. (Minimal wiring of `dane verify`; the full
//! CLI is assembled by the integrator.)

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "danerelay", version, about = "Outbound SMTP relay with DANE")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// DANE tools.
    Dane {
        #[command(subcommand)]
        command: DaneCommand,
    },
}

#[derive(Subcommand)]
enum DaneCommand {
    /// Offline RFC 7672 check of a certificate chain against TLSA records.
    Verify(danerelay::dane::cli::VerifyArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Dane {
            command: DaneCommand::Verify(args),
        } => danerelay::dane::cli::run_verify(&args, &mut std::io::stdout()),
    };
    std::process::exit(code);
}
