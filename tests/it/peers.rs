//! Who watches the watcher: two `hubwatch run` processes, each watching a stub hub of its own, watching each
//! other through `/healthz`. One stops: the other pages a `monitor` incident named after it, within the peer's
//! `after` and a look; it comes back: the incident resolves, once, with the same key.

use crate::support::daemon::{Daemon, free_port, fresh_state, metric, stub_yaml, wait_for};
use crate::support::pagerduty::{PagerDuty, ROUTING_KEY};
use crate::support::stub_hub::{SERVICE_TOKEN, Stub};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Where one instance runs: its address and its own (healthy) stub hub.
struct Instance {
    listen: SocketAddr,
    hub: String,
}

impl Instance {
    async fn new() -> Instance {
        Instance { listen: free_port(), hub: Stub::default().start().await }
    }
}

/// `hubwatch run` named by `me` on `at`, watching the peer `other` at `other_at`.
fn peer(dir: &Path, me: &str, at: &Instance, other: &str, other_at: &Instance, events: &str) -> Daemon {
    let config = dir.join(format!("{me}.yaml"));
    let state = fresh_state(dir, &format!("{me}-state.db"));
    let peers = format!("peers: [{{name: {other}, url: \"http://{}/\", after: 2s}}]\n", other_at.listen);
    std::fs::write(&config, stub_yaml(at.listen, &state, &at.hub, events, &peers)).unwrap();
    let env = [("ROUTING_KEY", ROUTING_KEY), ("HUB_TOKEN", SERVICE_TOKEN)];
    Daemon::start(&config, at.listen, &env, dir.join(format!("{me}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_pages_from_the_other_and_resolves_when_back() {
    hubwatch::http::install_crypto_provider();
    let (pd, events) = PagerDuty::running().await;
    let dir = tempfile::tempdir().unwrap();
    let (east_at, west_at) = (Instance::new().await, Instance::new().await);
    let east = peer(dir.path(), "east", &east_at, "west", &west_at, &events);
    let west = peer(dir.path(), "west", &west_at, "east", &east_at, &events);
    east.wait_ready().await;
    west.wait_ready().await;
    let sees_west = async || metric(&east.metrics().await, "hubwatch_peer_up", &["peer=\"west\""]) == 1.0;
    wait_for("east to see west up", Duration::from_secs(30), sees_west).await;
    let sees_east = async || metric(&west.metrics().await, "hubwatch_peer_up", &["peer=\"east\""]) == 1.0;
    wait_for("west to see east up", Duration::from_secs(30), sees_east).await;
    assert!(pd.accepted().is_empty(), "healthy peers page nobody");

    assert_eq!(west.stop(Duration::from_secs(60)).await, Some(0));
    let latency = wait_for("east's page for west", Duration::from_secs(30), async || !pd.accepted().is_empty()).await;
    eprintln!("    a stopped peer paged {latency:?} after it exited (after 2s)");
    let trigger = pd.accepted()[0].clone();
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(
        trigger["payload"]["summary"],
        "west: the hubwatch instance there is down or unhealthy: its hubs go unwatched"
    );
    assert_eq!(trigger["payload"]["class"], "monitor");
    let reasons = trigger["payload"]["custom_details"]["last_errors"].to_string();
    assert!(
        reasons.contains(&format!("the hubwatch at {} does not answer /healthz", west_at.listen.ip())),
        "{reasons}"
    );

    let west = peer(dir.path(), "west-again", &west_at, "east", &east_at, &events);
    west.wait_ready().await;
    let key = trigger["dedup_key"].as_str().unwrap().to_string();
    wait_for("the resolve when west is back", Duration::from_secs(30), async || {
        pd.accepted().iter().any(|e| e["event_action"] == "resolve" && e["dedup_key"] == key.as_str())
    })
    .await;
    assert_eq!(pd.accepted_actions(), ["trigger", "resolve"], "one page, one resolve");
    assert_eq!(east.stop(Duration::from_secs(60)).await, Some(0));
    assert_eq!(west.stop(Duration::from_secs(60)).await, Some(0));
}
