//! Every invalid config fixture fails validation with the message its first line promises
//! (`# expect: ...`), naming the file and the key; the full valid config loads with every key applied.

use hubwatch::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn env(name: &str) -> Option<String> {
    match name {
        "TEMPLE_TOKEN" => Some("service-token-value".into()),
        "PROBE_PASSWORD" => Some("probe-password".into()),
        "ROUTING_KEY" => Some("0123456789abcdef0123456789abcdef".into()),
        "STAGING_ROUTING_KEY" => Some("fedcba9876543210fedcba9876543210".into()),
        "HELPDESK_AUTH" => Some("Bearer helpdesk".into()),
        _ => None,
    }
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_names_file_key_and_problem() {
    let files = fixtures("invalid");
    assert!(files.len() >= 15, "at least 15 invalid cases, found {}", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect =
            text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("fixture starts with # expect:");
        let error =
            Config::parse(&text, &file, &env).expect_err(&format!("{} should be invalid", file.display())).to_string();
        assert!(error.contains(expect), "{}:\n  expected: {expect}\n  got: {error}", file.display());
        assert!(
            error.contains(&file.display().to_string()),
            "{}: message does not name the file: {error}",
            file.display()
        );
        assert!(!error.contains("abcdef0123456789") && !error.contains("hunter2"), "a secret leaked into: {error}");
    }
}

#[test]
fn all_problems_are_reported_in_one_pass() {
    let text = "lisen: x\nhubs:\n  - name: Bad Name\n    url: ftp://x\n    token: inline\n    users: [a]\n    probes: {login: {every: 10x}}\n";
    let error = Config::parse(text, Path::new("many.yaml"), &env).unwrap_err().to_string();
    crate::support::golden::assert_contains_all(
        &error,
        &[
            "lisen: unknown key",
            "hubs[0].name:",
            "hubs[0].url:",
            "hubs[0].token:",
            "hubs[0].users:",
            "hubs[0].probes.login.every:",
        ],
    );
    assert!(error.contains("(6 problems)"), "{error}");
    // Each where the file has it (the key's line and column), in the file's order.
    let lines: Vec<&str> = error.lines().skip(1).map(str::trim).collect();
    assert!(lines[0].starts_with("many.yaml:1:1: lisen: unknown key"), "{error}");
    assert!(lines[1].starts_with("many.yaml:3:5: hubs[0].name:"), "{error}");
    assert!(lines[5].starts_with("many.yaml:7:22: hubs[0].probes.login.every:"), "{error}");
}

#[test]
fn the_full_valid_config_applies_defaults_and_overrides() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/full.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let config = Config::parse(&text, &file, &env).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(config.scheduler.max_concurrent_probes, 64);
    assert_eq!(config.public_url().as_str(), "https://hubwatch.example.org/");
    assert_eq!(config.incidents.window, Duration::from_secs(900));
    let pagerduty = config.pagerduty.as_ref().unwrap();
    assert_eq!(pagerduty.events_url.as_str(), "https://events.eu.pagerduty.com/v2/enqueue");
    assert_eq!(pagerduty.severity, hubwatch::domain::Severity::Error);
    let notes = pagerduty.status_updates.as_ref().unwrap();
    assert_eq!((notes.from_email.as_str(), notes.every), ("oncall@example.org", Duration::from_secs(7200)));
    assert_eq!(notes.api_url.as_str(), "https://api.pagerduty.com/");
    assert!(config.kubernetes.enabled);
    assert_eq!(config.kubernetes.pending_after, Duration::from_secs(300));
    assert_eq!(config.kubernetes.log_lines, 50);
    let discovery = config.kubernetes.discovery.as_ref().unwrap();
    assert_eq!(discovery.namespaces, ["temple", "river"]);
    assert_eq!(discovery.every, Duration::from_secs(300));
    let ha = config.high_availability.as_ref().unwrap();
    assert_eq!(
        (ha.namespace.as_str(), ha.lease.as_str(), ha.state_secret.as_str(), ha.lease_duration),
        ("monitoring", "hubwatch-leader", "hubwatch-state", Duration::from_secs(15))
    );
    assert_eq!((ha.renew_deadline, ha.retry_period), (Duration::from_secs(10), Duration::from_secs(2)));
    assert_eq!(
        (config.state.retention, config.state.unhealthy_after),
        (Duration::from_secs(30 * 86_400), Duration::from_secs(300))
    );
    let temple = config.hub("temple").unwrap();
    assert_eq!(temple.token.expose(), "service-token-value");
    assert_eq!(
        format!("{:?}", temple.token),
        r#"SecretRef { env: Some("TEMPLE_TOKEN"), file: None, value: Secret([redacted]) }"#
    );
    assert_eq!(temple.probes.server.every, Duration::from_secs(300), "per-hub override");
    assert_eq!(temple.probes.server.timeout, Duration::from_secs(600), "default kept beside the override");
    assert_eq!(temple.probes.home.every, Duration::from_secs(900));
    let cells = &temple.probes.kernel.cells;
    assert_eq!(cells.len(), 3);
    assert!(cells[0].accepts("anything at all") && cells[1].accepts("'2.1.3'") && !cells[1].accepts("'1.26'"));
    assert!(cells[2].accepts(" 42\n") && !cells[2].accepts("41"));
    let staging = config.hub("staging-hub").unwrap();
    assert_eq!(staging.probes.kernel.cells[0].code, "5 * 4", "the default cell where kernel_cells is not given");
    let sentinel = staging.sentinel.expect("a kept server");
    assert_eq!((sentinel.every, sentinel.timeout), (Duration::from_secs(120), Duration::from_secs(30)));
    assert_eq!((staging.sentinel_user(), temple.sentinel_user()), (Some("c"), None), "the last probe user keeps it");
    assert_eq!(temple.probes.server.user_options["profile"], "small");
    assert_eq!(temple.probes.login.every, Duration::from_secs(60));
    assert_eq!(temple.dask_gateway.as_ref().unwrap().url.as_str(), "https://temple.example.org/services/dask-gateway/");
    let staging = config.hub("staging-hub").unwrap();
    assert_eq!(staging.token.expose(), "0123456789abcdef", "file secret, trimmed, relative to the config");
    assert_eq!(staging.url.as_str(), "http://127.0.0.1:18000/prefix/", "hub URLs end with a slash");
    assert!(
        matches!(&staging.login, hubwatch::config::LoginMethod::Form { password } if password.expose() == "probe-password")
    );
    assert!(staging.dask_gateway.is_none());
    assert_eq!(config.incidents.rollout_grace, Duration::from_secs(600));
    let webhook = config.webhook.as_ref().unwrap();
    assert_eq!(webhook.url.as_str(), "https://helpdesk.example.org/hooks/hubwatch");
    assert_eq!((webhook.retry_delay, webhook.timeout), (Duration::from_secs(5), Duration::from_secs(10)));
    assert_eq!(webhook.headers["Authorization"].expose(), "Bearer helpdesk");
    use hubwatch::domain::IncidentKind::{DaskGateway, HubAccess};
    let route = config.page_route(&"staging-hub".into(), Some(HubAccess)).unwrap();
    assert_eq!(route.routing_key.expose(), "fedcba9876543210fedcba9876543210");
    assert_eq!(route.severity, hubwatch::domain::Severity::Warning);
    assert_eq!(route.priority, Some(("P3".into(), "hubs[staging-hub].pagerduty.kinds.hub_access.priority".into())));
    let route = config.page_route(&"staging-hub".into(), Some(DaskGateway)).unwrap();
    assert_eq!(
        (route.severity, route.priority.unwrap().1.as_str()),
        (hubwatch::domain::Severity::Info, "pagerduty.priority")
    );
    let route = config.page_route(&"temple".into(), Some(HubAccess)).unwrap();
    assert_eq!(
        (route.routing_key_rule.as_str(), route.severity),
        ("pagerduty.routing_key", hubwatch::domain::Severity::Error)
    );
    assert!(config.secrets().contains(&"Bearer helpdesk"), "webhook headers are secrets to redact");
}

#[test]
fn validate_exits_2_and_names_the_file() {
    let bin = env!("CARGO_BIN_EXE_hubwatch");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid/inline-token.yaml");
    let out = std::process::Command::new(bin).args(["validate", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inline-token.yaml") && stderr.contains("hubs[0].token"), "{stderr}");
    assert!(!stderr.contains("abcdef0123456789"), "the inline secret must not be echoed: {stderr}");

    let missing =
        std::process::Command::new(bin).args(["validate", "--config", "/nonexistent/hubwatch.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/hubwatch.yaml: cannot read the config file")
    );

    let bad_args =
        std::process::Command::new(bin).args(["check", "--output", "xml", "--config", "x"]).output().unwrap();
    assert_eq!(bad_args.status.code(), Some(2));

    let valid = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/full.yaml");
    let ok = std::process::Command::new(bin)
        .args(["validate", "--config"])
        .arg(&valid)
        .env("TEMPLE_TOKEN", "x")
        .env("PROBE_PASSWORD", "y")
        .env("ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .env("STAGING_ROUTING_KEY", "fedcba9876543210fedcba9876543210")
        .env("HELPDESK_AUTH", "Bearer z")
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
}

/// The first ```yaml block after `heading` in the Markdown file `doc`.
fn yaml_block(doc: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let after = &text[text.find(heading).unwrap_or_else(|| panic!("{doc}: no {heading:?}"))..];
    let start = after.find("```yaml\n").unwrap() + "```yaml\n".len();
    after[start..start + after[start..].find("```").unwrap()].to_string()
}

/// Parses `yaml` as a file of its own in a folder that has the TLS files it may name, every variable set.
fn parse_anywhere(yaml: &str) -> Result<hubwatch::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    for file in ["tls/tls.crt", "tls/tls.key"] {
        std::fs::write(dir.path().join(file), "pem").unwrap();
    }
    let any = |name: &str| {
        let hash = "$2b$12$PBh0ZC8CnQzWkqL5dlJNV.BCBz6g4e.Xf0rGX.DkZgtv0mgHAe4fG";
        Some(
            if name.contains("ROUTING_KEY") {
                "0123456789abcdef0123456789abcdef"
            } else if name.contains("WEB") {
                hash
            } else {
                "x"
            }
            .into(),
        )
    };
    Config::parse(yaml, &dir.path().join("hubwatch.yaml"), &any).map_err(|e| e.to_string())
}

#[test]
fn the_documented_configuration_validates_and_documents_every_key() {
    let example = yaml_block("docs/configuration.md", "# Configuration");
    parse_anywhere(&example).unwrap_or_else(|e| panic!("docs/configuration.md's example: {e}"));
    // Every key of the schema is on the page (in the example, or its comments and text).
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    let schema = hubwatch::config::schema();
    let mut keys = std::collections::BTreeSet::new();
    let mut stack = vec![schema.clone()];
    while let Some(node) = stack.pop() {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                    keys.extend(properties.keys().cloned());
                }
                stack.extend(map.into_values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    let missing: Vec<&String> =
        keys.iter().filter(|k| !page.contains(&format!("{k}:")) && !page.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "keys of the schema that docs/configuration.md does not show: {missing:?}");
}

#[test]
fn the_readmes_minimal_configuration_validates() {
    let minimal = yaml_block("README.md", "## A minimal configuration");
    parse_anywhere(&minimal).unwrap_or_else(|e| panic!("README's minimal configuration: {e}"));
}

#[test]
fn the_schema_and_the_defaults_come_from_the_types() {
    let bin = env!("CARGO_BIN_EXE_hubwatch");
    let schema = std::process::Command::new(bin).args(["config", "schema"]).output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert_eq!(schema, hubwatch::config::schema());
    let incidents = &schema["definitions"]["IncidentsConfig"]["properties"]["min_affected_users"];
    assert_eq!(incidents["description"], "N: an incident needs at least this many distinct affected users.");
    let defaults = std::process::Command::new(bin).args(["config", "defaults"]).output().unwrap();
    let defaults = String::from_utf8(defaults.stdout).unwrap();
    for line in ["keep_open_for: 2m", "retention: 90d", "every: 10m", "lease_duration: 15s", "code: 5 * 4"] {
        assert!(defaults.contains(line), "{line:?} not in:\n{defaults}");
    }
    // What `config defaults` prints is a configuration hubwatch takes (with a hub and the secrets it needs).
    let mut document: serde_json::Value = serde_saphyr::from_str(&defaults).unwrap();
    document["pagerduty"]["routing_key"] = serde_json::json!({"env": "ROUTING_KEY"});
    document["high_availability"]["namespace"] = "monitoring".into();
    document["kubernetes"]["enabled"] = true.into();
    document["kubernetes"]["discovery"]["users"] = serde_json::json!(["a", "b"]);
    let yaml = serde_saphyr::to_string(&document).unwrap();
    parse_anywhere(&yaml).unwrap_or_else(|e| panic!("the defaults document: {e}\n{yaml}"));
}
