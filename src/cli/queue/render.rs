//! How `danerelay queue` shows the admin API's answers to people: tables
//! like `postqueue -p` and `qshape`, ages in s/m/h/d. Scripts use `--json`,
//! which prints the API's own JSON untouched.

use std::io::Write;

use crate::http::admin::{MessageView, Summary};

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn print_table(list: &[MessageView], out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "{:<12}  {:<8}  {:>5}  {:>9}  {:<30}  RECIPIENTS",
        "ID", "STATE", "AGE", "SIZE", "SENDER"
    );
    for m in list {
        let open = m
            .recipients
            .iter()
            .filter(|r| r.state == "pending" || r.state == "deferred")
            .count();
        let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
        let suspended = match m.recipients.iter().filter(|r| r.suspended).count() {
            0 => String::new(),
            n => format!(" ({n} suspended)"),
        };
        let _ = writeln!(
            out,
            "{:<12}  {:<8}  {:>5}  {:>9}  {:<30}  {open}/{}{suspended}",
            m.id,
            m.state,
            age(m.age_seconds),
            m.size,
            sender,
            m.recipients.len()
        );
    }
    let _ = writeln!(out, "-- {} message(s)", list.len());
}

pub fn print_message(m: &MessageView, out: &mut dyn Write) {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    let _ = writeln!(out, "id:           {}", m.id);
    let _ = writeln!(out, "state:        {}", m.state);
    let _ = writeln!(out, "sender:       {sender}");
    let _ = writeln!(out, "size:         {}", m.size);
    let _ = writeln!(
        out,
        "received:     {} ({} ago)",
        m.received_at,
        age(m.age_seconds)
    );
    if let Some(user) = &m.auth_user {
        let _ = writeln!(out, "auth user:    {user}");
    }
    let _ = writeln!(out, "deferrals:    {}", m.deferrals);
    let _ = writeln!(
        out,
        "next attempt: {}",
        m.next_attempt.as_deref().unwrap_or("-")
    );
    for r in &m.recipients {
        let _ = writeln!(
            out,
            "recipient:    {} {}{} attempts={} {}",
            r.address,
            r.state,
            if r.suspended { " (suspended)" } else { "" },
            r.attempts,
            r.last_reply.as_deref().unwrap_or("")
        );
    }
}

pub fn print_summary(s: &Summary, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "pending={} deferred={} held={} active={} oldest={}",
        s.pending,
        s.deferred,
        s.held,
        s.active,
        s.oldest_age_seconds.map(age).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "{:<40}  {:>8}  {:>10}  {:>6}",
        "DOMAIN", "MESSAGES", "RECIPIENTS", "OLDEST"
    );
    for d in &s.domains {
        let _ = writeln!(
            out,
            "{:<40}  {:>8}  {:>10}  {:>6}{}",
            d.domain,
            d.messages,
            d.recipients,
            age(d.oldest_age_seconds),
            if d.suspended { "  suspended" } else { "" }
        );
    }
    for v in &s.suspended {
        let until = v.until.as_deref().unwrap_or("queue resume");
        let _ = writeln!(out, "suspended: {} until {until}", v.domain);
    }
    print_destinations(s, out);
}

/// The shaping state per destination, when there is any.
fn print_destinations(s: &Summary, out: &mut dyn Write) {
    if s.destinations.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<40}  {:>9}  {:>11}  {:>9}  {:>10}  {:>10}  BACKOFF-UNTIL",
        "DESTINATION", "THROTTLED", "CONNECTIONS", "MAX-CONNS", "MSG-RATE", "CONN-RATE"
    );
    for d in &s.destinations {
        let backoff = d.backoff_until.map_or_else(
            || "-".to_string(),
            |t| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
                )
                .to_string()
            },
        );
        let _ = writeln!(
            out,
            "{:<40}  {:>9}  {:>11}  {:>9}  {:>10}  {:>10}  {backoff}",
            d.destination,
            if d.throttled { "yes" } else { "no" },
            d.connections,
            d.max_connections,
            d.message_rate.as_deref().unwrap_or("-"),
            d.connection_rate.as_deref().unwrap_or("-"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_show_throttling_and_backoff() {
        use crate::delivery::shaping::DestinationView;
        let s = Summary {
            pending: 0,
            deferred: 1,
            held: 0,
            active: 0,
            oldest_age_seconds: None,
            domains: Vec::new(),
            suspended: Vec::new(),
            destinations: vec![DestinationView {
                destination: "10:mx.gmail.test port 25".into(),
                throttled: true,
                backoff_until: Some(1_780_000_000),
                connections: 1,
                max_connections: 2,
                message_rate: Some("600/min".into()),
                connection_rate: None,
            }],
        };
        let mut out = Vec::new();
        print_summary(&s, &mut out);
        let text = String::from_utf8(out).unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with("10:mx.gmail.test"))
            .unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols[3..],
            ["yes", "1", "2", "600/min", "-", "2026-05-28T20:26:40Z"],
            "{text}"
        );
    }

    #[test]
    fn ages_pick_the_largest_unit_that_keeps_two_digits() {
        assert_eq!(age(119), "119s");
        assert_eq!(age(120), "2m");
        assert_eq!(age(7199), "119m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(172_799), "47h");
        assert_eq!(age(172_800), "2d");
    }
}
