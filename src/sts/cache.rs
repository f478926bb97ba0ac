//! The policy cache's record and its pure rules (RFC 8461 §3.3, §5.1): a
//! cached policy is valid for `max_age` from its fetch; the TXT `id` names
//! the policy version, so a different id means a new fetch; a policy close
//! to expiry is refetched on use (proactively, so a domain whose policy
//! server is down for a while keeps its policy); when discovery or a fetch
//! fails, an unexpired cached policy stays in force (§3.1, §5.1: the
//! attacker who removes the TXT record must not remove the policy).
//!
//! Records live in the queue database's state table, namespace
//! [`NAMESPACE`], keyed by the lower-case domain, as JSON.

use serde::{Deserialize, Serialize};

use super::policy::{parse_policy, Policy, PolicyError};

/// The queue state namespace of cached policies.
pub const NAMESPACE: &str = "mta-sts";

/// Refetch once at most this long before expiry (or within the last quarter
/// of a shorter `max_age`).
pub const REFRESH_MARGIN_SECS: u64 = 86_400;

/// One cached policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The TXT `id` the policy was fetched under.
    pub id: String,
    /// Unix seconds of the fetch.
    pub fetched_at: u64,
    /// The policy text as served (the parse is derived from it).
    pub text: String,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and an integer always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for a record this version cannot read (then there is no
    /// cached policy, as after a fresh start).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn policy(&self) -> Result<Policy, PolicyError> {
        parse_policy(&self.text)
    }
}

/// A cached entry with its parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub entry: Entry,
    pub policy: Policy,
}

impl Cached {
    /// Unix seconds at which the policy stops being valid (§3.2 `max_age`).
    pub fn expires_at(&self) -> u64 {
        self.entry.fetched_at.saturating_add(self.policy.max_age)
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_at()
    }

    /// Within the refresh margin before expiry (or past it).
    pub fn refresh_due(&self, now: u64) -> bool {
        let margin = REFRESH_MARGIN_SECS.min(self.policy.max_age / 4);
        now.saturating_add(margin) >= self.expires_at()
    }
}

/// What discovery found in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A valid `v=STSv1` record with this id.
    Id(String),
    /// No (valid, single) record, or the lookup failed.
    Nothing,
}

/// What to do for one use of a domain's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Use the cached policy as is.
    UseCached,
    /// Fetch; if that fails, use the cached policy when it has not expired.
    Fetch { id: String },
    /// No policy in force.
    NoPolicy,
}

/// The rule (pure). `force`: a re-check before giving up on a message
/// (§5.1), so the cached policy is not taken on trust.
pub fn plan(cached: Option<&Cached>, found: &Discovery, now: u64, force: bool) -> Plan {
    let live = cached.filter(|c| !c.expired(now));
    match found {
        // §3.1: a new id means a new policy; same id and fresh ⇒ cached.
        Discovery::Id(id) => match live {
            Some(c) if c.entry.id == *id && !force && !c.refresh_due(now) => Plan::UseCached,
            _ => Plan::Fetch { id: id.clone() },
        },
        // §5.1 / §10.3: a missing TXT does not cancel an unexpired policy.
        Discovery::Nothing => match live {
            Some(_) => Plan::UseCached,
            None => Plan::NoPolicy,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sts::policy::Mode;

    fn cached(id: &str, fetched_at: u64, max_age: u64) -> Cached {
        let text =
            format!("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: {max_age}\n");
        let entry = Entry {
            id: id.into(),
            fetched_at,
            text,
        };
        let policy = entry.policy().unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        Cached { entry, policy }
    }

    #[test]
    fn entries_round_trip_and_garbage_is_no_entry() {
        let c = cached("a1", 100, 604800);
        assert_eq!(Entry::decode(&c.entry.encode()), Some(c.entry.clone()));
        assert_eq!(Entry::decode(b"{not json"), None);
        assert_eq!(c.expires_at(), 604_900);
    }

    #[test]
    fn the_id_and_max_age_decide_when_to_fetch() {
        let id = |s: &str| Discovery::Id(s.into());
        let week = 604_800;
        let c = cached("a1", 1000, week);
        let fetch = |s: &str| Plan::Fetch { id: s.into() };
        // Nothing cached.
        assert_eq!(plan(None, &id("a1"), 1000, false), fetch("a1"));
        assert_eq!(plan(None, &Discovery::Nothing, 1000, false), Plan::NoPolicy);
        // Same id, fresh: cached; a new id: refetch.
        assert_eq!(plan(Some(&c), &id("a1"), 2000, false), Plan::UseCached);
        assert_eq!(plan(Some(&c), &id("b2"), 2000, false), fetch("b2"));
        // A forced re-check fetches even under the same id.
        assert_eq!(plan(Some(&c), &id("a1"), 2000, true), fetch("a1"));
        // Proactive refresh in the last day before expiry, not before.
        let expiry = 1000 + week;
        assert_eq!(
            plan(Some(&c), &id("a1"), expiry - 86_401, false),
            Plan::UseCached
        );
        assert_eq!(
            plan(Some(&c), &id("a1"), expiry - 86_400, false),
            fetch("a1")
        );
        assert_eq!(plan(Some(&c), &id("a1"), expiry, false), fetch("a1"));
        // No TXT (removed, or DNS failing): the unexpired policy stays.
        assert_eq!(
            plan(Some(&c), &Discovery::Nothing, expiry - 1, false),
            Plan::UseCached
        );
        assert_eq!(
            plan(Some(&c), &Discovery::Nothing, expiry, false),
            Plan::NoPolicy
        );
        // A short max_age refreshes in its last quarter.
        let short = cached("s", 0, 400);
        assert_eq!(plan(Some(&short), &id("s"), 299, false), Plan::UseCached);
        assert_eq!(plan(Some(&short), &id("s"), 300, false), fetch("s"));
    }
}
