//! The status pages as a browser shows them: hubwatch's web endpoints serve a board and a store with an open
//! incident, and headless Chromium (Debian's `chromium`; `scripts/test.sh` installs it) loads them. The grid
//! shows every hub and capability, the incident page its timeline, and a hub error message holding
//! `<script>` is shown as text and never runs. Screenshots (phone and desktop) go to `target/`.

use crate::support::outcomes::finished;
use crate::support::tiers::{Needs, require};
use hubwatch::app::pipeline::Pipeline;
use hubwatch::clock::Clock;
use hubwatch::config::Config;
use hubwatch::detector::Detector;
use hubwatch::domain::{Capability, HubName};
use hubwatch::http::HttpClient;
use hubwatch::store::Store;
use hubwatch::web::router;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a hostile hub answers when a spawn fails: it must reach the page as text.
const HOSTILE: &str =
    "Spawn failed: <script>document.title='pwned';document.body.innerHTML='pwned'</script> & <b>bold</b>";

fn config(state: &Path) -> Config {
    let yaml = format!(
        "state_path: {}
public_url: http://127.0.0.1/
hubs:
  - name: temple
    url: https://temple.example.org
    token: {{env: T}}
    users: [probe-1, probe-2]
    dask_gateway: {{url: https://temple.example.org/services/dask-gateway}}
  - name: river
    url: https://river.example.org
    token: {{env: T}}
    users: [probe-1, probe-2]
  - name: staging
    url: https://staging.example.org
    token: {{env: T}}
    users: [probe-1, probe-2]
",
        state.display()
    );
    Config::parse(&yaml, Path::new("pages.yaml"), &|_| Some("token".into())).unwrap()
}

/// What a real outage looks like on the page (the README's picture is taken of it).
const REALISTIC: &str =
    "Spawn failed: the server's pod did not start in 300 seconds: 0/5 nodes are available: 5 Insufficient memory";

/// Serves the pages of: temple with an open incident (both users cannot start servers, for `reason`),
/// river with a support ticket (one user cannot execute code), staging all well.
async fn serve(dir: &Path, reason: &str) -> (String, String) {
    let config = config(&dir.join("state.db"));
    let store = Arc::new(Store::open(&config.state_path).unwrap());
    let pipeline = Pipeline::new(&config, store.clone(), HttpClient::new().unwrap(), Clock::start());
    let board = pipeline.board.clone();
    board.set_hubs(&config.hubs);
    let manager = pipeline.manager(&Arc::new(config.clone()), None);
    let mut detector = Detector::new(config.incidents.detector());
    let now = SystemTime::now();
    let ago = |minutes: u64| now - Duration::from_secs(60 * minutes);
    let mut outcomes = Vec::new();
    for hub in ["temple", "river", "staging"] {
        for user in ["probe-1", "probe-2"] {
            for capability in [Capability::Login, Capability::Server, Capability::Kernel] {
                outcomes.push(finished(hub, user, capability, None, ago(30)));
            }
        }
    }
    outcomes.push(finished("temple", "probe-1", Capability::DaskGateway, None, ago(20)));
    outcomes.push(finished("temple", "probe-2", Capability::DaskGateway, None, ago(20)));
    for (user, minutes) in [("probe-1", 12), ("probe-2", 11), ("probe-1", 2), ("probe-2", 1)] {
        outcomes.push(finished("temple", user, Capability::Server, Some(reason), ago(minutes)));
    }
    outcomes.push(finished("river", "probe-2", Capability::Kernel, Some("Kernel died: exit code 137"), ago(3)));
    for outcome in &outcomes {
        board.record(outcome);
        for transition in detector.observe(outcome, outcome.started_at + outcome.duration) {
            manager.handle(&transition).unwrap();
        }
    }
    for hub in ["temple", "river"].map(HubName::new) {
        let hub = &hub;
        let symptoms = detector.symptoms(hub, hubwatch::domain::IncidentKind::HubAccess, now);
        let open = detector.is_open(hub, hubwatch::domain::IncidentKind::HubAccess);
        board.set_affected(hub, hubwatch::domain::IncidentKind::HubAccess.capabilities(), &symptoms, open);
    }
    let key = store.open_incidents().unwrap()[0].key.clone();
    past_trouble(&manager, &store, now);
    pipeline.health.set_started(true);
    let state = pipeline.web_state(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let users = std::collections::BTreeMap::from([(USER.to_string(), bcrypt::hash(PASSWORD, 4).unwrap())]);
    let access = std::sync::Arc::new(hubwatch::web::auth::Access::new(users, Vec::new()));
    let served = std::sync::Arc::new(hubwatch::web::origin::Served::new(None, &[]));
    let app = router(state, access, served).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, key.to_string())
}

/// History for the strips: river had a 40-minute incident three days ago, staging a two-hour support ticket
/// five days ago.
fn past_trouble(manager: &hubwatch::incident::IncidentManager, store: &Store, now: SystemTime) {
    use hubwatch::domain::{IncidentKind, Stage, Symptoms, TicketKind, Transition, UserFailure};
    // At noon UTC of past days: the strips count UTC days, and a history seeded at `now` minus whole days
    // would cross midnight when the test runs late in the day (a two-hour ticket on two days).
    let today = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let noon = std::time::UNIX_EPOCH + Duration::from_secs(today * 86_400 + 12 * 3600);
    let days_ago = |days: u64| noon - Duration::from_secs(days * 86_400);
    let at = days_ago(3);
    let failure =
        UserFailure { stage: Stage::Progress, reason: "Spawn failed: node pool full".into(), since: at, last: at };
    let users = [("probe-1".to_string(), failure.clone()), ("probe-2".to_string(), failure)].into();
    let symptoms = Symptoms { affected: [(Capability::Server, users)].into() };
    let kind = IncidentKind::HubAccess;
    manager.handle(&Transition::Opened { hub: "river".into(), kind, symptoms, at }).unwrap();
    let recovered = Transition::Recovered { hub: "river".into(), kind, at: at + Duration::from_secs(40 * 60) };
    manager.handle(&recovered).unwrap();
    let ticket = hubwatch::store::Ticket {
        id: "staging-ticket".into(),
        hub: "staging".into(),
        kind: TicketKind::HubAccess,
        opened_at: days_ago(5),
        users: vec!["probe-1".into()],
        reason: None,
    };
    store.open_ticket(&ticket, None).unwrap();
    store.close_ticket(&ticket.id, days_ago(5) + Duration::from_secs(2 * 3600), None).unwrap();
}

/// The pages need a login: Chromium gives it in the URL.
const USER: &str = "oncall";
const PASSWORD: &str = "chromium-test-password";

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("chromium"));
    let found = std::process::Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "no Chromium at {} (Debian's chromium package; scripts/test.sh installs it)", path.display());
    path
}

/// Runs headless Chromium with a fresh profile on `url` with `args` (`--dump-dom`, `--screenshot=…`).
async fn browse(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("Chromium finishes within 2 minutes")
        .unwrap();
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn title(dom: &str) -> &str {
    dom.split("<title>").nth(1).and_then(|t| t.split("</title>").next()).unwrap_or("")
}

#[ignore = "needs Chromium (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_every_hub_and_the_incident_and_hub_text_never_runs() {
    require(&[Needs::Chromium]);
    let dir = tempfile::tempdir().unwrap();
    let (address, key) = serve(dir.path(), HOSTILE).await;
    let refused = browse(&format!("{address}/"), &["--dump-dom"]).await;
    assert!(!refused.contains("temple"), "nothing shown without a login: {refused}");
    let base = address.replace("http://", &format!("http://{USER}:{PASSWORD}@"));

    let grid = browse(&format!("{base}/"), &["--dump-dom"]).await;
    assert_eq!(title(&grid), "hubwatch status", "no script ran");
    assert!(!grid.contains("<script"), "no script element made it into the page");
    assert!(grid.contains("&lt;script&gt;document.title='pwned'"), "the hostile reason is shown as text: {grid}");
    assert!(grid.contains("&lt;b&gt;bold&lt;/b&gt;") && !grid.contains("<b>bold</b>"));
    for hub in ["temple", "river", "staging"] {
        assert!(grid.contains(&format!(">{hub}</a>")), "the grid shows {hub}");
    }
    for capability in ["Log in", "Start a server", "Execute code", "Dask Gateway"] {
        assert!(grid.contains(&format!("<th>{capability}</th>")), "the grid has a {capability} column");
        assert!(grid.contains(&format!("data-label=\"{capability}\"")), "cells are labelled for phones");
    }
    assert!(grid.contains("Incident · 2 users"), "temple's servers are an incident");
    assert!(grid.contains("Support ticket · 1 user"), "river's kernel failure is a support ticket");
    assert!(grid.contains(&format!("href=\"/incidents/{key}\"")), "the open incident is linked");
    assert!(grid.contains("not configured"), "river has no Dask Gateway");
    assert_eq!(grid.matches("<div class=\"strip\" aria-hidden=\"true\">").count(), 3, "a 30-day strip per hub");
    assert_eq!(
        grid.matches("class=\"d0\"").count()
            + grid.matches("class=\"dt\"").count()
            + grid.matches("class=\"di\"").count()
            + grid.matches("class=\"dl\"").count(),
        90,
        "30 days each"
    );
    for words in ["incidents on 1 day (40m)", "support tickets on 1 more day", "last 30 days: incidents on 1 day ("] {
        assert!(grid.contains(words), "the strips say it in words too: {words}");
    }
    let availability = browse(&format!("{base}/availability"), &["--dump-dom"]).await;
    assert!(
        availability.contains("incidents on 1 day (40m)") && availability.contains("class=\"strip\""),
        "{availability}"
    );

    let page = browse(&format!("{base}/incidents/{key}"), &["--dump-dom"]).await;
    assert!(title(&page).starts_with("temple hub_access incident"), "{}", title(&page));
    assert!(!page.contains("<script"));
    assert!(page.contains("&lt;script&gt;document.title='pwned'"), "escaped on the incident page too");
    for entry in ["impact start</span>", "detected</span>"] {
        assert!(page.contains(entry), "the timeline shows {entry}: {page}");
    }
    assert!(page.contains("→ detected after") && page.contains("→ ongoing after"), "its course in words: {page}");
    assert!(page.contains(&format!("href=\"/incidents/{key}/report.md\"")), "links to the report draft");

    let list = browse(&format!("{base}/incidents"), &["--dump-dom"]).await;
    assert!(list.contains("temple: 2 users cannot start their servers") && list.contains(">open<"), "{list}");

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let incident_page = format!("/incidents/{key}");
    for (name, path, size) in [
        ("status-page-phone.png", "/", "412,1400"),
        ("status-page.png", "/", "1280,900"),
        ("incident-page-phone.png", incident_page.as_str(), "412,1400"),
        ("availability-phone.png", "/availability", "412,1400"),
    ] {
        let file = target.join(name);
        let _ = std::fs::remove_file(&file);
        let (screenshot, window) = (format!("--screenshot={}", file.display()), format!("--window-size={size}"));
        browse(&format!("{base}{path}"), &[&screenshot, &window]).await;
        let png = std::fs::read(&file).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}: a real screenshot");
    }
    // The README's picture (docs/status-page.png is a copy): the same grid with a real outage's words.
    let realistic = tempfile::tempdir().unwrap();
    let (address, _) = serve(realistic.path(), REALISTIC).await;
    let base = address.replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    for (name, size) in [("readme-status-page.png", "1280,820"), ("readme-status-page-phone.png", "412,1400")] {
        let file = target.join(name);
        let (screenshot, window) = (format!("--screenshot={}", file.display()), format!("--window-size={size}"));
        browse(&format!("{base}/"), &[&screenshot, &window]).await;
        assert!(std::fs::read(&file).unwrap().starts_with(b"\x89PNG"));
    }
}
