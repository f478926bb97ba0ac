//! Table tests for configuration validation: every mistake is reported with
//! its key path, all at once.

use super::*;
use std::path::Path;

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(l) => l.config,
        Err(errs) => panic!("unexpected errors: {errs:?}"),
    }
}

const PLAIN: &str = "[[listener]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n";

#[test]
fn defaults_match_the_contract() {
    let cfg = ok(PLAIN);
    assert_eq!(cfg.shutdown_grace, Duration::from_secs(25));
    assert_eq!(cfg.limits.max_message_size, 25 * 1024 * 1024);
    assert_eq!(cfg.limits.max_recipients, 100);
    assert_eq!(cfg.limits.max_connections, 1000);
    assert_eq!(cfg.limits.max_auth_failures, 3);
    assert_eq!(cfg.limits.command_timeout, Duration::from_secs(300));
    assert_eq!(cfg.limits.max_connections_per_ip, 20);
    assert_eq!(cfg.limits.connection_rate_per_ip, 60);
    assert_eq!(cfg.limits.max_junk_commands, 50);
    assert_eq!(cfg.limits.messages_per_user_per_hour, 500);
    assert_eq!(cfg.limits.session_timeout, Duration::from_secs(3600));
    assert_eq!(cfg.limits.data_timeout, Duration::from_secs(600));
    assert_eq!(cfg.limits.max_header_size, 128 * 1024);
    assert_eq!(cfg.limits.max_header_fields, 500);
    assert_eq!(cfg.limits.max_recipients_per_session, 1000);
    assert_eq!(cfg.auth.sender_policy, SenderPolicy::OwnAddress);
    assert!(cfg.auth.trusted_networks.is_empty());
    assert_eq!(cfg.queue.path, PathBuf::from("/var/lib/danerelay/queue"));
    let mins: Vec<u64> = cfg.queue.retry.iter().map(|d| d.as_secs() / 60).collect();
    assert_eq!(mins, [5, 10, 30, 60, 120, 240]);
    assert_eq!(cfg.queue.max_age, Duration::from_secs(5 * 86400));
    assert_eq!(cfg.queue.delay_warning, Some(Duration::from_secs(4 * 3600)));
    assert!(cfg.dns.nameservers.is_empty());
    assert_eq!(cfg.dns.dnssec, DnssecMode::Auto);
    assert_eq!(cfg.dns.trust_anchor, None);
    assert_eq!(cfg.dns.dnssec_probe.as_deref(), Some("."));
    assert_eq!(cfg.delivery.concurrency, 256);
    assert_eq!(cfg.delivery.per_destination, 16);
    assert_eq!(cfg.delivery.tls, TlsLevel::Dane);
    assert_eq!(cfg.delivery.dane_insecure_mx, InsecureMxPolicy::Dane);
    assert_eq!(cfg.delivery.helo_name, cfg.hostname);
    assert_eq!(cfg.delivery.connect_timeout, Duration::from_secs(30));
    assert_eq!(cfg.delivery.max_hosts, 5);
    assert!(!cfg.delivery.paused);
    assert_eq!(cfg.http.address.to_string(), "127.0.0.1:9587");
    assert_eq!(cfg.http.admin_token, None);
}

#[test]
fn three_mistakes_three_errors_with_key_paths() {
    let errs = errors(
        r#"
[[listener]]
address = "127.0.0.1:2525"
tls = "none"
[[listener]]
address = "0.0.0.0:99999"
tls = "none"
[limits]
max_recipients = 0
[queue]
retry = []
"#,
    );
    assert_eq!(
        errs,
        [
            "listener[1].address: invalid socket address \"0.0.0.0:99999\"",
            "limits.max_recipients: must be at least 1",
            "queue.retry: needs at least one interval",
        ]
    );
}

#[test]
fn unknown_keys_and_bad_types_are_all_reported() {
    let errs = errors(
        r#"
colour = "blue"
[[listener]]
address = "127.0.0.1:2525"
tls = "none"
prot = 5
[delivery]
tls = "sometimes"
paused = "yes"
[limits]
max_recipients = "many"
max_conections = 5
[queue]
max_age = "forever"
"#,
    );
    let joined = errs.join("\n");
    for needle in [
        "colour: unknown field `colour`",
        "delivery.tls: unknown variant `sometimes`",
        "delivery.paused: invalid type",
        "listener[0].prot: unknown field `prot`",
        "limits.max_recipients: invalid type",
        "limits.max_conections: unknown field `max_conections`",
        "queue.max_age: invalid duration \"forever\"",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 7, "{joined}");
}

#[test]
fn syntax_error_names_the_line() {
    let errs = errors("[limits]\nmax_recipients = = 3\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("line 2"), "{errs:?}");
}

#[test]
fn semantic_rules() {
    let errs = errors(
        r#"
hostname = "not a host"
[[listener]]
address = "127.0.0.1:2525"
tls = "none"
[[listener]]
address = "127.0.0.1:2525"
tls = "none"
[[listener]]
tls = "none"
[queue]
retry = ["1h"]
max_age = "30m"
delay_warning = "0s"
[auth]
trusted_networks = ["10.0.0.0/8", "10.0.0.0/33"]
[delivery]
concurrency = 0
[[delivery.route]]
domain = "*.example.com"
next_hop = "[300.1.1.1]:25"
[[delivery.route]]
domain = "bad domain"
tls = "dane-only"
"#,
    );
    let want = [
        "hostname: \"not a host\" is not a valid host name",
        "listener[1].address: 127.0.0.1:2525 is already used by listener[0]",
        "listener[2].address: missing",
        "auth.trusted_networks[1]: invalid network \"10.0.0.0/33\"",
        "queue.max_age: 30m is shorter than the first retry interval (1h)",
        "delivery.concurrency: must be at least 1",
        "delivery.route[0].next_hop: invalid next hop \"[300.1.1.1]:25\"",
        "delivery.route[1].domain: invalid domain \"bad domain\"",
    ];
    let joined = errs.join("\n");
    for w in want {
        assert!(joined.contains(w), "missing {w:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), want.len(), "{joined}");
}

#[test]
fn tls_listener_needs_a_certificate_outside_the_dev_default() {
    let errs = errors("[[listener]]\naddress = \"127.0.0.1:2587\"\ntls = \"starttls\"\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("tls.certificate: required: listener[0]"),
        "{errs:?}"
    );
    // The file default has TLS listeners on 587 and 465, so an empty file errs too.
    assert!(parse("").is_err());
}

#[test]
fn certificate_files_missing_warn_unreadable_or_garbage_err() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem").unwrap();
    let text = format!(
        "[tls]\ncertificate = {:?}\nprivate_key = {:?}\n",
        garbage.display(),
        dir.path().join("absent.key").display()
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("tls.certificate:") && errs[0].contains("no PEM certificate"));

    let cert = crate::testing::certs::self_signed(&["relay.test"]);
    let cert_file = dir.path().join("tls.crt");
    std::fs::write(&cert_file, cert.cert_pem()).unwrap();
    let text = format!(
        "[tls]\ncertificate = {:?}\nprivate_key = {:?}\n",
        cert_file.display(),
        dir.path().join("absent.key").display()
    );
    let loaded = parse(&text).unwrap();
    // (Without a [[dkim]] key, [tls_rpt] also warns about tls_rpt.from.)
    let warnings: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.path != "tls_rpt.from")
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].to_string().starts_with("tls.private_key:"));
}

#[test]
fn routes_and_next_hops() {
    let cfg = ok(&format!(
        "{PLAIN}[[delivery.route]]\ndomain = \"Example.COM.\"\ntls = \"dane-only\"\n\
         [[delivery.route]]\ndomain = \"*.corp.example\"\nnext_hop = \"[192.0.2.7]:2525\"\n\
         max_connections = 4\n"
    ));
    assert_eq!(cfg.delivery.routes[0].max_connections, None);
    assert_eq!(cfg.delivery.routes[1].max_connections, Some(4));
    assert_eq!(
        cfg.delivery.routes[0].domain,
        DomainPattern::Exact("example.com".into())
    );
    assert_eq!(cfg.delivery.routes[0].tls, Some(TlsLevel::DaneOnly));
    assert_eq!(
        cfg.delivery.routes[1].domain,
        DomainPattern::Subdomains("corp.example".into())
    );
    assert_eq!(
        cfg.delivery.routes[1].next_hop,
        Some(NextHop {
            host: NextHopHost::Ip("192.0.2.7".parse().unwrap()),
            port: 2525
        })
    );
    assert_eq!(
        parse_next_hop("smarthost.example:587"),
        Some(NextHop {
            host: NextHopHost::Name("smarthost.example".into()),
            port: 587
        })
    );
    assert_eq!(parse_next_hop("mx.example").map(|h| h.port), Some(25));
    assert_eq!(
        parse_next_hop("[::1]:26").map(|h| h.host),
        Some(NextHopHost::Ip("::1".parse().unwrap()))
    );
    assert_eq!(parse_next_hop("host:0"), None);
    assert_eq!(parse_next_hop("[host]:25"), None);
}

#[test]
fn sizes_durations_and_off_switches() {
    let cfg = ok(&format!(
        "{PLAIN}[limits]\nmax_message_size = \"10MiB\"\n[queue]\nretry = [\"1m\", \"2m 30s\"]\ndelay_warning = \"0s\"\n\
         [dns]\ndnssec_probe = \"\"\ndnssec = \"off\"\nnameservers = [\"127.0.0.1:53\", \"[::1]:5353\"]\n"
    ));
    assert_eq!(cfg.limits.max_message_size, 10 << 20);
    assert_eq!(cfg.queue.retry[1], Duration::from_secs(150));
    assert_eq!(cfg.queue.delay_warning, None);
    assert_eq!(cfg.dns.dnssec_probe, None);
    assert_eq!(cfg.dns.dnssec, DnssecMode::Off);
    assert_eq!(cfg.dns.nameservers.len(), 2);
    let cfg = ok(&format!("{PLAIN}[limits]\nmax_message_size = 2048\n"));
    assert_eq!(cfg.limits.max_message_size, 2048);
}

/// `auto` (the default) decides by the probe, so it cannot go without one;
/// every explicit mode can.
#[test]
fn dnssec_auto_needs_a_probe() {
    let errs = errors(&format!("{PLAIN}[dns]\ndnssec_probe = \"\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("dns.dnssec_probe: ") && errs[0].contains("auto"),
        "{errs:?}"
    );
    let cfg = ok(&format!(
        "{PLAIN}[dns]\ndnssec = \"auto\"\ndnssec_probe = \"example.\"\n"
    ));
    assert_eq!(
        (cfg.dns.dnssec, cfg.dns.dnssec_probe.as_deref()),
        (DnssecMode::Auto, Some("example."))
    );
    for mode in ["trust-ad", "validate", "off"] {
        ok(&format!(
            "{PLAIN}[dns]\ndnssec = \"{mode}\"\ndnssec_probe = \"\"\n"
        ));
    }
}

/// Every file shipped in `config/` is a valid configuration.
#[test]
fn shipped_config_files_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(errs) = load_file(&path) {
                panic!("{} is invalid: {errs:?}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "no config files found in {}", dir.display());
}

#[test]
fn limits_default_is_what_an_empty_limits_section_gives() {
    let parsed = ok(PLAIN).limits;
    let d = Limits::default();
    assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
}

#[test]
fn abuse_limits_are_validated_with_key_paths() {
    let errs = errors(&format!(
        "{PLAIN}[limits]\nmax_connections_per_ip = 0\nconnection_rate_per_ip = 5000000000\n\
         max_junk_commands = 0\nmessages_per_user_per_hour = 0\nsession_timeout = \"0s\"\n\
         data_timeout = \"soon\"\nmax_header_size = \"512\"\nmax_header_fields = 0\n\
         max_recipients_per_session = 0\n"
    ));
    for key in [
        "limits.max_connections_per_ip: must be at least 1",
        "limits.connection_rate_per_ip: must be at most 4294967295",
        "limits.max_junk_commands: must be at least 1",
        "limits.messages_per_user_per_hour: must be at least 1",
        "limits.session_timeout: must be longer than 0s",
        "limits.data_timeout:",
        "limits.max_header_size: must be at least 1KiB",
        "limits.max_header_fields: must be at least 1",
        "limits.max_recipients_per_session: must be at least 1",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(key)),
            "{key} missing in {errs:?}"
        );
    }
    let cfg = ok(&format!(
        "{PLAIN}[limits]\nmax_message_size = \"64KiB\"\nmax_header_size = \"1MiB\"\n"
    ));
    assert_eq!(
        cfg.limits.max_header_size,
        64 * 1024,
        "capped by the message size"
    );
}

#[test]
fn queue_min_free_space_defaults_parses_and_reports_its_key_path() {
    assert_eq!(ok(PLAIN).queue.min_free_space, 512 * 1024 * 1024);
    let with = |v: &str| format!("{PLAIN}[queue]\nmin_free_space = {v}\n");
    assert_eq!(ok(&with("\"0\"")).queue.min_free_space, 0);
    assert_eq!(ok(&with("\"2GiB\"")).queue.min_free_space, 2 << 30);
    let errs = errors(&with("\"lots\""));
    assert!(
        errs.iter().any(|e| e.starts_with("queue.min_free_space:")),
        "{errs:?}"
    );
}

#[test]
fn queue_cache_size_defaults_to_64mib_and_refuses_tiny_or_bad_values_by_key_path() {
    assert_eq!(ok(PLAIN).queue.cache_size, 64 << 20);
    let with = |v: &str| format!("{PLAIN}[queue]\ncache_size = {v}\n");
    assert_eq!(ok(&with("\"256MiB\"")).queue.cache_size, 256 << 20);
    assert_eq!(ok(&with("\"1MiB\"")).queue.cache_size, 1 << 20);
    for bad in ["\"0\"", "\"512KiB\"", "\"lots\""] {
        let errs = errors(&with(bad));
        assert_eq!(
            errs.iter()
                .filter(|e| e.starts_with("queue.cache_size:"))
                .count(),
            1,
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn dane_insecure_mx_takes_dane_or_may_and_names_its_key() {
    let with = |value: &str| format!("{PLAIN}[delivery]\ndane_insecure_mx = \"{value}\"\n");
    assert_eq!(
        ok(&with("may")).delivery.dane_insecure_mx,
        InsecureMxPolicy::May
    );
    assert_eq!(
        ok(&with("dane")).delivery.dane_insecure_mx,
        InsecureMxPolicy::Dane
    );
    let errs = errors(&with("never"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("delivery.dane_insecure_mx: unknown variant `never`"),
        "{errs:?}"
    );
}

#[test]
fn tls_levels_print_as_configured() {
    for (text, level) in [
        ("none", TlsLevel::None),
        ("may", TlsLevel::May),
        ("encrypt", TlsLevel::Encrypt),
        ("dane", TlsLevel::Dane),
        ("dane-only", TlsLevel::DaneOnly),
    ] {
        let cfg = ok(&format!("{PLAIN}[delivery]\ntls = \"{text}\"\n"));
        assert_eq!(cfg.delivery.tls, level);
        assert_eq!(level.to_string(), text);
    }
}

#[test]
fn http_submission_needs_users_and_a_certificate() {
    assert_eq!(ok(PLAIN).http.submission_address, None);
    let errs = errors(&format!(
        "{PLAIN}[http]\nsubmission_address = \"127.0.0.1:8443\"\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .all(|e| e.starts_with("http.submission_address: needs ")),
        "{errs:?}"
    );
    let errs = errors(&format!("{PLAIN}[http]\nsubmission_address = \"8443\"\n"));
    assert!(
        errs[0].starts_with("http.submission_address: \"8443\" is not"),
        "{errs:?}"
    );
}

#[test]
fn mta_sts_keys_default_and_are_checked_with_their_path() {
    let cfg = ok(PLAIN);
    assert_eq!(
        cfg.mta_sts,
        MtaStsConfig {
            enabled: true,
            ca_file: None,
            fetch_timeout: Duration::from_secs(60),
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "no certificates here").unwrap();
    let text = format!(
        "{PLAIN}[mta_sts]\nenabled = false\nca_file = {:?}\nfetch_timeout = \"0s\"\n",
        bad.display().to_string()
    );
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.starts_with("mta_sts.ca_file: ")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("mta_sts.fetch_timeout: ")),
        "{errs:?}"
    );
    let errs = errors(&format!("{PLAIN}[mta_sts]\nfetch = \"1m\"\n"));
    assert!(errs.iter().any(|e| e.contains("mta_sts")), "{errs:?}");
    let ca = crate::testing::certs::ca("config CA", None, false);
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca.cert_pem()).unwrap();
    let cfg = ok(&format!(
        "{PLAIN}[mta_sts]\nca_file = {:?}\nfetch_timeout = \"5s\"\n",
        good.display().to_string()
    ));
    assert_eq!(cfg.mta_sts.ca_file.as_deref(), Some(good.as_path()));
    assert_eq!(cfg.mta_sts.fetch_timeout, Duration::from_secs(5));
}
