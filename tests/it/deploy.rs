//! `deploy/` against the binary: the kustomize base is resolved by hand
//! (its `resources` and `configMapGenerator` files), the embedded
//! danerelay.toml must pass `danerelay check-config`, and every port, path
//! and probe in the manifests and the Dockerfile must match what that config
//! makes the binary do. Schema validation (kubernetes-validate), hadolint and
//! promtool unit tests of the alerts run in `deploy/validate.sh`. The Grafana
//! dashboard's queries are checked against a running relay's `/metrics`.

mod base;
mod binary;
mod grafana;
mod manifests;
mod monitoring;
mod promql;
