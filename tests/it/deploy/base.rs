//! The kustomize base resolved by hand, and the small YAML helpers the
//! checks share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use danerelay::config::{Config, ListenerTls};
use serde::Deserialize;
use serde_norway::Value;

pub const NAMESPACE: &str = "danerelay";

pub fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The kustomize base resolved by hand: what `kubectl apply -k` creates,
/// with generated ConfigMaps under their unhashed names.
pub struct Base {
    pub resources: Vec<Value>,
    /// ConfigMap name → file name → content, from `configMapGenerator`.
    pub generated: BTreeMap<String, BTreeMap<String, String>>,
    pub listed_files: Vec<String>,
}

pub fn base() -> Base {
    let dir = base_dir();
    let kustomization: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(kustomization["namespace"].as_str(), Some(NAMESPACE));
    let mut resources = Vec::new();
    let mut listed_files = Vec::new();
    for file in kustomization["resources"].as_sequence().unwrap() {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("kustomization lists {file}: {e}"));
        resources.extend(yaml_docs(&text));
        listed_files.push(file.to_string());
    }
    let mut generated = BTreeMap::new();
    for generator in kustomization["configMapGenerator"].as_sequence().unwrap() {
        let name = generator["name"].as_str().unwrap().to_string();
        let mut files = BTreeMap::new();
        for file in generator["files"].as_sequence().unwrap() {
            let file = file.as_str().unwrap();
            let key = Path::new(file).file_name().unwrap().to_str().unwrap();
            files.insert(
                key.to_string(),
                std::fs::read_to_string(dir.join(file)).unwrap(),
            );
        }
        generated.insert(name, files);
    }
    Base {
        resources,
        generated,
        listed_files,
    }
}

impl Base {
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.resources
            .iter()
            .find(|r| {
                r["kind"].as_str() == Some(kind) && r["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in the base"))
    }

    pub fn statefulset(&self) -> &Value {
        self.get("StatefulSet", "danerelay")
    }

    pub fn pod(&self) -> &Value {
        &self.statefulset()["spec"]["template"]["spec"]
    }

    pub fn container(&self, name: &str) -> &Value {
        let pod = self.pod();
        seq(&pod["containers"])
            .iter()
            .chain(seq(&pod["initContainers"]))
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    pub fn config_text(&self) -> &str {
        &self.generated["danerelay-config"]["danerelay.toml"]
    }

    pub fn config(&self) -> Config {
        danerelay::config::parse(self.config_text())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .config
    }

    /// Where `volume` is mounted in `container`, and the volume's source.
    pub fn mount(&self, container: &str, volume: &str) -> (String, &Value) {
        let m = seq(&self.container(container)["volumeMounts"])
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("{container} does not mount {volume}"));
        assert!(
            m["subPath"].is_null(),
            "{volume}: subPath mounts never see Secret/ConfigMap updates"
        );
        let source = seq(&self.pod()["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(volume))
            .unwrap_or(&Value::Null);
        (m["mountPath"].as_str().unwrap().to_string(), source)
    }
}

pub fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

pub fn labels_match(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container port by number or by name, as Services and probes refer to it.
pub fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = port.as_str().unwrap();
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}")) as u16
}

pub fn listener_port(config: &Config, tls: ListenerTls) -> u16 {
    config
        .listeners
        .iter()
        .find(|l| l.tls == tls)
        .unwrap_or_else(|| panic!("no {tls:?} listener"))
        .address
        .port()
}

pub fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
        .unwrap()
}
