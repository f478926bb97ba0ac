//! Just enough PromQL and exposition-format reading to check a dashboard's
//! queries against what a running relay exports: which metric names a query
//! selects, which labels its matchers, groupings and legends name, and which
//! label values its `=` and literal `=~` matchers expect. Whether a query
//! parses at all is promtool's call (tests/it/deploy/grafana.rs).

use std::collections::{BTreeMap, BTreeSet};

/// Labels Prometheus attaches at scrape time (the ServiceMonitor's `jobLabel`
/// and the target address), not exported by the relay itself.
pub const TARGET_LABELS: &[&str] = &["job", "instance"];

/// What `/metrics` exports: sample name → label name → values seen.
#[derive(Default)]
pub struct Exported(pub BTreeMap<String, BTreeMap<String, BTreeSet<String>>>);

impl Exported {
    /// Reads the text exposition format (sample lines only).
    pub fn parse(text: &str) -> Exported {
        let mut out = Exported::default();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = out.0.entry(line[..name_end].to_string()).or_default();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').expect("unclosed labels")];
                for (k, v) in label_pairs(body) {
                    labels.entry(k).or_default().insert(v);
                }
            }
        }
        out
    }
}

/// `a="x",b="y\"z"` → pairs, unescaping values.
fn label_pairs(body: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.trim().is_empty() {
            return pairs;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {key} without a quoted value"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap_or('\\')),
                '"' => break,
                c => value.push(c),
            }
        }
        pairs.push((key.trim().trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(String),
    /// A number, a duration or a `[range]`: never a name.
    Other,
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                s.extend(chars.get(i));
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            out.push(Token::Other);
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Other);
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = ["=~", "!~", "!=", "==", ">=", "<="]
                .into_iter()
                .find(|op| two == *op)
                .map(str::to_string)
                .unwrap_or_else(|| c.to_string());
            i += op.chars().count();
            out.push(Token::Punct(op));
        }
    }
    out
}

/// What a query refers to.
#[derive(Debug, Default)]
pub struct Refs {
    /// `danerelay_*` names selected.
    pub metrics: BTreeSet<String>,
    /// (metric, label, operator, value) of each matcher in a selector.
    pub matchers: Vec<(String, String, String, String)>,
    /// Labels named by `by`, `without`, `on`, `ignoring`, `group_left/right`.
    pub grouping: BTreeSet<String>,
}

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

pub fn refs(expr: &str) -> Refs {
    let t = tokens(expr);
    let mut r = Refs::default();
    let punct = |i: usize, p: &str| t.get(i) == Some(&Token::Punct(p.to_string()));
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Token::Ident(id) if GROUPING.contains(&id.as_str()) && punct(i + 1, "(") => {
                i += 2;
                while let Some(Token::Ident(label)) = t.get(i) {
                    r.grouping.insert(label.clone());
                    i += if punct(i + 1, ",") { 2 } else { 1 };
                }
            }
            Token::Ident(id) if id.starts_with("danerelay_") => {
                r.metrics.insert(id.clone());
                if punct(i + 1, "{") {
                    i += 2;
                    while let (
                        Some(Token::Ident(label)),
                        Some(Token::Punct(op)),
                        Some(Token::Str(v)),
                    ) = (t.get(i), t.get(i + 1), t.get(i + 2))
                    {
                        r.matchers
                            .push((id.clone(), label.clone(), op.clone(), v.clone()));
                        i += if punct(i + 3, ",") { 4 } else { 3 };
                    }
                    assert!(punct(i, "}"), "{expr}: selector of {id} not understood");
                }
            }
            _ => {}
        }
        i += 1;
    }
    r
}

/// The `{{label}}` names of a Grafana legend format.
pub fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// Every way `expr` (template variables already substituted) names what the
/// relay does not export, as sentences; empty when it is all real.
pub fn problems(expr: &str, legend: &str, exported: &Exported) -> Vec<String> {
    let r = refs(expr);
    let mut out = Vec::new();
    for m in &r.metrics {
        if !exported.0.contains_key(m) {
            out.push(format!("metric {m} is not exported"));
        }
    }
    for (metric, label, op, value) in &r.matchers {
        let Some(values) = exported.0.get(metric).and_then(|ls| ls.get(label)) else {
            if exported.0.contains_key(metric) && !TARGET_LABELS.contains(&label.as_str()) {
                out.push(format!("{metric} has no label {label}"));
            }
            continue;
        };
        let wanted: Vec<&str> = match op.as_str() {
            "=" | "!=" => vec![value.as_str()],
            _ if value == ".*" || value == ".+" => vec![],
            _ => {
                let literal = |a: &str| a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                if !value.split('|').all(literal) {
                    out.push(format!("{metric}{{{label}{op}\"{value}\"}}: only alternations of literal values are checked; write one"));
                }
                value.split('|').collect()
            }
        };
        for v in wanted {
            if !values.contains(v) {
                out.push(format!("{metric} never has {label}=\"{v}\""));
            }
        }
    }
    let known = |label: &str| {
        TARGET_LABELS.contains(&label)
            || r.metrics
                .iter()
                .filter_map(|m| exported.0.get(m))
                .any(|ls| ls.contains_key(label))
    };
    let all_exported = r.metrics.iter().all(|m| exported.0.contains_key(m));
    for label in &r.grouping {
        // A missing metric is reported once, not again for its labels.
        if all_exported && !known(label) {
            out.push(format!("groups by {label}, which none of its metrics has"));
        }
    }
    for label in legend_labels(legend) {
        if !r.grouping.contains(&label) {
            out.push(format!(
                "legend names {{{{{label}}}}}, which the query does not group by"
            ));
        }
    }
    out
}

#[test]
fn reads_selectors_groupings_and_legends() {
    let r = refs(
        r#"sum by (tls, outcome) (rate(danerelay_x_total{job=~"$job",tls="dane-verified"}[5m])) / on() group_left sum(danerelay_y)"#,
    );
    assert_eq!(
        r.metrics,
        BTreeSet::from(["danerelay_x_total".into(), "danerelay_y".into()])
    );
    assert_eq!(r.matchers[1].1, "tls");
    assert_eq!(r.matchers[1].3, "dane-verified");
    assert_eq!(r.grouping, BTreeSet::from(["tls".into(), "outcome".into()]));
    assert_eq!(legend_labels("{{tls}} / {{ outcome }}"), ["tls", "outcome"]);
    let exported = Exported::parse(
        "# TYPE danerelay_x_total counter\ndanerelay_x_total{tls=\"dane-verified\",outcome=\"a\\\"b\"} 0\ndanerelay_y 1\n",
    );
    assert!(exported.0["danerelay_x_total"]["outcome"].contains("a\"b"));
    let q = r#"sum by (tls) (rate(danerelay_x_total{job=~".*",tls="dane-verified"}[5m]))"#;
    assert!(problems(q, "{{tls}}", &exported).is_empty());
    for (bad, legend, why) in [
        ("sum(danerelay_z)", "", "danerelay_z is not exported"),
        (
            r#"danerelay_x_total{tls="sts"}"#,
            "",
            "never has tls=\"sts\"",
        ),
        (
            r#"danerelay_x_total{tls=~"a|dane-verified"}"#,
            "",
            "never has tls=\"a\"",
        ),
        (
            r#"danerelay_x_total{reason="x"}"#,
            "",
            "has no label reason",
        ),
        (
            "sum by (reason) (danerelay_x_total)",
            "",
            "groups by reason",
        ),
        ("sum(danerelay_x_total)", "{{tls}}", "legend names {{tls}}"),
    ] {
        let p = problems(bad, legend, &exported);
        assert!(p.iter().any(|s| s.contains(why)), "{bad}: {p:?}");
    }
}
