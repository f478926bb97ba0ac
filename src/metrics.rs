//! Every Prometheus metric danerelay exports, declared in one place. Help
//! text is the documentation; label values come only from fixed enums, never
//! from hostnames, addresses or user input (unbounded cardinality).

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// The registry and the handles the rest of the program updates. Cloned
/// freely (the handles are reference-counted); passed down, never global.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Constant 1, labelled with the version: lets dashboards show what runs.
    pub build_info: IntGaugeVec,
    /// 1 once every listener is bound and the queue is open, 0 while draining.
    pub ready: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "danerelay_build_info",
                "Constant 1, labelled with the running danerelay version.",
            ),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let ready = IntGauge::new(
            "danerelay_ready",
            "1 while the relay is ready to accept mail (listeners bound, queue open, not draining).",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        for c in [
            Box::new(build_info.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ready.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| unreachable!("metric registered twice: {e}"));
        }
        Metrics {
            registry,
            build_info,
            ready,
        }
    }

    /// The text exposition format for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_start_with_prefix() {
        let m = Metrics::new();
        m.ready.set(1);
        let text = m.render();
        assert!(text.contains("danerelay_ready 1"), "{text}");
        assert!(text.contains(&format!(
            "danerelay_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("danerelay_"), "{line}");
        }
    }
}
