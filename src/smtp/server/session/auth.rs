//! AUTH in a [`Session`] (RFC 4954): PLAIN (RFC 4616) and LOGIN dialogues,
//! then the verdict the I/O layer reports back after checking the password.

use super::*;

impl Session {
    pub(super) fn auth(&mut self, mechanism: u64, initial: String) -> Action {
        if self.tls.is_none() {
            return Action::Reply(Reply::encryption_required());
        }
        if !self.cfg.auth_available {
            return Action::Reply(Reply::not_implemented());
        }
        if self.helo.is_none() {
            return Action::Reply(Reply::bad_sequence("Send EHLO first"));
        }
        if self.auth_user.is_some() {
            return Action::Reply(Reply::bad_sequence("Already authenticated"));
        }
        if self.tx.is_some() {
            return Action::Reply(Reply::bad_sequence(
                "AUTH not permitted during a mail transaction",
            ));
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.state = State::AuthPlain;
                Action::Reply(Reply::auth_challenge(""))
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain_response(initial.as_bytes()),
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.state = State::AuthLoginUser;
                Action::Reply(sasl::challenge("Username:"))
            }
            smtp_proto::AUTH_LOGIN => self.auth_login_user(initial.as_bytes()),
            _ => Action::Reply(Reply::auth_mechanism_unsupported()),
        }
    }

    /// RFC 4616: an authzid other than the login itself is refused (no
    /// proxy authorization).
    pub(super) fn auth_plain_response(&mut self, line: &[u8]) -> Action {
        match sasl::parse_plain(line) {
            Ok(p) if !p.authzid.is_empty() && !p.authzid.eq_ignore_ascii_case(&p.login) => {
                self.auth_result(None)
            }
            Ok(p) => {
                self.state = State::AuthPending;
                Action::Authenticate {
                    login: p.login,
                    password: p.password,
                }
            }
            Err(reply) => Action::Reply(reply),
        }
    }

    pub(super) fn auth_login_user(&mut self, line: &[u8]) -> Action {
        match sasl::decode_text(line) {
            Ok(login) => {
                self.state = State::AuthLoginPass { login };
                Action::Reply(sasl::challenge("Password:"))
            }
            Err(reply) => Action::Reply(reply),
        }
    }

    pub(super) fn auth_login_pass(&mut self, login: String, line: &[u8]) -> Action {
        match sasl::decode_text(line) {
            Ok(password) => {
                self.state = State::AuthPending;
                Action::Authenticate { login, password }
            }
            Err(reply) => Action::Reply(reply),
        }
    }

    /// The verification result: `Some(canonical email)` on success. After
    /// `max_auth_failures` failures the connection is closed with `421 4.7.0`.
    pub fn auth_result(&mut self, user: Option<String>) -> Action {
        self.state = State::Command;
        match user {
            Some(user) => {
                self.auth_user = Some(user);
                self.junk = 0;
                Action::Reply(Reply::auth_ok())
            }
            None => {
                self.auth_failures += 1;
                self.event(SessionEvent::AuthFailed);
                if self.auth_failures >= self.cfg.max_auth_failures {
                    self.event(SessionEvent::Limit(LimitHit::AuthFailures));
                    Action::Close(Reply::too_many_auth_failures(&self.cfg.hostname))
                } else {
                    Action::Reply(Reply::auth_failed())
                }
            }
        }
    }

    /// Verification could not run at all (task panicked, file unreadable).
    pub fn auth_unavailable(&mut self) -> Action {
        self.state = State::Command;
        Action::Reply(Reply::auth_temp_failure())
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
