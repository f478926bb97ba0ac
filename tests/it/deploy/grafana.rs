//! The Grafana dashboard (deploy/grafana/danerelay.json) and its ConfigMap
//! copy for Grafana's sidecar: the copy is the file, every panel queries the
//! data-source variable, every query names only metrics, labels and label
//! values a running relay exports at start (all label combinations are
//! there at 0), and every query parses (promtool, on the queries written as
//! recording rules).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::base::*;
use super::promql::{problems, refs, Exported};
use crate::cli::{http_get, serve_minimal, wait_for_port};

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/danerelay.json")
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One query of the dashboard: where it is, its PromQL, its legend.
struct Query {
    place: String,
    expr: String,
    legend: String,
}

/// Every query: panel targets, and each `label_values` template variable.
fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "panel {} {:?} {}",
                    p["id"],
                    p["title"].as_str().unwrap_or(""),
                    t["refId"]
                ),
                expr: t["expr"].as_str().unwrap().to_string(),
                legend: t["legendFormat"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let args = q
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: only label_values(…) is used", v["name"]));
        let (selector, label) = args.rsplit_once(',').unwrap();
        // `label_values(m, l)` lists l's values: checked as grouping m by l.
        out.push(Query {
            place: format!("variable {}", v["name"]),
            expr: format!("sum by ({}) ({})", label.trim(), selector.trim()),
            legend: String::new(),
        });
    }
    out
}

/// The query as Prometheus receives it: Grafana's variables replaced by
/// what Grafana would send (`.*` for an "All"/regex selection).
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("$__rate_interval", "2m"),
        ("$__interval", "30s"),
        ("$__range", "6h"),
        ("$job", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "an unknown template variable in {expr}");
    e
}

#[test]
fn the_configmap_is_the_dashboard_and_panels_use_the_datasource_variable() {
    let text = std::fs::read_to_string(dashboard_path()).unwrap();
    let b = base();
    let cm = b.get("ConfigMap", "danerelay-grafana-dashboard");
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "Grafana's sidecar loads ConfigMaps labelled grafana_dashboard: \"1\""
    );
    assert!(
        cm["data"]["danerelay.json"].as_str() == Some(text.as_str()),
        "the ConfigMap differs from deploy/grafana/danerelay.json: run deploy/grafana/configmap.sh"
    );
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let mut ids = std::collections::BTreeSet::new();
    let mut expressions = 0;
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            expressions += 1;
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{}", v["name"]);
    }
    assert!(expressions >= 20, "{expressions} queries");
    // What the brief asks to see, each in some query.
    let all: String = queries(&d).iter().map(|q| q.expr.clone() + "\n").collect();
    for needed in [
        "danerelay_messages_received_total",
        "danerelay_messages_rejected_total",
        "danerelay_queue_messages",
        "danerelay_queue_oldest_message_age_seconds",
        "tls=\"dane-verified\"",
        "danerelay_dane_results_total",
        "status=~\"bogus|error\"",
        "danerelay_dns_lookups_total",
        "danerelay_dkim_signatures_total",
        "danerelay_delivery_tls_handshakes_total",
        "danerelay_mta_sts_fetch_total",
        "tls=\"sts-verified\"",
        "danerelay_destinations_throttled",
    ] {
        assert!(all.contains(needed), "no panel shows {needed}");
    }
    // Front and centre: the first panel below the top row is the share.
    let first = &panels(&d)[1];
    assert!(
        first["gridPos"]["y"] == 1 && first["gridPos"]["x"] == 0,
        "{}",
        first["title"]
    );
    assert!(first["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .contains("dane-verified"));
}

/// A relay started with a minimal config: nothing has happened yet, so the
/// exposition holds exactly the series that exist from the start.
fn scrape_fresh_relay() -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_server, http) = serve_minimal(dir.path());
    wait_for_port(http);
    let (status, text) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    text
}

#[test]
fn dashboard_queries_name_only_what_the_relay_exports() {
    let exported = Exported::parse(&scrape_fresh_relay());
    assert!(exported.0.contains_key("danerelay_ready"));
    let mut found = Vec::new();
    for q in queries(&dashboard()) {
        let expr = substitute(&q.expr);
        assert!(
            !refs(&expr).metrics.is_empty(),
            "{}: no danerelay metric",
            q.place
        );
        for p in problems(&expr, &q.legend, &exported) {
            found.push(format!("{}: {p}\n    {expr}", q.place));
        }
    }
    found.dedup();
    assert!(
        found.is_empty(),
        "{} problems:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// `promtool check rules` on `exprs` as recording rules: (success, output).
fn promtool_check(promtool: &Path, exprs: &[String]) -> (bool, String) {
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_norway::to_string(&doc).unwrap()).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn dashboard_queries_parse_with_promtool() {
    let Some(promtool) = crate::support::require_tool("promtool") else {
        return;
    };
    let exprs: Vec<String> = queries(&dashboard())
        .iter()
        .map(|q| substitute(&q.expr))
        .collect();
    let (ok, said) = promtool_check(&promtool, &exprs);
    assert!(ok, "promtool rejects a dashboard query:\n{said}");
    assert!(
        said.contains(&format!("{} rules found", exprs.len())),
        "{said}"
    );
    // promtool does parse: a broken query fails the same check.
    let (ok, said) = promtool_check(&promtool, &["sum by (tls (danerelay_ready)".to_string()]);
    assert!(!ok, "{said}");
}
