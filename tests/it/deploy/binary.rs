//! The manifests against danerelay's config: check-config passes, and the
//! container's command line, ports, probes, mounts and resolver are the ones
//! that config makes the binary use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use danerelay::config::{DnssecMode, ListenerTls, TlsSource};
use serde_norway::Value;

use super::base::*;

#[test]
fn configmap_config_passes_check_config() {
    let b = base();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("danerelay.toml");
    std::fs::write(&file, b.config_text()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_danerelay"))
        .args(["check-config", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    // The only complaints allowed are the Secret-mounted files not being
    // there yet on this machine, and TLS-RPT's note that reports by mail
    // need a [[dkim]] key (the manifests configure none).
    for line in stderr.lines() {
        assert!(
            line.contains("warning:")
                && (line.contains("does not exist (yet)") || line.contains("tls_rpt.from:")),
            "{line}"
        );
    }
}

#[test]
fn container_command_line_is_what_the_binary_accepts() {
    let b = base();
    let relay = b.container("danerelay");
    let args: Vec<&str> = seq(&relay["args"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args.iter().position(|a| *a == "--config").unwrap();
    let (mount, source) = b.mount("danerelay", "config");
    assert_eq!(
        source["configMap"]["name"].as_str(),
        Some("danerelay-config")
    );
    assert_eq!(args[at + 1], format!("{mount}/danerelay.toml"));
    assert!(args.contains(&"serve"));
    assert!(args.windows(2).any(|w| w == ["--log-format", "json"]));
    // Same flags, with check-config instead of serve, on a local copy.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("danerelay.toml");
    std::fs::write(&file, b.config_text()).unwrap();
    let mut local = args.clone();
    local[at + 1] = file.to_str().unwrap();
    let serve = local.iter().position(|a| *a == "serve").unwrap();
    local[serve] = "check-config";
    let out = Command::new(env!("CARGO_BIN_EXE_danerelay"))
        .args(&local)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    // The image's default command points at the same file.
    assert!(
        dockerfile().contains(&format!("\"--config\", \"{mount}/danerelay.toml\"")),
        "Dockerfile CMD"
    );
}

#[test]
fn ports_match_the_configured_listeners() {
    let b = base();
    let config = b.config();
    let relay = b.container("danerelay");
    for addr in config.listeners.iter().map(|l| l.address) {
        assert!(
            addr.ip().is_unspecified(),
            "{addr} unreachable from the pod IP"
        );
    }
    assert!(
        config.http.address.ip().is_unspecified(),
        "kubelet and Prometheus need the pod IP"
    );
    let starttls = listener_port(&config, ListenerTls::StartTls);
    let implicit = listener_port(&config, ListenerTls::Implicit);
    let http = config.http.address.port();
    let named = |n: &str| resolve_port(relay, &Value::from(n));
    assert_eq!(named("submission"), starttls);
    assert_eq!(named("submissions"), implicit);
    assert_eq!(named("http"), http);
    let expected: BTreeSet<u16> = config
        .listeners
        .iter()
        .map(|l| l.address.port())
        .chain([http])
        .collect();
    let declared: BTreeSet<u16> = seq(&relay["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(declared, expected);

    // The client-facing Service: 587 → STARTTLS, 465 → implicit TLS.
    let svc = b.get("Service", "danerelay");
    let map: BTreeMap<u64, u16> = seq(&svc["spec"]["ports"])
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                resolve_port(relay, &p["targetPort"]),
            )
        })
        .collect();
    assert_eq!(map, BTreeMap::from([(587, starttls), (465, implicit)]));
    let headless = b.get("Service", "danerelay-headless");
    for p in seq(&headless["spec"]["ports"]) {
        assert!(
            expected.contains(&resolve_port(relay, &p["targetPort"])),
            "{p:?}"
        );
    }

    // The image exposes exactly those ports.
    let exposed: BTreeSet<u16> = dockerfile()
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(exposed, expected);
}

#[test]
fn probes_use_the_health_endpoints_on_the_http_port() {
    let b = base();
    let http = b.config().http.address.port();
    let relay = b.container("danerelay");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &relay[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(resolve_port(relay, &get["port"]), http, "{probe}");
    }
    let grace = b.pod()["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = b.config().shutdown_grace.as_secs();
    assert!(
        grace >= drain + 10,
        "terminationGracePeriodSeconds {grace} leaves no margin over shutdown_grace {drain}s"
    );
}

#[test]
fn mounts_hold_every_configured_file() {
    let b = base();
    let config = b.config();
    let TlsSource::Files {
        certificate,
        private_key,
    } = &config.tls
    else {
        panic!("the base must use the Secret's certificate")
    };
    let (tls_dir, tls) = b.mount("danerelay", "tls");
    assert_eq!(tls["secret"]["secretName"].as_str(), Some("danerelay-tls"));
    assert!(
        tls["secret"]["items"].is_null(),
        "kubernetes.io/tls keys are used as they are"
    );
    assert_eq!(certificate, &Path::new(&tls_dir).join("tls.crt"));
    assert_eq!(private_key, &Path::new(&tls_dir).join("tls.key"));

    let (users_dir, users) = b.mount("danerelay", "users");
    assert_eq!(
        users["secret"]["secretName"].as_str(),
        Some("danerelay-users")
    );
    let key = &seq(&users["secret"]["items"])[0];
    assert_eq!(
        config.auth.users_file.as_deref(),
        Some(
            Path::new(&users_dir)
                .join(key["path"].as_str().unwrap())
                .as_path()
        )
    );

    // The queue lives on the replica's own claim, writable.
    let (queue_dir, queue) = b.mount("danerelay", "queue");
    assert!(
        queue.is_null(),
        "queue must come from the volumeClaimTemplate"
    );
    let claim = &seq(&b.statefulset()["spec"]["volumeClaimTemplates"])[0];
    assert_eq!(claim["metadata"]["name"].as_str(), Some("queue"));
    assert!(config.queue.path.starts_with(&queue_dir));
    assert_ne!(
        config.queue.path,
        Path::new(&queue_dir),
        "sled wants its own directory"
    );
    let m = seq(&b.container("danerelay")["volumeMounts"])
        .iter()
        .find(|m| m["name"].as_str() == Some("queue"))
        .unwrap();
    assert_ne!(m["readOnly"].as_bool(), Some(true));
}

#[test]
fn dns_goes_to_a_validating_unbound_sidecar() {
    let b = base();
    let config = b.config();
    assert_eq!(config.dns.dnssec, DnssecMode::TrustAd);
    let ns: SocketAddr = "127.0.0.1:53".parse().unwrap();
    assert_eq!(config.dns.nameservers, vec![ns]);

    let unbound = b.container("unbound");
    assert_eq!(
        unbound["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar outlives danerelay's drain"
    );
    let conf = &b.generated["danerelay-unbound"]["unbound.conf"];
    let setting = |key: &str| -> Vec<String> {
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().trim_matches('"').to_string())
            .collect()
    };
    assert_eq!(setting("interface"), vec![ns.ip().to_string()]);
    assert_eq!(setting("port"), vec![ns.port().to_string()]);
    assert_eq!(setting("module-config"), vec!["validator iterator"]);
    let anchor = setting("auto-trust-anchor-file").pop().unwrap();
    let (data_dir, data) = b.mount("unbound", "unbound-data");
    assert!(!data["emptyDir"].is_null());
    assert!(
        Path::new(&anchor).starts_with(&data_dir),
        "the anchor file must be writable"
    );
    let (conf_dir, source) = b.mount("unbound", "unbound-config");
    assert_eq!(
        source["configMap"]["name"].as_str(),
        Some("danerelay-unbound")
    );
    let cmd: Vec<&str> = seq(&unbound["command"])
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cmd
        .windows(2)
        .any(|w| w == ["-c", &format!("{conf_dir}/unbound.conf")]));
    // The init container seeds that file from the ConfigMap's root.key.
    let seed = seq(&b.container("unbound-anchor")["command"])
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        seed.contains(&format!("cp {conf_dir}/root.key {anchor}")),
        "{seed}"
    );

    // The shipped anchors are IANA's, as Debian's dns-root-data has them.
    let ds: BTreeSet<&str> = b.generated["danerelay-unbound"]["root.key"]
        .lines()
        .filter(|l| !l.starts_with(';'))
        .collect();
    // deploy/validate.sh installs Debian's dns-root-data and makes the same
    // comparison, so CI checks it whatever order its steps run in.
    let Some(root_ds) = crate::support::require_file("/usr/share/dns/root.ds", "dns-root-data")
    else {
        return;
    };
    let debian = std::fs::read_to_string(root_ds).unwrap();
    assert_eq!(ds, debian.lines().collect::<BTreeSet<_>>());
}
