//! The manifests on their own terms: the base lists every file, pods are
//! locked down, selectors fit, the NetworkPolicy opens exactly what a relay
//! needs, the Dockerfile has the essentials, and kubectl renders the base as
//! resolved here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_norway::Value;

use super::base::*;

#[test]
fn kustomization_lists_every_manifest() {
    let b = base();
    let mut on_disk: Vec<String> = std::fs::read_dir(base_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = b.listed_files.clone();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "a manifest is missing from kustomization.yaml"
    );
    for r in &b.resources {
        let kind = r["kind"].as_str().unwrap();
        let ns = if kind == "Namespace" {
            &r["metadata"]["name"]
        } else {
            &r["metadata"]["namespace"]
        };
        assert_eq!(ns.as_str(), Some(NAMESPACE), "{kind}");
        assert!(
            !r["metadata"]["labels"]["app.kubernetes.io/name"].is_null(),
            "{kind} is unlabelled"
        );
    }
    // No Secret is committed: the base only references them.
    assert!(b
        .resources
        .iter()
        .all(|r| r["kind"].as_str() != Some("Secret")));
}

#[test]
fn pods_are_locked_down() {
    let b = base();
    let pod = b.pod();
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let uid = sc["runAsUser"].as_u64().unwrap();
    assert_ne!(uid, 0);
    let user = dockerfile()
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .map(str::to_string)
        .unwrap();
    assert_eq!(user, format!("{uid}:{uid}"), "image user = pod user");
    for c in seq(&pod["containers"])
        .iter()
        .chain(seq(&pod["initContainers"]))
    {
        let name = c["name"].as_str().unwrap();
        let csc = &c["securityContext"];
        assert_eq!(
            csc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(
            csc["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            csc["capabilities"]["drop"],
            Value::from(vec!["ALL"]),
            "{name}"
        );
        assert!(csc["capabilities"]["add"].is_null(), "{name}");
        for kind in ["requests", "limits"] {
            assert!(!c["resources"][kind]["memory"].is_null(), "{name} {kind}");
        }
    }
}

#[test]
fn dockerfile_has_the_essentials() {
    let text = dockerfile();
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "multi-stage: build and run");
    assert!(from[0].contains("rust:1.95-bookworm") && from[0].ends_with(" AS build"));
    assert!(from[1].contains("distroless/cc-debian12"), "{}", from[1]);
    assert!(!text.lines().any(|l| l.starts_with("HEALTHCHECK")));
    assert!(
        text.contains("--locked"),
        "the image builds what Cargo.lock pins"
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/danerelay\"]"));
}

#[test]
fn selectors_and_policies_fit_the_pods() {
    let b = base();
    let sts = b.statefulset();
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert!(labels_match(
        &sts["spec"]["selector"]["matchLabels"],
        labels
    ));
    let svc = b.get("Service", "danerelay");
    assert!(labels_match(&svc["spec"]["selector"], labels));
    let headless = b.get("Service", "danerelay-headless");
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        sts["spec"]["serviceName"].as_str(),
        Some("danerelay-headless")
    );
    // The headless Service keeps pods taken out of the submission Service.
    let mut out_of_service = labels.clone();
    out_of_service["danerelay/accepting"] = Value::from("false");
    assert!(!labels_match(&svc["spec"]["selector"], &out_of_service));
    assert!(labels_match(&headless["spec"]["selector"], &out_of_service));
    let pdb = b.get("PodDisruptionBudget", "danerelay");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        labels
    ));

    let np = b.get("NetworkPolicy", "danerelay");
    assert!(labels_match(
        &np["spec"]["podSelector"]["matchLabels"],
        labels
    ));
    let relay = b.container("danerelay");
    let config = b.config();
    let ingress: BTreeSet<u16> = seq(&np["spec"]["ingress"])
        .iter()
        .flat_map(|r| seq(&r["ports"]))
        .map(|p| resolve_port(relay, &p["port"]))
        .collect();
    let expected: BTreeSet<u16> = config
        .listeners
        .iter()
        .map(|l| l.address.port())
        .chain([config.http.address.port()])
        .collect();
    assert_eq!(ingress, expected);
    let egress: BTreeSet<(u64, &str)> = seq(&np["spec"]["egress"])
        .iter()
        .flat_map(|r| seq(&r["ports"]))
        .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(
        egress,
        BTreeSet::from([(25, "TCP"), (53, "UDP"), (53, "TCP")])
    );
}

/// `kubectl kustomize` (the renderer `kubectl apply -k` uses) produces the
/// same objects `base()` resolves by hand, with hashed ConfigMap names
/// wired into the StatefulSet.
#[test]
fn kubectl_renders_the_same_base() {
    let Some(kubectl) = crate::support::require_tool("kubectl") else {
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(base_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    let b = base();
    let key = |r: &Value| {
        (
            r["kind"].as_str().unwrap().to_string(),
            r["metadata"]["name"].as_str().unwrap().to_string(),
        )
    };
    let mut hashed = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    for r in &rendered {
        let (kind, name) = key(r);
        let listed = b
            .resources
            .iter()
            .any(|l| key(l) == (kind.clone(), name.clone()));
        if kind == "ConfigMap" && !listed {
            let base_name = b
                .generated
                .keys()
                .find(|g| name.starts_with(&format!("{g}-")))
                .unwrap_or_else(|| panic!("unexpected ConfigMap {name}"));
            for (file, content) in &b.generated[base_name] {
                assert_eq!(r["data"][file.as_str()].as_str(), Some(content.as_str()));
            }
            hashed.insert(base_name.clone(), name);
        } else {
            kinds.insert((kind, name));
        }
    }
    let expected: BTreeSet<_> = b.resources.iter().map(key).collect();
    assert_eq!(kinds, expected);
    assert_eq!(hashed.len(), b.generated.len());
    let sts = rendered
        .iter()
        .find(|r| r["kind"].as_str() == Some("StatefulSet"))
        .unwrap();
    let used: BTreeSet<&str> = seq(&sts["spec"]["template"]["spec"]["volumes"])
        .iter()
        .filter_map(|v| v["configMap"]["name"].as_str())
        .collect();
    assert_eq!(used, hashed.values().map(String::as_str).collect());
}
