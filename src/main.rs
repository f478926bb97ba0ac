//! The `danerelay` command line: parse arguments, set up logging, load and
//! validate the configuration (exit 64 when invalid), run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use danerelay::config::{self, Config};

/// sysexits.h: configuration or usage data were wrong.
const EX_CONFIG: u8 = 64;
/// sysexits.h: a service is unavailable.
const EX_UNAVAILABLE: u8 = 69;

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

#[derive(Args)]
struct ConfigArg {
    /// Configuration file; without it, the embedded development default.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    Queue(QueueCommand),
    /// Offline DANE checks.
    #[command(subcommand)]
    Dane(DaneCommand),
    /// Show what a delivery to DOMAIN would do, without sending mail.
    TlsCheck {
        domain: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Read a password from stdin and add or update EMAIL with an Argon2id hash.
    Add {
        email: String,
        /// Users file (default: auth.users_file of --config, else /etc/danerelay/users.toml).
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Where the admin API is: `http.address`/`http.admin_token` of `--config`
/// (the embedded default without it), overridden by `--api`/`--token`.
#[derive(Args)]
struct ApiArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Admin API address (host:port), instead of http.address.
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// Bearer token, instead of http.admin_token.
    #[arg(long, env = "DANERELAY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List queued messages.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one message.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Open recipients per destination domain, with ages (like Postfix qshape).
    Summary {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Hold messages (no delivery until released).
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Release held messages.
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete messages without notifying anyone.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Retry messages now.
    Retry {
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum DaneCommand {
    /// Check a certificate chain (leaf first) against TLSA records (RFC 7672).
    Verify(danerelay::dane::cli::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.log.as_deref());
    match cli.command {
        Command::Serve(arg) => serve(arg),
        Command::CheckConfig(arg) => check_config(arg),
        Command::User(UserCommand::Add {
            email,
            users,
            config,
        }) => user_add(&email, users, &config),
        Command::Queue(cmd) => queue(cmd),
        Command::Dane(DaneCommand::Verify(args)) => {
            let code = danerelay::dane::cli::run_verify(&args, &mut std::io::stdout().lock());
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
        Command::TlsCheck {
            domain,
            config,
            json,
        } => tls_check(&domain, &config, json),
    }
}

/// `danerelay tls-check`: exit 0 when some host would take mail now, 1 when
/// every host (or the routing) defers or bounces, 2 on a setup problem.
fn tls_check(domain: &str, arg: &ConfigArg, json: bool) -> ExitCode {
    use danerelay::delivery::{attempt::EngineOptions, tls_check};
    let config = match load(arg, true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(async {
        let dns = danerelay::dns::build(&config.dns)?;
        let options = EngineOptions::from_config(&config.delivery);
        Ok::<_, danerelay::dns::DnsError>(tls_check::check(dns.as_ref(), &options, domain).await)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tls-check: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tls-check: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", tls_check::render_text(&report));
    }
    if report.deliverable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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

/// Loads `--config` or the embedded default, printing every error.
/// Warnings go to the log (`serve`) or plainly to stderr (`check-config`).
fn load(arg: &ConfigArg, plain_warnings: bool) -> Result<Config, ExitCode> {
    let Some(path) = &arg.config else {
        return Ok(config::development());
    };
    match config::load_file(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                if plain_warnings {
                    eprintln!("{}: warning: {w}", path.display());
                } else {
                    tracing::warn!("{}: {w}", path.display());
                }
            }
            Ok(loaded.config)
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in &errors {
                let _ = writeln!(err, "{}: {e}", path.display());
            }
            let _ = writeln!(err, "{}: {} error(s)", path.display(), errors.len());
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn check_config(arg: ConfigArg) -> ExitCode {
    match load(&arg, true) {
        Ok(_) => {
            let what = arg
                .config
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded development default".into());
            println!("{what}: valid");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn serve(arg: ConfigArg) -> ExitCode {
    let config = match load(&arg, false) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if arg.config.is_none() {
        tracing::info!("no --config: running on the embedded development default (loopback only)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(danerelay::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn queue(cmd: QueueCommand) -> ExitCode {
    use danerelay::http::admin_client::{AdminClient, QueueAction};
    let (action, api) = match cmd {
        QueueCommand::List { json, api } => (QueueAction::List { json }, api),
        QueueCommand::Show { id, json, api } => (QueueAction::Show { id, json }, api),
        QueueCommand::Summary { json, api } => (QueueAction::Summary { json }, api),
        QueueCommand::Hold { ids, api } => (QueueAction::Hold(ids), api),
        QueueCommand::Release { ids, api } => (QueueAction::Release(ids), api),
        QueueCommand::Delete { ids, api } => (QueueAction::Delete(ids), api),
        QueueCommand::Retry { all: true, api, .. } => (QueueAction::RetryAll, api),
        QueueCommand::Retry { ids, api, .. } => (QueueAction::Retry(ids), api),
    };
    let config = match load(&api.config, false) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let client = AdminClient::new(
        api.api.unwrap_or(config.http.address),
        api.token.or(config.http.admin_token),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("danerelay queue: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(client.run(action, &mut std::io::stdout().lock())) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("danerelay queue: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `user add`: the password is the first line of stdin (so `echo pw |` and
/// a terminal both work); the users file is `--users`, else the config's
/// `auth.users_file`, else the conventional path.
fn user_add(email: &str, users: Option<PathBuf>, config: &ConfigArg) -> ExitCode {
    use std::io::Read;
    let users = match users {
        Some(u) => u,
        None if config.config.is_some() => match load(config, true) {
            Ok(c) => match c.auth.users_file {
                Some(u) => u,
                None => {
                    eprintln!("danerelay user add: auth.users_file is not set in the config; pass --users FILE");
                    return ExitCode::from(EX_CONFIG);
                }
            },
            Err(code) => return code,
        },
        None => PathBuf::from("/etc/danerelay/users.toml"),
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("danerelay user add: reading the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.lines().next().unwrap_or("");
    match danerelay::auth::user_add(&users, email, password) {
        Ok(()) => {
            eprintln!("user {email} written to {}", users.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("danerelay user add: {e}");
            ExitCode::FAILURE
        }
    }
}
