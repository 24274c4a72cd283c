//! No secret leaves hubwatch: a secret of every kind (generated afresh from a printed seed; set
//! `REDACTION_SEED` to replay one) is planted in every text hubwatch takes in — the hub's spawn failure
//! messages, user pods' messages, events, the hub's log, the hub Deployment's annotations — and hubwatch's own
//! secrets (hub token, routing key, PagerDuty REST token, the web user's hash) are planted there too. Then
//! `hubwatch run` (against the stub hub, the Kubernetes stand-in with leader election, and the PagerDuty
//! stand-in with status notes) pages, attaches diagnostics, sends a change event and a note, and mirrors its
//! state; and none of the secrets appears in anything it put out: the events and notes PagerDuty received,
//! every page and API answer, the report, the metrics, its log, its state database and its mirror.

use crate::support::apiserver::ApiServer;
use crate::support::daemon::{Daemon, free_port, get, wait_for};
use crate::support::k8s_fixtures::{self, NAMESPACE, Trouble};
use crate::support::pagerduty::{API_TOKEN, FROM_EMAIL, PagerDuty, ROUTING_KEY};
use crate::support::stub_hub::{Progress, SERVICE_TOKEN, Stub};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

const PASSWORD: &str = "correct horse battery staple";

/// A planted secret: `secret` must never appear (no 8-character piece of it), `carrier` is the text that
/// holds it as a hub or the cluster would write it.
struct Planted {
    kind: &'static str,
    secret: String,
    carrier: String,
    /// Known secrets are checked whole (pieces of "stub-service-token" are ordinary words).
    whole: bool,
}

fn chars(rng: &mut fastrand::Rng, alphabet: &str, len: usize) -> String {
    let alphabet: Vec<char> = alphabet.chars().collect();
    (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect()
}

const HEX: &str = "0123456789abcdef";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn planted(seed: u64, web_hash: &str) -> Vec<Planted> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut shape = |kind: &'static str, secret: String, carrier: String| {
        out.push(Planted { kind, secret, carrier, whole: false });
    };
    let s = chars(&mut rng, HEX, 32);
    shape("hub token in a path", s.clone(), format!("404 DELETE /hub/api/authorizations/token/{s} (::1) 2ms"));
    let s = chars(&mut rng, HEX, 64);
    shape("bare hex token", s.clone(), format!("proxy auth {s} accepted"));
    let s = chars(&mut rng, ALNUM, 30);
    shape("JSON-escaped key", s.clone(), format!(r#"{{"log": "{{\"apiToken\": \"{s}\"}}"}}"#));
    let s = chars(&mut rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16);
    shape("AWS access key id", s.clone(), format!("using AKIA{s} for s3"));
    let s = chars(&mut rng, &format!("{ALNUM}/+"), 40);
    shape("AWS secret key", s.clone(), format!("aws_secret_access_key = {s}"));
    let s = chars(&mut rng, ALNUM, 28);
    shape("docker auth", s.clone(), format!(r#"{{"auths":{{"quay.io":{{"auth":"{s}"}}}}}}"#));
    let s = chars(&mut rng, ALNUM, 40);
    shape(".dockerconfigjson", s.clone(), format!(".dockerconfigjson: {s}"));
    let s = chars(&mut rng, ALNUM, 16);
    shape("URL user-info", s.clone(), format!("connecting to postgresql://hub:{s}@db:5432/jupyterhub"));
    let s = chars(&mut rng, ALNUM, 44);
    shape(
        "hub login cookie",
        s.clone(),
        format!("jupyterhub-hub-login=2|1:0|10:1795514400|20:jupyterhub-hub-login|44:{s}"),
    );
    let s = chars(&mut rng, ALNUM, 36);
    shape("GitHub token", s.clone(), format!("git clone https://github.com/org/repo with ghp_{s}"));
    let s = chars(&mut rng, &format!("{ALNUM}_"), 60);
    shape("GitHub fine-grained token", s.clone(), format!("GITHUB_PAT github_pat_{s}"));
    let (payload, signature) = (chars(&mut rng, ALNUM, 24), chars(&mut rng, ALNUM, 20));
    shape("JWT", payload.clone(), format!("id eyJhbGciOiJSUzI1NiJ9.eyJ{payload}.{signature} expired"));
    let s = chars(&mut rng, ALNUM, 24);
    shape("Slack webhook", s.clone(), format!("notify https://hooks.slack.com/services/T0AB12CD3/B0AB12CD3/{s}"));
    let s = chars(&mut rng, ALNUM, 32);
    shape("bearer token", s.clone(), format!("headers: {{'Authorization': 'Bearer {s}'}}"));
    // What an operator found leaking: keys whose secret word is not their last, values with spaces, block
    // scalars, signed URLs, API keys by their prefix, Basic credentials outside an Authorization header.
    let s = chars(&mut rng, ALNUM, 24);
    shape("a numbered token variable", s.clone(), format!("HUB_TOKEN_1={s}"));
    let s = chars(&mut rng, ALNUM, 20);
    shape("a password variable per environment", s.clone(), format!("DB_PASSWORD_PROD={s}"));
    let (a, b) = (chars(&mut rng, ALNUM, 10), chars(&mut rng, ALNUM, 10));
    shape("a password with spaces", format!("{a} {b}"), format!("password: correct {a} {b}"));
    let s = chars(&mut rng, ALNUM, 30);
    shape("a YAML block scalar", s.clone(), format!("token: |\n    {s}"));
    let s = chars(&mut rng, ALNUM, 40);
    shape(
        "an Azure SAS signature",
        s.clone(),
        format!("GET https://a.blob.core.windows.net/c/b?sv=2022-11-02&sig={s}%3D&se=2026"),
    );
    let s = chars(&mut rng, &format!("{ALNUM}_-"), 35);
    shape("a Google API key", s.clone(), format!("GET https://maps.googleapis.com/maps/api/js?key=AIza{s}"));
    let s = chars(&mut rng, ALNUM, 34);
    shape("a Hugging Face token", s.clone(), format!("HF_HUB hf_{s}"));
    let s = chars(&mut rng, ALNUM, 20);
    shape(
        "a GitLab token in a clone URL",
        s.clone(),
        format!("git clone https://oauth2:glpat-{s}@gitlab.example.org/g/r.git"),
    );
    let s = chars(&mut rng, ALNUM, 28);
    shape("Basic credentials in a proxy header", s.clone(), format!("X-Upstream-Auth: Basic {s}"));
    let s = chars(&mut rng, HEX, 40);
    shape("the hub's crypt key", s.clone(), format!("JUPYTERHUB_CRYPT_KEY={s}"));
    let s = chars(&mut rng, ALNUM, 24);
    shape("a routing key by name", s.clone(), format!("\"routing_key\": \"{s}\""));
    for (kind, secret) in [
        ("the hub token", SERVICE_TOKEN),
        ("the routing key", ROUTING_KEY),
        ("the PagerDuty REST token", API_TOKEN),
        ("the web user's hash", web_hash),
    ] {
        out.push(Planted { kind, secret: secret.into(), carrier: format!("config has {secret} in it"), whole: true });
    }
    out
}

/// The pieces of a secret that must not appear.
fn pieces(planted: &Planted) -> Vec<&str> {
    if planted.whole {
        return vec![planted.secret.as_str()];
    }
    let width = 8.min(planted.secret.len());
    (0..=planted.secret.len() - width).map(|i| &planted.secret[i..i + width]).collect()
}

fn assert_nothing_leaked(what: &str, output: &str, planted: &[Planted]) {
    for p in planted {
        for piece in pieces(p) {
            if let Some(line) = output.lines().find(|l| l.contains(piece)) {
                panic!("{} ({piece:?} of {:?}) leaked into {what}, in: {line}", p.kind, p.secret);
            }
        }
    }
}

/// The cluster's texts, each carrying every planted secret: the stuck user pods' messages, their events, the
/// hub's log, and the hub Deployment's annotations (`version` tells two templates apart).
fn plant_in_the_cluster(api: &ApiServer, planted: &[Planted]) {
    let all = planted.iter().map(|p| p.carrier.as_str()).collect::<Vec<_>>().join("; ");
    let pods = api.inner.lock().unwrap().objects["pods"].clone();
    for mut pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if name == "jupyter-carol" || name == "jupyter-erin" {
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] =
                json!(format!("Back-off pulling image: {all}"));
            api.put("pods", pod);
        }
    }
    for (i, p) in planted.iter().enumerate() {
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        api.put(
            "events",
            json!({
                "metadata": {"name": format!("jupyter-carol.planted{i}"), "namespace": NAMESPACE},
                "involvedObject": {"kind": "Pod", "name": "jupyter-carol", "namespace": NAMESPACE},
                "reason": "Failed", "type": "Warning", "message": format!("Failed to pull image: {}", p.carrier),
                "firstTimestamp": at, "lastTimestamp": at, "count": 1, "source": {"component": "kubelet"},
            }),
        );
    }
    let log: String = planted.iter().map(|p| format!("[E 2026-11-24 10:00:00 JupyterHub] {}\n", p.carrier)).collect();
    api.set_log("hub-7d9f8b6c5-x2k4p", "hub", false, &log);
    api.put("deployments", deployment(planted, "a"));
}

fn deployment(planted: &[Planted], version: &str) -> Value {
    let mut deployment = k8s_fixtures::hub_deployment("quay.io/jupyterhub/k8s-hub:4.1.0", version, 3);
    let annotations = &mut deployment["spec"]["template"]["metadata"]["annotations"];
    for (i, p) in planted.iter().enumerate() {
        annotations[format!("example.org/planted-{i}")] = json!(format!("{version} {}", p.carrier));
    }
    deployment
}

fn config(listen: std::net::SocketAddr, metrics: std::net::SocketAddr, state: &str, hub: &str, events: &str) -> String {
    let api = events.trim_end_matches("/v2/enqueue");
    format!(
        r#"listen: {listen}
metrics_listen: {metrics}
web: {{basic_auth_users: {{oncall: {{env: WEB_HASH}}}}}}
state_path: {state}
incidents: {{min_affected_users: 2, window: 1m, recovery_successes: 2, update_interval: 10m, keep_open_for: 0s}}
pagerduty: {{routing_key: {{env: ROUTING_KEY}}, events_url: "{events}", retry_delay: 1s,
  api_url: "{api}", api_token: {{env: PD_API_TOKEN}}, from_email: {FROM_EMAIL}, status_update_every: 5s}}
kubernetes: {{enabled: true, diagnostics_wait: 3s, call_timeout: 5s, pending_after: 1m}}
high_availability: {{lease_duration: 4s, renew_deadline: 3s, retry_period: 1s}}
scheduler: {{shutdown_grace: 10s, cleanup_timeout: 5s}}
defaults:
  probes:
    login: {{every: 2s, timeout: 5s}}
    server: {{every: 2s, timeout: 10s}}
    kernel: {{every: 2s, timeout: 5s}}
hubs:
  - name: stub
    url: {hub}
    namespace: {NAMESPACE}
    token: {{env: HUB_TOKEN}}
    users: [probe-1, probe-2]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_of_any_kind_reaches_any_output() {
    hubwatch::http::install_crypto_provider();
    let seed = std::env::var("REDACTION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("REDACTION_SEED={seed}");
    let web_hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let planted = planted(seed, &web_hash);

    let stub = Stub::default();
    {
        let mut behaviour = stub.behaviour.lock().unwrap();
        behaviour.progress = Progress::FailedWith;
        behaviour.failure_messages = planted.iter().map(|p| p.carrier.clone()).collect();
    }
    let hub_url = stub.clone().start().await;
    let (pd, events_url) = PagerDuty::running().await;
    let api = ApiServer::default();
    k8s_fixtures::load(&api, Trouble::BrokenImage, SystemTime::now());
    plant_in_the_cluster(&api, &planted);
    let api_url = api.start().await;

    let dir = tempfile::tempdir().unwrap();
    let (listen, metrics_listen) = (free_port(), free_port());
    let state = dir.path().join("state.db");
    let config_path = dir.path().join("hubwatch.yaml");
    std::fs::write(&config_path, config(listen, metrics_listen, state.to_str().unwrap(), &hub_url, &events_url))
        .unwrap();
    let kubeconfig = ApiServer::kubeconfig(&api_url, dir.path()).display().to_string();
    let env = [
        ("HUB_TOKEN", SERVICE_TOKEN),
        ("ROUTING_KEY", ROUTING_KEY),
        ("PD_API_TOKEN", API_TOKEN),
        ("WEB_HASH", web_hash.as_str()),
        ("KUBECONFIG", kubeconfig.as_str()),
        ("POD_NAMESPACE", "monitoring"),
        ("HOSTNAME", "replica-a"),
    ];
    let log = dir.path().join("hubwatch.log");
    let daemon = Daemon::start(&config_path, listen, &env, log);
    let metrics_base = format!("http://{metrics_listen}");
    wait_for("ready", Duration::from_secs(60), async || get(&format!("{metrics_base}/readyz"), None).await.0 == 200)
        .await;

    // The page, with its diagnostics collected (not "being collected").
    let with_diagnostics = |pd: &PagerDuty| {
        pd.accepted().into_iter().find(|e| {
            e["event_action"] == "trigger"
                && e["payload"]["custom_details"]["diagnostics"].as_str().is_some_and(|d| d.contains("$ kubectl"))
        })
    };
    wait_for("a trigger with diagnostics", Duration::from_secs(90), async || with_diagnostics(&pd).is_some()).await;
    let trigger = with_diagnostics(&pd).unwrap();
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    api.put("deployments", deployment(&planted, "b"));
    wait_for("the change event", Duration::from_secs(30), async || !pd.changes().is_empty()).await;
    wait_for("a status note", Duration::from_secs(60), async || !pd.notes().is_empty()).await;
    wait_for("the mirror holds the incident", Duration::from_secs(30), async || {
        api.mirrored_state().is_some_and(|m| m.contains(&key))
    })
    .await;

    // Not vacuous: what was planted arrived, redacted, through every channel.
    let diagnostics = trigger["payload"]["custom_details"]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("/hub/api/authorizations/token/[redacted]"), "the hub's log: {diagnostics}");
    assert!(diagnostics.contains("Failed to pull image: "), "the events: {diagnostics}");
    let reasons = trigger["payload"]["custom_details"]["last_errors"].to_string();
    assert!(reasons.contains("Back-off pulling image: "), "the pods' messages: {reasons}");
    let change = pd.changes()[0].to_string();
    assert!(change.contains("example.org/planted-") && change.contains("[redacted]"), "annotations: {change}");

    let authorization = {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("oncall:{PASSWORD}")))
    };
    let mut outputs: Vec<(String, String)> = Vec::new();
    for path in
        ["/", "/incidents", &format!("/incidents/{key}"), &format!("/incidents/{key}/report.md"), "/api/v1/status"]
    {
        let (status, body) = get(&format!("{}{path}", daemon.base), Some(&authorization)).await;
        assert_eq!(status, 200, "{path}: {body}");
        outputs.push((format!("the page {path}"), body));
    }
    outputs.push(("the metrics".into(), get(&format!("{metrics_base}/metrics"), None).await.1));
    // The routing key belongs in its own field of each event, and nowhere else.
    let without_key = |events: Vec<Value>| -> String {
        let events: Vec<Value> = events
            .into_iter()
            .map(|mut e| {
                assert_eq!(e.as_object_mut().unwrap().remove("routing_key"), Some(json!(ROUTING_KEY)));
                e
            })
            .collect();
        format!("{events:?}")
    };
    let received = pd.received();
    let senders: Vec<&String> = received.iter().map(|r| &r.sender).collect();
    outputs.push((
        "the events PagerDuty received".into(),
        without_key(received.iter().map(|r| r.event.clone()).collect()),
    ));
    outputs.push(("the senders PagerDuty saw".into(), format!("{senders:?}")));
    outputs.push(("the change events".into(), without_key(pd.changes())));
    outputs.push(("the status notes".into(), format!("{:?}", pd.notes())));
    outputs.push(("the mirror".into(), api.mirrored_state().unwrap()));
    let log = daemon.log.clone();
    assert_eq!(daemon.stop(Duration::from_secs(60)).await, Some(0));
    outputs.push(("the log".into(), std::fs::read_to_string(log).unwrap()));
    for suffix in ["", "-wal"] {
        let bytes = std::fs::read(format!("{}{suffix}", state.display())).unwrap_or_default();
        outputs.push((format!("the state database{suffix}"), String::from_utf8_lossy(&bytes).into_owned()));
    }
    let (_, status) = outputs.iter().find(|(what, _)| what == "the page /api/v1/status").unwrap();
    assert!(status.contains("Spawn failed: ") && status.contains("[redacted]"), "the hub's messages: {status}");
    for (what, output) in &outputs {
        assert_nothing_leaked(what, output, &planted);
    }
    eprintln!("{} secrets of {} kinds checked in {} outputs", planted.len(), planted.len(), outputs.len());
}
