//! `danerelay queue …`: administer the queue of a running relay through its
//! admin API (`[http] address` and `admin_token` of `--config`). Tables for
//! people, the API's JSON with `--json` for scripts.

pub mod client;
mod render;

use std::io::Write;
use std::net::SocketAddr;

use hyper::{Method, StatusCode};

use crate::http::admin::{Changed, MessageView, RetryAll, Summary};

use self::client::{encode, AdminApiError, AdminClient};
use super::config::{ConfigArg, Warnings};
use super::exit::Exit;

/// Where the admin API is: `http.address`/`http.admin_token` of `--config`
/// (the embedded default without it), overridden by `--api`/`--token`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Admin API address (host:port), instead of http.address.
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Bearer token, instead of http.admin_token.
    #[arg(long, env = "DANERELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The `danerelay queue` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
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

/// One action, without the question of where the API is.
#[derive(Debug, Clone)]
enum Action {
    List { json: bool },
    Show { id: String, json: bool },
    Summary { json: bool },
    Hold(Vec<String>),
    Release(Vec<String>),
    Delete(Vec<String>),
    Retry(Vec<String>),
    RetryAll,
}

fn split(cmd: QueueCommand) -> (Action, ApiArgs) {
    match cmd {
        QueueCommand::List { json, api } => (Action::List { json }, api),
        QueueCommand::Show { id, json, api } => (Action::Show { id, json }, api),
        QueueCommand::Summary { json, api } => (Action::Summary { json }, api),
        QueueCommand::Hold { ids, api } => (Action::Hold(ids), api),
        QueueCommand::Release { ids, api } => (Action::Release(ids), api),
        QueueCommand::Delete { ids, api } => (Action::Delete(ids), api),
        QueueCommand::Retry { all: true, api, .. } => (Action::RetryAll, api),
        QueueCommand::Retry { ids, api, .. } => (Action::Retry(ids), api),
    }
}

/// Runs one `danerelay queue` command against the relay's admin API.
pub fn run(cmd: QueueCommand) -> Exit {
    let (action, api) = split(cmd);
    let config = match api.config.load_or_exit(Warnings::Plain) {
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
            return Exit::SOFTWARE;
        }
    };
    match runtime.block_on(execute(&client, action, &mut std::io::stdout().lock())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("danerelay queue: {e}");
            exit_for(&e)
        }
    }
}

/// The exit code for a call that failed as a whole.
fn exit_for(e: &AdminApiError) -> Exit {
    match e {
        AdminApiError::Connect { .. } | AdminApiError::Http { .. } => Exit::UNAVAILABLE,
        AdminApiError::Status { status, .. } => match *status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Exit::NO_PERM,
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Exit::DATA,
            StatusCode::SERVICE_UNAVAILABLE => Exit::TEMP_FAIL,
            s if s.is_server_error() => Exit::UNAVAILABLE,
            // Any other 4xx: this client asked something the API does not
            // know, i.e. client and server versions disagree.
            _ => Exit::PROTOCOL,
        },
        AdminApiError::Decode(_) => Exit::PROTOCOL,
        AdminApiError::Request(_) => Exit::USAGE,
    }
}

/// Runs one action, printing to `out`: 0 when all done, 65 when some id was
/// unknown or malformed (the others are still acted on).
async fn execute(
    client: &AdminClient,
    action: Action,
    out: &mut dyn Write,
) -> Result<Exit, AdminApiError> {
    match action {
        Action::List { json } => {
            let (list, raw): (Vec<MessageView>, _) = client.json(Method::GET, "/api/queue").await?;
            show(out, json, &raw, |out| render::print_table(&list, out));
        }
        Action::Show { id, json } => {
            let path = format!("/api/queue/{}", encode(&id));
            let (m, raw): (MessageView, _) = client.json(Method::GET, &path).await?;
            show(out, json, &raw, |out| render::print_message(&m, out));
        }
        Action::Summary { json } => {
            let (s, raw): (Summary, _) = client.json(Method::GET, "/api/queue/summary").await?;
            show(out, json, &raw, |out| render::print_summary(&s, out));
        }
        Action::RetryAll => {
            let (r, _): (RetryAll, _) = client.json(Method::POST, "/api/queue/retry").await?;
            let _ = writeln!(out, "{} message(s) scheduled for immediate retry", r.count);
        }
        Action::Hold(ids) => return each(client, ids, Method::POST, "hold", "held", out).await,
        Action::Release(ids) => {
            return each(client, ids, Method::POST, "release", "released", out).await
        }
        Action::Retry(ids) => {
            return each(
                client,
                ids,
                Method::POST,
                "retry",
                "scheduled for retry",
                out,
            )
            .await
        }
        Action::Delete(ids) => return each(client, ids, Method::DELETE, "", "deleted", out).await,
    }
    Ok(Exit::OK)
}

/// The API's JSON as it came (`--json`), else the table.
fn show(out: &mut dyn Write, json: bool, raw: &[u8], table: impl FnOnce(&mut dyn Write)) {
    if json {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(raw));
    } else {
        table(out);
    }
}

/// One call per id; an unknown or malformed id is reported and the rest
/// still run, any other failure stops.
async fn each(
    client: &AdminClient,
    ids: Vec<String>,
    method: Method,
    verb: &str,
    done: &str,
    out: &mut dyn Write,
) -> Result<Exit, AdminApiError> {
    let mut code = Exit::OK;
    for id in ids {
        let path = if verb.is_empty() {
            format!("/api/queue/{}", encode(&id))
        } else {
            format!("/api/queue/{}/{verb}", encode(&id))
        };
        match client.json::<Changed>(method.clone(), &path).await {
            Ok((c, _)) if c.changed => {
                let _ = writeln!(out, "{id}: {done}");
            }
            Ok(_) => {
                let _ = writeln!(out, "{id}: unchanged (already {done})");
            }
            Err(AdminApiError::Status { status, message })
                if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST =>
            {
                let _ = writeln!(out, "{id}: {message}");
                code = Exit::DATA;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: StatusCode) -> Exit {
        exit_for(&AdminApiError::Status {
            status,
            message: String::new(),
        })
    }

    #[test]
    fn each_failure_kind_has_its_sysexits_code() {
        let refused = AdminApiError::Connect {
            address: "127.0.0.1:9".parse().unwrap(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(exit_for(&refused).code(), 69);
        assert_eq!(status(StatusCode::FORBIDDEN).code(), 77);
        assert_eq!(status(StatusCode::UNAUTHORIZED).code(), 77);
        assert_eq!(status(StatusCode::NOT_FOUND).code(), 65);
        assert_eq!(status(StatusCode::BAD_REQUEST).code(), 65);
        assert_eq!(status(StatusCode::SERVICE_UNAVAILABLE).code(), 75);
        assert_eq!(status(StatusCode::INTERNAL_SERVER_ERROR).code(), 69);
        assert_eq!(status(StatusCode::METHOD_NOT_ALLOWED).code(), 76);
        assert_eq!(exit_for(&AdminApiError::Decode(String::new())).code(), 76);
        assert_eq!(exit_for(&AdminApiError::Request(String::new())).code(), 64);
    }
}
