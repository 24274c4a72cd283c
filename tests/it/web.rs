//! Web access as an operator deploys it (`hubwatch run`, no hub needed): with `web.basic_auth_users`,
//! every page and API route answers 401 with `WWW-Authenticate` without credentials and 200 with them;
//! `/healthz`, `/readyz` and the `metrics_listen` listener are open; security headers on every answer;
//! failed attempts throttled per client; TLS with a certificate made in the test, and a renewed certificate
//! taken without a restart.

use crate::support::daemon::{Daemon, free_port, wait_for};
use crate::support::tls::certificate;
use hubwatch::domain::IncidentKey;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const USER: &str = "oncall";
const PASSWORD: &str = "correct horse battery staple";
const PAGES: [&str; 9] = [
    "/",
    "/incidents",
    "/incidents/nope",
    "/incidents/nope/report.md",
    "/api/v1/status",
    "/api/v1/discovered-hubs",
    "/availability",
    "/api/v1/availability",
    "/metrics",
];

fn hash() -> String {
    bcrypt::hash(PASSWORD, 4).unwrap()
}

/// A config watching one unreachable hub (nothing to probe, everything to serve).
fn write_config(
    dir: &Path,
    listen: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("web.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nmetrics_listen: {metrics}\nstate_path: {}\nweb:\n  basic_auth_users: {{{USER}: \"{}\"}}\n{extra}\
             hubs: [{{name: nowhere, url: \"http://127.0.0.1:9/\", token: {{env: HUB_TOKEN}}, users: [a, b]}}]\n",
            dir.join("state.db").display(),
            hash()
        ),
    )
    .unwrap();
    path
}

/// `hubwatch run` on [`write_config`]'s configuration (with `extra` under `web:`) in `dir`, logging to `log`;
/// the daemon with its `listen` and `metrics_listen` addresses.
fn start(dir: &Path, extra: &str, log: &str) -> (Daemon, std::net::SocketAddr, std::net::SocketAddr) {
    let (listen, metrics) = (free_port(), free_port());
    let config = write_config(dir, listen, metrics, extra);
    (Daemon::start(&config, listen, &[("HUB_TOKEN", "x")], dir.join(log)), listen, metrics)
}

/// As [`start`] with the usual configuration in a directory of its own (kept while the daemon runs: bind it),
/// once it is ready.
async fn ready() -> (tempfile::TempDir, Daemon, std::net::SocketAddr, std::net::SocketAddr) {
    hubwatch::http::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, listen, metrics) = start(dir.path(), "", "web.log");
    daemon.wait_ready().await;
    (dir, daemon, listen, metrics)
}

async fn answer(client: &reqwest::Client, url: &str, credentials: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    request.send().await.unwrap_or_else(|e| panic!("{url}: {e} ({:?})", std::error::Error::source(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_needs_credentials_the_probes_do_not_and_failures_are_throttled() {
    let (_dir, daemon, listen, metrics) = ready().await;
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    for path in PAGES {
        let denied = answer(&client, &format!("{base}{path}"), None).await;
        assert_eq!(denied.status(), 401, "{path}");
        assert_eq!(denied.headers()["www-authenticate"], "Basic realm=\"hubwatch\"", "{path}");
        let allowed = answer(&client, &format!("{base}{path}"), Some((USER, PASSWORD))).await;
        let expected = if path.contains("nope") { 404 } else { 200 };
        assert_eq!(allowed.status(), expected, "{path}");
        let headers = allowed.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"), "no script allowed: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }
    let unreadable = answer(&client, &format!("{base}/availability?since=soon"), Some((USER, PASSWORD))).await;
    assert_eq!(unreadable.status(), 400, "a period that is not a duration");
    let forget = format!("{base}/api/v1/discovered-hubs/nope");
    assert_eq!(client.delete(&forget).send().await.unwrap().status(), 401, "forgetting a hub needs credentials");
    let forgotten = client.delete(&forget).basic_auth(USER, Some(PASSWORD)).send().await.unwrap();
    assert_eq!(forgotten.status(), 404, "no such hub");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(answer(&client, &format!("{base}{path}"), None).await.status(), 200, "{path} stays open");
    }
    let scrape = format!("http://{metrics}");
    let metrics_page = answer(&client, &format!("{scrape}/metrics"), None).await;
    assert_eq!(metrics_page.status(), 200, "the metrics listener is open");
    assert!(metrics_page.text().await.unwrap().contains("hubwatch_build_info"));
    assert_eq!(answer(&client, &format!("{scrape}/incidents"), None).await.status(), 404, "and serves nothing else");
    assert_eq!(answer(&client, &format!("{scrape}/readyz"), None).await.status(), 200);

    // A wrong password: 401, ten times; then the client is throttled, even with the right one.
    for _ in 0..10 {
        assert_eq!(answer(&client, &format!("{base}/"), Some((USER, "guess"))).await.status(), 401);
    }
    let throttled = answer(&client, &format!("{base}/"), Some((USER, PASSWORD))).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(!daemon.log().contains(PASSWORD) && !daemon.log().contains("guess"), "no password in the log");
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}

/// A client that trusts only the authority `ca`.
fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let root = reqwest::Certificate::from_pem(&pem).unwrap();
    reqwest::Client::builder().tls_certs_only([root]).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_are_served_over_tls_and_a_renewed_certificate_is_taken_without_a_restart() {
    hubwatch::http::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, first_cert, first_key) = certificate(dir.path(), "first");
    std::fs::copy(&first_cert, dir.path().join("tls.crt")).unwrap();
    std::fs::copy(&first_key, dir.path().join("tls.key")).unwrap();
    let (daemon, listen, metrics) = start(dir.path(), "  tls: {cert_file: tls.crt, key_file: tls.key}\n", "tls.log");
    // /readyz over plain HTTP on the metrics listener (the pages' listener speaks TLS only).
    let ready = format!("http://{metrics}/readyz");
    wait_for("ready", Duration::from_secs(60), async || crate::support::daemon::get(&ready, None).await.0 == 200).await;
    let url = format!("https://127.0.0.1:{}/", listen.port());
    let page = answer(&trusting(&first_ca), &url, Some((USER, PASSWORD))).await;
    assert_eq!(page.status(), 200);
    assert_eq!(answer(&trusting(&first_ca), &url, None).await.status(), 401);
    let plain = reqwest::Client::new().get(format!("http://{listen}/")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "no plain HTTP on the TLS port");

    // The certificate is renewed in place: within the reload interval the new one is served.
    let (second_ca, second_cert, second_key) = certificate(dir.path(), "second");
    std::fs::copy(&second_key, dir.path().join("tls.key")).unwrap();
    std::fs::copy(&second_cert, dir.path().join("tls.crt")).unwrap();
    let renewed = trusting(&second_ca);
    wait_for("the renewed certificate", Duration::from_secs(40), async || {
        renewed.get(&url).basic_auth(USER, Some(PASSWORD)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}

#[test]
fn a_password_in_place_of_its_hash_is_refused_without_quoting_it() {
    let text = "web:\n  basic_auth_users: {oncall: hunter2hunter2}\nhubs: [{name: a, url: \"http://127.0.0.1:9/\", token: {env: T}, users: [a, b]}]\n";
    let error = hubwatch::config::Config::parse(text, Path::new("web.yaml"), &|_| Some("x".into())).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("web.basic_auth_users.oncall: expected a bcrypt hash"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn hash_password_prints_a_hash_that_verifies() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubwatch"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(bcrypt::verify("s3cret", hash.trim()).unwrap(), "{hash}");
}

/// `/incidents` costs the same with 120 incidents as with 50: fifty to a page, newest first, with links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_listed_fifty_to_a_page() {
    hubwatch::http::install_crypto_provider();
    use hubwatch::domain::IncidentKind;
    use hubwatch::domain::Message;
    use hubwatch::store::{IncidentRecord, NewEvent, Store};
    use std::time::UNIX_EPOCH;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let at = |i: u64| UNIX_EPOCH + Duration::from_secs(1_795_000_000 + i * 3600);
    for i in 0..120u64 {
        let key = format!("nowhere-hub_access-{i:03}");
        let key = IncidentKey::from(key);
        let record = IncidentRecord::opened(&key, &"nowhere".into(), IncidentKind::HubAccess, at(i), at(i));
        let trigger = crate::support::a_trigger("nowhere", at(i));
        store
            .open_incident(&record, "impact", &[(hubwatch::store::TimelineKind::Detected, "detected")], &[trigger])
            .unwrap();
        let resolve = NewEvent::now(Message::Resolve);
        store.recover_incident(&key, at(i) + Duration::from_secs(600), "recovered", &[resolve]).unwrap();
    }
    drop(store);
    let (daemon, listen, _) = start(dir.path(), "", "web.log");
    daemon.wait_ready().await;
    let client = reqwest::Client::new();
    let page = async |query: &str| {
        let answer = answer(&client, &format!("http://{listen}/incidents{query}"), Some((USER, PASSWORD))).await;
        assert_eq!(answer.status(), 200, "{query}");
        answer.text().await.unwrap()
    };
    let rows = |html: &str| html.matches("href=\"/incidents/nowhere-hub_access-").count();
    let first = page("").await;
    assert_eq!(rows(&first), 50);
    assert!(first.contains("120 incidents, newest first · page 1 of 3"), "{first}");
    assert!(first.contains("nowhere-hub_access-119") && !first.contains("nowhere-hub_access-069"), "newest first");
    assert!(first.contains("href=\"/incidents?page=2\""), "a link to older ones");
    let last = page("?page=3").await;
    assert_eq!(rows(&last), 20);
    assert!(last.contains("nowhere-hub_access-000") && last.contains("href=\"/incidents?page=2\""));
    assert_eq!(rows(&page("?page=9").await), 0, "past the end: an empty page, not an error");
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}

/// As an attacker would try it: a foreign page makes the on-call engineer's browser (with its cached Basic
/// credentials) post a silence as a text/plain, urlencoded or multipart form, or send JSON from its origin; a
/// DNS-rebound name reaches the pages. None makes a silence. The CLI (JSON, no Origin) still silences, as the
/// user it authenticated as; an unknown field is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_and_rebound_hosts_are_refused_and_the_cli_still_silences() {
    let (_dir, daemon, listen, _) = ready().await;
    let client = reqwest::Client::new();
    let silences = format!("http://{listen}/api/v1/silences");
    // The form's single field name holds the JSON; its value closes it (text/plain's `name=value`).
    let smuggled = r#"{"hub":"nowhere","duration":"2159h","reason":"x","pad":"=1"}"#;
    let post = |content_type: &'static str, body: String, origin: Option<&'static str>| {
        let mut request =
            client.post(&silences).basic_auth(USER, Some(PASSWORD)).header("content-type", content_type).body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let forms = [
        ("text/plain", smuggled.to_string()),
        ("application/x-www-form-urlencoded", format!("{}=1", urlencode(smuggled))),
        (
            "multipart/form-data; boundary=b",
            format!("--b\r\nContent-Disposition: form-data; name=\"{smuggled}\"\r\n\r\n1\r\n--b--\r\n"),
        ),
    ];
    for (content_type, body) in forms {
        let answer = post(content_type, body, Some("https://evil.example")).await.unwrap();
        assert!(matches!(answer.status().as_u16(), 403 | 415), "{content_type}: {}", answer.status());
    }
    let json = r#"{"hub":"nowhere","duration":"1h","reason":"from evil"}"#;
    let from_evil = post("application/json", json.into(), Some("https://evil.example")).await.unwrap();
    assert_eq!(from_evil.status(), 403, "JSON from a foreign origin");
    let fetch_site = client
        .post(&silences)
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), 403, "Sec-Fetch-Site: cross-site");
    let rebound = client
        .get(format!("http://{listen}/"))
        .basic_auth(USER, Some(PASSWORD))
        .header("host", format!("evil.example:{}", listen.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421, "a rebound name");
    let rebound_delete = client.delete(format!("{silences}/x")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(rebound_delete.status(), 421, "DELETE through a rebound name");

    let unknown = post("application/json", r#"{"hub":"nowhere","duration":"1h","reason":"r","pad":"x"}"#.into(), None)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400, "an unknown field");
    assert!(unknown.text().await.unwrap().contains("pad"));
    let listed = || async {
        let answer = answer(&client, &silences, Some((USER, PASSWORD))).await;
        answer.json::<Vec<serde_json::Value>>().await.unwrap()
    };
    assert!(listed().await.is_empty(), "no silence was made");

    let own_page = post(
        "application/json",
        r#"{"hub":"nowhere","duration":"1h","reason":"from the page","created_by":"mallory"}"#.into(),
        Some("leak"),
    )
    .await
    .unwrap();
    assert_eq!(own_page.status(), 403, "an Origin that is not a URL");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_hubwatch"))
        .args(["silence", "add", "--url", &format!("http://{listen}"), "--hub", "nowhere", "--for", "1h"])
        .args(["--reason", "upgrading", "--created-by", "mallory"])
        .env("HUBWATCH_WEB_USER", USER)
        .env("HUBWATCH_WEB_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let made = listed().await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["created_by"], USER, "the authenticated user, not what the body says");
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A thousand active silences are the most: the next is refused (409) and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_active_silences_are_the_most() {
    hubwatch::http::install_crypto_provider();
    use hubwatch::domain::{Silence, SilenceSource};
    let dir = tempfile::tempdir().unwrap();
    let store = hubwatch::store::Store::open(&dir.path().join("state.db")).unwrap();
    let now = std::time::SystemTime::now();
    for i in 0..1000 {
        store
            .put_silence(&Silence {
                id: format!("s-{i:04}"),
                hub: "nowhere".into(),
                kind: None,
                starts_at: now - Duration::from_secs(60),
                ends_at: now + Duration::from_secs(86_400),
                every: None,
                reason: "maintenance".into(),
                created_by: "test".into(),
                source: SilenceSource::Api,
            })
            .unwrap();
    }
    drop(store);
    let (daemon, listen, _) = start(dir.path(), "", "web.log");
    daemon.wait_ready().await;
    let client = reqwest::Client::new();
    let silences = format!("http://{listen}/api/v1/silences");
    let refused = client
        .post(&silences)
        .basic_auth(USER, Some(PASSWORD))
        .json(&serde_json::json!({"hub": "nowhere", "duration": "1h", "reason": "one more"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("1000 active silences already"));
    let listed = answer(&client, &silences, Some((USER, PASSWORD))).await.json::<Vec<serde_json::Value>>().await;
    assert_eq!(listed.unwrap().len(), 1000, "nothing was made");
    assert_eq!(daemon.stop(Duration::from_secs(30)).await, Some(0));
}
