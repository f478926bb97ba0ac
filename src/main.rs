//! The `danerelay` binary: parse arguments, set up logging, dispatch to the
//! command's front end in `danerelay::cli`, which owns its output and its
//! exit code (README "Command line").

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use danerelay::cli::{self, config::ConfigArg, dane, dkim, queue, tls_check, user};

#[derive(Parser)]
#[command(
    name = "danerelay",
    version,
    about = "Outbound SMTP relay with DANE (RFC 7672)"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. "info,danerelay::dns=debug".
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve(ConfigArg),
    /// Validate a configuration and print every problem with its key path.
    CheckConfig(ConfigArg),
    /// Manage submission users.
    #[command(subcommand)]
    User(UserCommand),
    /// Administer the queue of a running relay (through its admin API).
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Offline DANE checks.
    #[command(subcommand)]
    Dane(DaneCommand),
    /// DKIM keys.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Show what a delivery to DOMAIN would do, without sending mail.
    TlsCheck(tls_check::TlsCheckArgs),
    /// TLS reporting (RFC 8460).
    #[command(subcommand)]
    TlsRpt(cli::tls_rpt::TlsRptCommand),
    /// sendmail(8) for applications: submit the message on stdin to a relay.
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail's own options (-t, -i, -f SENDER, -F NAME, --config FILE) and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Read a password from stdin and add or update EMAIL with an Argon2id hash.
    Add(user::AddArgs),
}

#[derive(Subcommand)]
enum DaneCommand {
    /// Check a certificate chain (leaf first) against TLSA records (RFC 7672).
    Verify(dane::VerifyArgs),
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new private key and print the DNS TXT record to publish.
    Keygen(dkim::KeygenArgs),
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    // Installed as /usr/sbin/sendmail (a symlink): sendmail's command line,
    // which clap cannot read (`-oi`, `-fSENDER`).
    if args.first().is_some_and(cli::sendmail::invoked_as_sendmail) {
        return cli::sendmail::run(&args[1..]).into();
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return cli::parse_error_exit(&e, &args).into();
        }
    };
    init_tracing(cli.log_format, cli.log.as_deref());
    let exit = match cli.command {
        Command::Serve(arg) => cli::serve::run(&arg),
        Command::CheckConfig(arg) => cli::config::check_config(&arg),
        Command::User(UserCommand::Add(args)) => user::add(&args),
        Command::Queue(cmd) => queue::run(cmd),
        Command::Dane(DaneCommand::Verify(args)) => {
            dane::run_verify(&args, &mut std::io::stdout().lock())
        }
        Command::Dkim(DkimCommand::Keygen(args)) => {
            dkim::run_keygen(&args, &mut std::io::stdout().lock())
        }
        Command::TlsCheck(args) => tls_check::run(&args),
        Command::TlsRpt(cmd) => cli::tls_rpt::run(cmd),
        Command::Sendmail { args } => cli::sendmail::run(&args),
    };
    exit.into()
}

fn init_tracing(format: LogFormat, filter: Option<&str>) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|e| {
            eprintln!("invalid log filter ({e}); using \"info\"");
            tracing_subscriber::EnvFilter::new("info")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
