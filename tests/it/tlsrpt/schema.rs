//! The report JSON against the RFC 8460 §4.4 schema, with Python's
//! `jsonschema` as the independent judge — and the schema against reports
//! that must fail, so a schema that accepts anything cannot pass.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use danerelay::tlsrpt::report::{build, ReportMeta};
use danerelay::tlsrpt::{Day, DomainDay, Failure, Policy, PolicyType, ResultType};

use crate::support::require_python;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/tlsrpt/tlsrpt.schema.json"
);

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema, format_checker=FormatChecker())
errors = sorted(v.iter_errors(json.load(sys.stdin)), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;

/// `Ok(())` when `report` validates, else the validator's messages.
pub fn validate(python: &Path, report: &serde_json::Value) -> Result<(), String> {
    let mut child = Command::new(python)
        .args(["-c", VALIDATE, SCHEMA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(report.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(())
    } else {
        Err(said)
    }
}

fn counts() -> DomainDay {
    let dane = Policy {
        kind: PolicyType::Tlsa,
        strings: vec!["3 1 1 0123abcd".into(), "2 1 1 feedbeef".into()],
        mx_host: vec!["mx.example.net".into()],
    };
    let mut d = DomainDay::default();
    for _ in 0..3 {
        d.add(&dane, None);
    }
    d.add(
        &dane,
        Some(Failure {
            result: ResultType::TlsaInvalid,
            sending_mta_ip: Some("2001:db8::25".parse().unwrap()),
            receiving_mx_hostname: Some("mx.example.net".into()),
            receiving_ip: Some("192.0.2.1".parse().unwrap()),
            reason: Some("Failed(NoMatch)".into()),
        }),
    );
    let none = Policy::no_policy();
    d.add(&none, None);
    for result in [
        ResultType::StarttlsNotSupported,
        ResultType::ValidationFailure,
    ] {
        d.add(
            &none,
            Some(Failure {
                result,
                sending_mta_ip: None,
                receiving_mx_hostname: Some("mx2.example.net".into()),
                receiving_ip: None,
                reason: None,
            }),
        );
    }
    d
}

fn meta() -> ReportMeta {
    ReportMeta {
        organization: "Example Relay Operators".into(),
        contact: "postmaster@relay.test".into(),
        submitter: "relay.test".into(),
        day: Day::parse("2026-12-04").unwrap(),
    }
}

#[test]
fn reports_validate_against_the_rfc_8460_schema() {
    let Some(python) = require_python(&["jsonschema"]) else {
        return;
    };
    let report = build(&meta(), "example.net", &counts());
    validate(&python, &report).unwrap_or_else(|e| panic!("{e}\n{report:#}"));
    // A day with only successes (no failure-details at all) is valid too.
    let mut ok = DomainDay::default();
    ok.add(&Policy::no_policy(), None);
    validate(&python, &build(&meta(), "example.net", &ok)).unwrap();
}

/// Spoils a good report in one way.
type Breaker = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn the_schema_refuses_reports_that_break_rfc_8460() {
    let Some(python) = require_python(&["jsonschema"]) else {
        return;
    };
    let good = build(&meta(), "example.net", &counts());
    let broken: Vec<(&str, Breaker)> = vec![
        (
            "no report-id",
            Box::new(|r| {
                r.as_object_mut().unwrap().remove("report-id");
            }),
        ),
        (
            "bad date",
            Box::new(|r| r["date-range"]["start-datetime"] = "2026-12-04".into()),
        ),
        (
            "unknown policy type",
            Box::new(|r| r["policies"][0]["policy"]["policy-type"] = "dane".into()),
        ),
        (
            "unknown result type",
            Box::new(|r| {
                r["policies"][0]["failure-details"][0]["result-type"] = "tls-broken".into()
            }),
        ),
        (
            "count as string",
            Box::new(|r| r["policies"][0]["summary"]["total-failure-session-count"] = "1".into()),
        ),
        (
            "bad ip",
            Box::new(|r| {
                r["policies"][0]["failure-details"][0]["receiving-ip"] = "mx.example.net".into()
            }),
        ),
        (
            "misspelt field",
            Box::new(|r| {
                r["policies"][0]["summary"]["total-successful-sessions"] = 1.into();
            }),
        ),
    ];
    for (what, f) in broken {
        let mut r = good.clone();
        f(&mut r);
        assert!(
            validate(&python, &r).is_err(),
            "schema accepted a report with {what}"
        );
    }
}
