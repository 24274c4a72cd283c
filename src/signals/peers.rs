//! Peers: hubwatch instances in other clusters watch each other. A cluster that dies takes its hubwatch with
//! it; the peer in another cluster notices: `GET {url}healthz` (the metrics listener's, no credentials) that
//! fails — unreachable, hung, or answering other than 200 — for `after` makes the peer one affected "user"
//! of kind `monitor` under the peer's name (the detector needs one: [`crate::domain::IncidentKind::threshold`]).
//! It clears when the peer answers 200 again.

use crate::config::PeerConfig;
use crate::domain::{Capability, RealUsers, SignalSource};
use crate::http::{Auth, HttpClient};
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest one look at a peer may take.
const LOOK_LIMIT: Duration = Duration::from_secs(10);

/// How often a peer is looked at: a quarter of its `after` (so that an outage is seen within it), at most
/// every 30 s.
pub fn look_every(after: Duration) -> Duration {
    (after / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// Watches `peer` until `stop`, sending its state whenever it changes (and its latest look to `metrics`).
pub async fn watch(
    peer: PeerConfig,
    http: HttpClient,
    metrics: Arc<Metrics>,
    updates: mpsc::Sender<RealUsers>,
    stop: CancellationToken,
) {
    let mut failing: Option<(SystemTime, String)> = None;
    let mut said: Option<bool> = None;
    let mut ticks = tokio::time::interval(look_every(peer.after));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let looked = look(&peer, &http).await;
        metrics.set_peer_up(&peer.name, looked.is_ok());
        match looked {
            Ok(()) => failing = None,
            Err(why) => {
                let since = failing.as_ref().map_or_else(SystemTime::now, |(since, _)| *since);
                failing = Some((since, why));
            }
        }
        let down = failing.as_ref().filter(|(since, _)| since.elapsed().is_ok_and(|d| d >= peer.after));
        if said == Some(down.is_some()) {
            continue;
        }
        said = Some(down.is_some());
        let users: BTreeMap<String, (String, SystemTime)> =
            down.map(|(since, why)| (peer.name.to_string(), (why.clone(), *since))).into_iter().collect();
        let update =
            RealUsers { hub: peer.name.clone(), source: SignalSource::Peer, capability: Capability::Monitor, users };
        if updates.send(update).await.is_err() {
            return;
        }
    }
}

/// One look: `Ok` when the peer's `/healthz` answers 200, else what was seen.
async fn look(peer: &PeerConfig, http: &HttpClient) -> Result<(), String> {
    let url = peer.url.join("healthz").expect("a relative path joins");
    let deadline = tokio::time::Instant::now() + LOOK_LIMIT;
    let host = peer.url.host_str().unwrap_or("?");
    match http.call(hyper::Method::GET, url, Auth::None, None, deadline).await {
        Ok(response) if response.status.is_success() => Ok(()),
        Ok(response) => {
            let said = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).trim().to_string();
            Err(crate::domain::wording::truncate(
                &format!("the hubwatch at {host} answers /healthz with HTTP {}: {said}", response.status.as_u16()),
                300,
            ))
        }
        Err(e) => Err(format!("the hubwatch at {host} does not answer /healthz: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_looked_at_four_times_within_its_after() {
        assert_eq!(look_every(Duration::from_secs(180)), Duration::from_secs(30));
        assert_eq!(look_every(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(look_every(Duration::from_millis(100)), Duration::from_millis(250));
    }
}
