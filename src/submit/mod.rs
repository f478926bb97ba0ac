//! Submission of a complete message by an application (HTTP `POST
//! /api/v1/messages`), through the same steps as SMTP submission: users-file
//! authentication with the same failure throttling, `auth.sender_policy`,
//! `[limits]` (size, recipients, header section, messages per user per
//! hour), the relay's `Received:`/`Message-ID:`/`Date:` fields, DKIM
//! signing at acceptance, and the same [`MessageStore`] — the queue id comes
//! back only once the message is durable. The wire (HTTP, JSON errors) is in
//! [`crate::http::submit`]; [`compose`] turns the JSON into a message.

pub mod compose;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{sender_allowed, FailureThrottle, UserStore};
use crate::config::{Config, SenderPolicy};
use crate::dkim::Signer;
use crate::metrics::Metrics;
use crate::smtp::server::headers::{received, MessageAssembler, ReceivedInfo};
use crate::smtp::server::limits::{HeaderCheck, HeaderViolation, UserRate};
use crate::smtp::server::session::TlsInfo;
use crate::smtp::server::session_types::{Recipient, Transaction};
use crate::smtp::server::signing::SigningPipe;
use crate::smtp::server::store::{MessageStore, Submitted};
use crate::smtp::server::Guards;

/// Why a submission was not queued; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// 503: draining, or the queue cannot store now.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 401: no such user or wrong password.
    #[error("authentication failed")]
    Unauthenticated,
    /// 400: not JSON, or a member of the wrong type.
    #[error("{message}")]
    BadRequest { field: String, message: String },
    /// 422: well-formed but unusable.
    #[error(transparent)]
    Invalid(#[from] compose::Invalid),
    /// 403: `auth.sender_policy` refuses this sender for this user.
    #[error("sender <{sender}> is not allowed for {user}")]
    SenderRefused { sender: String, user: String },
    /// 413: over `limits.max_message_size`.
    #[error("message of {size} octets exceeds the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// 429: `limits.messages_per_user_per_hour` reached.
    #[error("too many messages from {0} in the last hour")]
    RateLimited(String),
    /// 503: the store or the DKIM signer failed; nothing was stored.
    #[error("message could not be stored: {0}")]
    Storage(String),
}

/// Everything a submission needs, built once at start.
pub struct Submitter {
    store: Arc<dyn MessageStore>,
    dkim: Arc<Signer>,
    users: Option<Arc<UserStore>>,
    throttle: Arc<FailureThrottle>,
    user_rate: Arc<UserRate>,
    policy: SenderPolicy,
    hostname: String,
    max_message_size: u64,
    max_recipients: usize,
    max_header_size: u64,
    max_header_fields: usize,
    accepting: Accepting,
    metrics: Metrics,
}

/// Whether new mail can be taken now; `Err` says why not (draining, the
/// queue cannot store). Handed in by the wire side, which owns readiness.
pub type Accepting = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Who is submitting, over what.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub tls: Option<TlsInfo>,
}

impl Submitter {
    /// `users` is the users file (`None`: nobody can log in, every request
    /// gets 401).
    pub fn new(
        cfg: &Config,
        store: Arc<dyn MessageStore>,
        dkim: Arc<Signer>,
        users: Option<Arc<UserStore>>,
        guards: Guards,
        accepting: Accepting,
        metrics: Metrics,
    ) -> Submitter {
        Submitter {
            store,
            dkim,
            users,
            throttle: guards.throttle,
            user_rate: guards.user_rate,
            policy: cfg.auth.sender_policy,
            hostname: cfg.hostname.clone(),
            max_message_size: cfg.limits.max_message_size,
            max_recipients: cfg.limits.max_recipients,
            max_header_size: cfg.limits.max_header_size,
            max_header_fields: cfg.limits.max_header_fields,
            accepting,
            metrics,
        }
    }

    /// The largest request body worth reading: the message limit with
    /// room for base64 (4/3) and JSON escaping.
    pub fn max_body(&self) -> usize {
        usize::try_from(self.max_message_size.saturating_mul(2)).unwrap_or(usize::MAX) + 64 * 1024
    }

    /// Checks the password (failures delayed as SMTP AUTH's are), returns
    /// the canonical login.
    pub async fn authenticate(
        &self,
        client: &Client,
        login: &str,
        password: &str,
    ) -> Result<String, SubmitError> {
        let verified = match &self.users {
            Some(users) => users
                .verify(login.to_string(), password.to_string())
                .await
                .map_err(|e| SubmitError::Storage(e.to_string()))?,
            None => None,
        };
        match verified {
            Some(user) => Ok(user),
            None => {
                let delay = self.throttle.record_failure(client.ip);
                tracing::warn!(client = %client.ip, ?delay, "HTTP submission: authentication failed");
                tokio::time::sleep(delay).await;
                Err(SubmitError::Unauthenticated)
            }
        }
    }

    /// Parses, checks and stores one request body from `user`.
    pub async fn submit(
        &self,
        client: &Client,
        user: &str,
        body: &[u8],
    ) -> Result<String, SubmitError> {
        (self.accepting)().map_err(SubmitError::Unavailable)?;
        let de = &mut serde_json::Deserializer::from_slice(body);
        let request: compose::Request =
            serde_path_to_error::deserialize(de).map_err(|e| SubmitError::BadRequest {
                field: e.path().to_string().trim_start_matches('.').to_string(),
                message: e.inner().to_string(),
            })?;
        let built = request.build(self.max_recipients)?;
        if !sender_allowed(self.policy, user, &built.sender) {
            return Err(SubmitError::SenderRefused {
                sender: built.sender,
                user: user.to_string(),
            });
        }
        let size = built.message.len() as u64;
        if size > self.max_message_size {
            return Err(SubmitError::TooLarge {
                size,
                limit: self.max_message_size,
            });
        }
        let mut header = HeaderCheck::new(self.max_header_size, self.max_header_fields);
        header.feed(&built.message);
        if let Some(v) = header.violation() {
            let message = match v {
                HeaderViolation::TooLarge => {
                    format!("header section over {} octets", self.max_header_size)
                }
                HeaderViolation::TooManyFields => {
                    format!("more than {} header fields", self.max_header_fields)
                }
            };
            return Err(compose::Invalid {
                field: "headers".into(),
                message,
            }
            .into());
        }
        if !self.user_rate.allow(user) {
            return Err(SubmitError::RateLimited(user.to_string()));
        }
        self.store(client, user, built).await
    }

    /// The relay's fields in front, DKIM, the store: what DATA does.
    async fn store(
        &self,
        client: &Client,
        user: &str,
        built: compose::Built,
    ) -> Result<String, SubmitError> {
        let now = SystemTime::now();
        let smtputf8 = !built.sender.is_ascii() || built.recipients.iter().any(|r| !r.is_ascii());
        let (mut pipe, id) = SigningPipe::start(self.store.clone(), self.dkim.clone());
        let trace = received(&ReceivedInfo {
            id: id.as_deref(),
            helo: Some("http-submission"),
            client: client.ip,
            tls: client.tls.as_ref(),
            auth_user: Some(user),
            hostname: &self.hostname,
            esmtp: true,
            smtputf8,
            // RFC 5321 §4.4: only when the message has exactly one recipient.
            for_rcpt: match built.recipients.as_slice() {
                [one] => Some(one.as_str()),
                _ => None,
            },
            when: now,
        });
        let mut assembler = MessageAssembler::new(trace, &self.hostname, now);
        let mut out = Vec::with_capacity(built.message.len() + 512);
        assembler.push(&built.message, &mut out);
        assembler.finish(&mut out);
        let octets = out.len() as u64;
        pipe.write(out).await;
        let rcpts = built.recipients.len();
        let tx = Transaction {
            body_8bit: built.message.iter().any(|&b| b >= 0x80),
            sender: built.sender,
            smtputf8,
            ret: None,
            envid: None,
            handoff: false,
            arrival: None,
            recipients: built
                .recipients
                .into_iter()
                .map(|address| Recipient {
                    address,
                    orcpt: None,
                    notify: None,
                })
                .collect(),
        };
        let from = tx.sender.clone();
        let submitted = Submitted {
            tx,
            auth_user: Some(user.to_string()),
            client: client.ip,
            received_at: now,
            relay_signed: false,
        };
        match pipe.commit(submitted).await {
            Ok(id) => {
                tracing::info!(queue_id = %id, from = %from, rcpts, size = octets, via = "http", "message accepted");
                self.metrics.messages_received_total.inc();
                self.metrics.received_bytes_total.inc_by(octets);
                Ok(id)
            }
            // The content itself cannot be accepted (e.g. a header line that
            // cannot be folded): the same 550 5.6.0 case as SMTP, never a 250.
            Err(e) if e.refused => Err(compose::Invalid {
                field: "raw".into(),
                message: e.detail,
            }
            .into()),
            Err(e) => {
                tracing::error!(error = %e, "HTTP submission: storing message failed");
                Err(SubmitError::Storage(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
