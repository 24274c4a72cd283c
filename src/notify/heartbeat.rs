//! The heartbeat: who watches the watcher. A cluster that dies takes its hubs, hubwatch and the Prometheus
//! that would alert on `HubwatchDown` with it, and nothing pages. A dead-man's switch elsewhere
//! (healthchecks.io, Cronitor, Dead Man's Snitch, an Opsgenie heartbeat) pages when its pings stop: hubwatch
//! pings it every `heartbeat.every` while it leads (this task runs only then) and is healthy — ready, alive,
//! its state taking writes. An unhealthy hubwatch withholds the ping on purpose: its silence is the alarm.

use crate::config::{HeartbeatConfig, HeartbeatMethod};
use crate::health::Health;
use crate::http::HttpClient;
use crate::metrics::{Metrics, Ping};
use crate::store::Store;
use hyper::header::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The longest one ping may take (a ping is a tiny request; the switch's own grace covers a missed one).
const PING_LIMIT: Duration = Duration::from_secs(30);

pub struct Heartbeat {
    pub config: HeartbeatConfig,
    pub http: HttpClient,
    pub health: Arc<Health>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
}

impl Heartbeat {
    /// Pings every `every` until `stop` (the first at once: a restarted hubwatch says so without delay).
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let ping = match self.healthy() {
                Err(why) => {
                    tracing::warn!(%why, "heartbeat withheld: hubwatch is not healthy");
                    Ping::Withheld
                }
                Ok(()) => self.ping().await,
            };
            self.metrics.count_heartbeat(ping);
        }
    }

    /// Ready and alive, as `/readyz` and `/healthz` would answer now.
    fn healthy(&self) -> Result<(), String> {
        self.health.observe_writes(self.store.health());
        self.health.readiness()?;
        self.health.liveness(SystemTime::now())
    }

    async fn ping(&self) -> Ping {
        let method = match self.config.method {
            HeartbeatMethod::Get => hyper::Method::GET,
            HeartbeatMethod::Post => hyper::Method::POST,
        };
        let mut request = self.http.request(method, &self.config.url);
        for (name, value) in &self.config.headers {
            // Names and values were checked when the config was read.
            if let (Ok(name), Ok(mut value)) =
                (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
            {
                value.set_sensitive(true);
                request = request.header(name, value);
            }
        }
        let deadline = tokio::time::Instant::now() + PING_LIMIT.min(self.config.every);
        match self.http.send(request, deadline).await {
            Ok(response) if response.status.is_success() => Ping::Sent,
            // The URL may carry the check's key: only the status is logged.
            Ok(response) => {
                tracing::warn!(status = %response.status, "the heartbeat service refused the ping");
                Ping::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ping the heartbeat service");
                Ping::Failed
            }
        }
    }
}
