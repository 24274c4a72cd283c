//! `hubwatch run`: serve the endpoints, clean up what a crashed earlier run left, then probe on schedule
//! until shut down; every outcome goes to the metrics and the log.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::probe::http::HttpClient;
use crate::probe::{HubProber, ProbeOutcome, ProbeResult};
use crate::scheduler::Scheduler;
use crate::web::{WebState, router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

pub fn build_probers(config: &Config, http: &HttpClient) -> Vec<Arc<HubProber>> {
    config
        .hubs
        .iter()
        .map(|hub| Arc::new(HubProber::new(Arc::new(hub.clone()), http.clone(), config.scheduler.cleanup_timeout)))
        .collect()
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let http = HttpClient::new()?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let probers = build_probers(&config, &http);
    for hub in &config.hubs {
        metrics.set_probe_users(&hub.name, hub.users.len());
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: config.listen, source })?;
    tracing::info!(listen = %config.listen, hubs = config.hubs.len(), "hubwatch started");
    let app = router(WebState { metrics: metrics.clone(), ready: ready.clone() });
    let web_shutdown = shutdown.clone();
    let web = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(web_shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "the HTTP endpoint failed");
        }
    });

    clean_up_leftovers(&probers, &shutdown).await;

    let (outcomes_tx, mut outcomes_rx) = mpsc::channel::<ProbeOutcome>(1024);
    let recorder_metrics = metrics.clone();
    let recorder = tokio::spawn(async move {
        while let Some(outcome) = outcomes_rx.recv().await {
            recorder_metrics.observe(&outcome);
            log_outcome(&outcome);
        }
    });

    let scheduler = Scheduler::new(&probers, config.scheduler.clone(), metrics.clone(), outcomes_tx);
    tracing::info!(lanes = scheduler.lane_count(), "probing");
    ready.store(true, Ordering::Release);
    scheduler.run(shutdown.clone()).await;

    // The scheduler dropped its sender; the recorder ends once the last outcome is recorded.
    let _ = recorder.await;
    shutdown.cancel();
    let _ = web.await;
    tracing::info!("hubwatch stopped");
    Ok(())
}

/// Stops probe servers and deletes probe clusters a crashed earlier run left behind, all users at once.
async fn clean_up_leftovers(probers: &[Arc<HubProber>], shutdown: &CancellationToken) {
    let mut cleanups = tokio::task::JoinSet::new();
    for prober in probers {
        for user in prober.hub.users.clone() {
            let prober = prober.clone();
            cleanups.spawn(async move {
                match prober.clean_up_leftovers(&user).await {
                    Ok(cleaned) if !cleaned.is_empty() => {
                        tracing::info!(hub = %prober.hub.name, user, cleaned = ?cleaned, "removed what an earlier run left behind")
                    }
                    Ok(_) => {}
                    Err(failure) => tracing::warn!(hub = %prober.hub.name, user, stage = %failure.stage, reason = %failure.reason, "start-up clean-up failed; the first round will try again"),
                }
            });
        }
    }
    tokio::select! {
        _ = async { while cleanups.join_next().await.is_some() {} } => {}
        _ = shutdown.cancelled() => cleanups.abort_all(),
    }
}

fn log_outcome(outcome: &ProbeOutcome) {
    let (hub, user, capability, seconds) =
        (&outcome.hub, &outcome.user, outcome.capability.as_str(), outcome.duration.as_secs_f64());
    match &outcome.result {
        ProbeResult::Ok => tracing::debug!(hub, user, capability, seconds, "probe ok"),
        ProbeResult::Blocked { by } => tracing::info!(hub, user, capability, blocked_by = by.as_str(), "probe blocked"),
        ProbeResult::Failed(f) => tracing::warn!(
            hub, user, capability, seconds, stage = f.stage.as_str(), cause = ?f.cause, reason = %f.reason,
            detail = f.detail.as_deref().unwrap_or(""), "probe failed"
        ),
    }
}
