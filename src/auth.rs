//! Who may submit, and as whom: the users file (TOML, Argon2id PHC hashes,
//! written by `danerelay user add`), password verification off the async
//! runtime, the failure throttle (`auth/throttle.rs`), and the
//! `auth.sender_policy` decision.
//!
//! Users file format:
//! ```toml
//! [[user]]
//! email = "alice@example.com"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! relay = true   # optional: another danerelay handing its queue over (`queue drain`)
//! ```
//! A relay account is exempt from `auth.sender_policy` (it forwards other
//! people's mail, bounces included) and may send `X-DANERELAY-ARRIVAL`.
//! Logins are the full email address, matched case-insensitively (RFC 4954
//! leaves the authorization identity to the server; mail clients vary case).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::SenderPolicy;

mod throttle;

pub use throttle::{failure_delay, throttle_key, FailureThrottle};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading users file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("writing users file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{email:?} is not an email address (local@domain)")]
    BadEmail { email: String },
    #[error("the password is empty")]
    EmptyPassword,
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("password verification task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    email: String,
    /// Argon2id PHC string.
    password: String,
    /// Another relay handing mail on (`queue drain`); omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    relay: bool,
}

/// `local@domain` with both parts non-empty.
fn valid_email(email: &str) -> bool {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !email
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// Writes or updates `email` in the users file with a fresh Argon2id hash
/// (default parameters: m=19 MiB, t=2, p=1 — the OWASP recommendation). The
/// file is replaced atomically (temp file + rename) with mode 0600.
/// `relay`: `Some` sets the relay flag, `None` keeps it (false for a new user).
pub fn user_add(
    users_file: &Path,
    email: &str,
    password: &str,
    relay: Option<bool>,
) -> Result<(), AuthError> {
    let email = email.trim();
    if !valid_email(email) {
        return Err(AuthError::BadEmail {
            email: email.to_string(),
        });
    }
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    let mut file = match std::fs::read_to_string(users_file) {
        Ok(text) => toml::from_str::<UsersFile>(&text).map_err(|source| AuthError::Parse {
            path: users_file.to_path_buf(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile::default(),
        Err(source) => {
            return Err(AuthError::Read {
                path: users_file.to_path_buf(),
                source,
            })
        }
    };
    let hash = hash_password(password)?;
    match file
        .users
        .iter_mut()
        .find(|u| u.email.eq_ignore_ascii_case(email))
    {
        Some(entry) => {
            entry.password = hash;
            entry.relay = relay.unwrap_or(entry.relay);
        }
        None => file.users.push(UserEntry {
            email: email.to_string(),
            password: hash,
            relay: relay.unwrap_or(false),
        }),
    }
    let text = toml::to_string(&file).map_err(|e| AuthError::Hash(e.to_string()))?;
    write_atomically(users_file, text.as_bytes())
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile_in(dir).map_err(err)?;
    tmp.1.write_all(bytes).map_err(err)?;
    tmp.1.sync_all().map_err(err)?;
    std::fs::rename(&tmp.0, path).map_err(err)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = dir.join(format!(".users.{}.tmp", rand::rng().next_u64()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    Ok((name, f))
}

/// The loaded users file; re-read when its modification time changes, so
/// `danerelay user add` takes effect without a restart.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Arc<Users>)>,
}

/// Lower-cased login → record.
type Users = HashMap<String, UserRecord>;

#[derive(Debug, Clone)]
struct UserRecord {
    email: String,
    hash: String,
    relay: bool,
}

impl UserStore {
    /// Loads the file now (a missing or broken file is a start-up error).
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let (mtime, users) = load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new((mtime, Arc::new(users))),
        })
    }

    fn current(&self) -> Arc<HashMap<String, UserRecord>> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut guard = crate::sync::lock(&self.state);
        if mtime.is_some() && mtime != guard.0 {
            match load(&self.path) {
                Ok((m, users)) => *guard = (m, Arc::new(users)),
                // Keep serving the last good file; a half-written edit must not lock everyone out.
                Err(e) => {
                    tracing::warn!(error = %e, "users file changed but cannot be loaded; keeping the previous one")
                }
            }
        }
        guard.1.clone()
    }

    /// Blocking: Argon2 verification. Returns the canonical email on success.
    /// Unknown users cost a dummy verification too, so timing does not reveal
    /// which addresses exist.
    pub fn verify_blocking(&self, login: &str, password: &str) -> Option<String> {
        let users = self.current();
        let record = users.get(&login.to_ascii_lowercase());
        let hash = record.map(|r| r.hash.as_str()).unwrap_or(DUMMY_HASH);
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        match (ok, record) {
            (true, Some(r)) => Some(r.email.clone()),
            _ => None,
        }
    }

    /// Whether `user` (as `verify` returned it) is marked `relay = true`.
    pub fn is_relay(&self, user: &str) -> bool {
        self.current()
            .get(&user.to_ascii_lowercase())
            .is_some_and(|r| r.relay)
    }

    /// Verifies on the blocking pool so the runtime keeps serving other sessions.
    pub async fn verify(
        self: &Arc<Self>,
        login: String,
        password: String,
    ) -> Result<Option<String>, AuthError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.verify_blocking(&login, &password))
            .await
            .map_err(|e| AuthError::Task(e.to_string()))
    }
}

/// Hash of a random password, for constant-ish time on unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jx8Qd4t2wAJjYmS8e1tRyR0ufqS0R5xvX4a3bdmVzHk";

fn load(path: &Path) -> Result<(Option<SystemTime>, HashMap<String, UserRecord>), AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let file: UsersFile = toml::from_str(&text).map_err(|source| AuthError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let users = file
        .users
        .into_iter()
        .map(|u| {
            (
                u.email.to_ascii_lowercase(),
                UserRecord {
                    email: u.email,
                    hash: u.password,
                    relay: u.relay,
                },
            )
        })
        .collect();
    Ok((mtime, users))
}

/// RFC 6409 §6.1: the submission server may restrict the envelope sender to
/// what the authenticated user owns. `user` is the canonical login address.
/// The null sender is only allowed under [`SenderPolicy::Any`] (a mail client
/// never needs it; an application relaying bounces uses `any`).
pub fn sender_allowed(policy: SenderPolicy, user: &str, sender: &str) -> bool {
    let split = |a: &str| {
        a.rsplit_once('@')
            .map(|(l, d)| (l.to_string(), d.to_ascii_lowercase()))
    };
    match policy {
        SenderPolicy::Any => true,
        SenderPolicy::OwnAddress => match (split(user), split(sender)) {
            (Some(u), Some(s)) => u == s || (u.0.eq_ignore_ascii_case(&s.0) && u.1 == s.1),
            _ => false,
        },
        SenderPolicy::OwnDomain => match (split(user), split(sender)) {
            (Some(u), Some(s)) => u.1 == s.1,
            _ => false,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_flag_is_set_kept_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        user_add(&path, "app@example.com", "pw", None).unwrap();
        user_add(&path, "Relay@Example.com", "pw", Some(true)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("relay = true").count(), 1, "{text}");
        let store = UserStore::open(&path).unwrap();
        assert!(store.is_relay("relay@example.com"));
        assert!(!store.is_relay("app@example.com"));
        assert!(!store.is_relay("nobody@example.com"));
        // A new password without the flag keeps it; --no-relay clears it.
        user_add(&path, "relay@example.com", "pw2", None).unwrap();
        assert!(UserStore::open(&path)
            .unwrap()
            .is_relay("relay@example.com"));
        user_add(&path, "relay@example.com", "pw2", Some(false)).unwrap();
        assert!(!UserStore::open(&path)
            .unwrap()
            .is_relay("relay@example.com"));
    }

    #[test]
    fn user_add_then_verify_and_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        user_add(&path, "Alice@Example.com", "s3cret", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("s3cret"));
        let store = UserStore::open(&path).unwrap();
        assert_eq!(
            store
                .verify_blocking("alice@example.com", "s3cret")
                .as_deref(),
            Some("Alice@Example.com")
        );
        assert_eq!(store.verify_blocking("alice@example.com", "wrong"), None);
        assert_eq!(store.verify_blocking("bob@example.com", "s3cret"), None);
        // Updating replaces the hash rather than adding a second entry.
        std::thread::sleep(std::time::Duration::from_millis(20));
        user_add(&path, "alice@example.com", "new", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("[[user]]").count(), 1);
        assert!(user_add(&path, "not-an-email", "x", None).is_err());
        assert!(user_add(&path, "a@b", "", None).is_err());
    }

    #[test]
    fn sender_policy_decisions() {
        use SenderPolicy::*;
        assert!(sender_allowed(
            OwnAddress,
            "alice@example.com",
            "alice@EXAMPLE.com"
        ));
        assert!(!sender_allowed(
            OwnAddress,
            "alice@example.com",
            "bob@example.com"
        ));
        assert!(!sender_allowed(OwnAddress, "alice@example.com", ""));
        assert!(sender_allowed(
            OwnDomain,
            "alice@example.com",
            "bob@Example.COM"
        ));
        assert!(!sender_allowed(
            OwnDomain,
            "alice@example.com",
            "bob@example.org"
        ));
        assert!(!sender_allowed(
            OwnDomain,
            "alice@example.com",
            "bob@sub.example.com"
        ));
        assert!(sender_allowed(Any, "alice@example.com", ""));
    }

    #[test]
    fn dummy_hash_parses_so_unknown_users_cost_a_verification() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
