//! `hubwatch run`: serve the endpoints, clean up what a crashed earlier run left, then probe on schedule
//! until shut down; every outcome goes to the metrics and the log.

use crate::config::{Config, HubConfig};
use crate::detector::{Detector, DetectorSettings};
use crate::diagnostics::collect::Collector;
use crate::discovery;
use crate::domain::{IncidentKind, Transition};
use crate::domain::{ProbeOutcome, ProbeResult};
use crate::ha::{self, Leadership};
use crate::http::HttpClient;
use crate::incident::report::ReportSettings;
use crate::incident::{DiagnosticsWanted, IncidentManager};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::probe::HubProber;
use crate::scheduler::Scheduler;
use crate::signals::{SignalUpdate, Watch, changes};
use crate::status::StatusBoard;
use crate::store::{Store, StoreError};
use crate::web::{WebState, router};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How often failures are aged out of the window and held-back updates are sent.
const TICK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("high_availability needs a Kubernetes client (in-cluster config or KUBECONFIG)")]
    HighAvailabilityWithoutKubernetes,
    #[error("lost the leader lease; exiting so that this replica restarts as a standby")]
    LostLeadership,
}

/// What lives as long as the daemon: the HTTP client, metrics, the status board, the store and the
/// notifier's wake-up, the Kubernetes client, and the readiness flag.
struct Shared {
    http: HttpClient,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    store: Arc<Store>,
    wake: Arc<Notify>,
    kube: Option<kube::Client>,
    ready: Arc<AtomicBool>,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let kube = if config.kubernetes.enabled {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes client (in-cluster config or KUBECONFIG): no diagnostics, no pod signals, no discovery");
                None
            }
        }
    } else {
        None
    };
    let shared = Shared {
        http: HttpClient::new()?,
        metrics: Arc::new(Metrics::new()),
        board: Arc::new(StatusBoard::default()),
        store: Arc::new(Store::open(&config.state_path)?),
        wake: Arc::new(Notify::new()),
        kube,
        ready: Arc::new(AtomicBool::new(false)),
    };
    if config.pagerduty.is_none() {
        tracing::warn!("no pagerduty section: a dry run, incidents are logged and shown but never sent");
    }
    let leadership = match (&config.high_availability, &shared.kube) {
        (Some(ha), Some(client)) => Some(Arc::new(Leadership::new(client.clone(), ha.clone()))),
        (Some(_), None) => return Err(DaemonError::HighAvailabilityWithoutKubernetes),
        (None, _) => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: config.listen, source })?;
    let app = router(WebState {
        metrics: shared.metrics.clone(),
        ready: shared.ready.clone(),
        store: shared.store.clone(),
        board: shared.board.clone(),
        report: Arc::new(ReportSettings {
            public_url: config.public_url.clone(),
            threshold: config.incidents.min_affected_users,
        }),
    });
    let web_shutdown = shutdown.clone();
    let web = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(web_shutdown.cancelled_owned()).await {
            tracing::error!(error = %e, "the HTTP endpoint failed");
        }
    });

    // With several replicas only the leader goes on (standbys wait here, serving their endpoints).
    let mut leading = None;
    if let Some(leadership) = leadership {
        match ha::lead(leadership, shared.store.clone(), &shared.ready, &shutdown).await {
            Some(lead) => leading = Some(lead),
            None => {
                let _ = web.await;
                return Ok(());
            }
        }
    }
    let notifier = Notifier::new(
        shared.store.clone(),
        shared.http.clone(),
        config.pagerduty.clone(),
        shared.metrics.clone(),
        shared.wake.clone(),
    );
    let notifier = tokio::spawn(notifier.run(shutdown.clone()));

    // With discovery, the hubs probed are the configured ones plus those found in the cluster; when the
    // found ones change, the probing stops gracefully (rounds clean up) and starts again with the new set.
    let discovery = config.kubernetes.discovery.clone().zip(shared.kube.clone());
    let mut found = match &discovery {
        Some((settings, client)) => discover_or_log(client, settings, &config).await.unwrap_or_default(),
        None => Vec::new(),
    };
    loop {
        let hubs = config.hubs.iter().cloned().chain(found.iter().cloned()).collect();
        let generation = Config { hubs, ..config.clone() };
        let stop = shutdown.child_token();
        let rediscovery = discovery.clone().map(|(settings, client)| {
            let (config, found, stop) = (config.clone(), found.clone(), stop.clone());
            tokio::spawn(async move { rediscover(&client, &settings, &config, &found, &stop).await })
        });
        probe(&generation, &shared, &stop).await?;
        stop.cancel();
        let changed = match rediscovery {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        match changed {
            Some(now_found) if !shutdown.is_cancelled() => {
                tracing::info!(hubs = ?now_found.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), "the cluster's hubs changed: probing the new set");
                found = now_found;
            }
            _ => break,
        }
    }

    shutdown.cancel();
    let _ = notifier.await;
    let lost = match leading {
        Some(lead) => lead.step_down().await,
        None => false,
    };
    let _ = web.await;
    tracing::info!("hubwatch stopped");
    if lost {
        return Err(DaemonError::LostLeadership);
    }
    Ok(())
}

async fn discover_or_log(
    client: &kube::Client,
    settings: &crate::config::DiscoveryConfig,
    config: &Config,
) -> Option<Vec<HubConfig>> {
    match discovery::discover(client, settings, &config.hubs, config.kubernetes.call_timeout).await {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(error = %e, "hub discovery failed; the hubs known so far stay watched");
            None
        }
    }
}

/// Looks again every `settings.every`; when the hubs found differ from `found`, stops the current probing
/// (`stop`) and returns the new list. Returns `None` when `stop` is cancelled for another reason.
async fn rediscover(
    client: &kube::Client,
    settings: &crate::config::DiscoveryConfig,
    config: &Config,
    found: &[HubConfig],
    stop: &CancellationToken,
) -> Option<Vec<HubConfig>> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(settings.every) => {}
        }
        if let Some(now_found) = discover_or_log(client, settings, config).await
            && !discovery::same_hubs(found, &now_found)
        {
            stop.cancel();
            return Some(now_found);
        }
    }
}

/// Probes `config`'s hubs until `stop`: incidents, diagnostics, signals and change events included.
async fn probe(config: &Config, shared: &Shared, stop: &CancellationToken) -> Result<(), DaemonError> {
    shared.board.set_hubs(&config.hubs);
    let mut manager =
        IncidentManager::new(shared.store.clone(), config, shared.wake.clone()).with_status_board(shared.board.clone());
    if config.kubernetes.enabled && shared.kube.is_none() {
        manager = manager.without_diagnostics("not collected: hubwatch has no Kubernetes client (see its log)");
    }
    let kube = &shared.kube;
    let collector = kube.as_ref().map(|client| Arc::new(Collector::new(client.clone(), config)));
    let mut detector = Detector::new(DetectorSettings {
        min_affected_users: config.incidents.min_affected_users,
        window: config.incidents.window,
        recovery_successes: config.incidents.recovery_successes,
    });
    let resumed = manager.resume(&mut detector, SystemTime::now())?;
    let probers = crate::probe::probers(config, &shared.http);
    for hub in &config.hubs {
        shared.metrics.set_probe_users(&hub.name, hub.users.len());
    }
    tracing::info!(listen = %config.listen, hubs = config.hubs.len(), resumed_incidents = resumed, "hubwatch started");

    clean_up_leftovers(&probers, config.scheduler.max_concurrent_probes, stop).await;

    let (outcomes_tx, outcomes_rx) = mpsc::channel::<ProbeOutcome>(1024);
    let (signals_tx, signals_rx) = mpsc::channel::<SignalUpdate>(64);
    let manager = Arc::new(manager);
    if let Some(client) = kube {
        for hub in &config.hubs {
            let Some(namespace) = hub.namespace.clone() else { continue };
            let watch = Watch {
                client: client.clone(),
                hub: hub.name.clone(),
                namespace: namespace.clone(),
                pending_after: config.kubernetes.pending_after,
                call_timeout: config.kubernetes.call_timeout,
            };
            tokio::spawn(watch.run(hub.dask_gateway.is_some(), signals_tx.clone(), stop.clone()));
            let changes = changes::watch(client.clone(), hub.name.clone(), namespace, manager.clone(), stop.clone());
            tokio::spawn(changes);
        }
    }
    drop(signals_tx);
    let hubs: Vec<String> = config.hubs.iter().map(|h| h.name.clone()).collect();
    let incidents = Incidents { manager, collector };
    let inputs = Inputs { outcomes: outcomes_rx, signals: signals_rx };
    let observers = Observers { metrics: shared.metrics.clone(), board: shared.board.clone(), last: HashMap::new() };
    let recorder = tokio::spawn(record(inputs, detector, incidents, observers, hubs));
    let scheduler = Scheduler::new(&probers, config.scheduler.clone(), shared.metrics.clone(), outcomes_tx);
    tracing::info!(lanes = scheduler.lane_count(), "probing");
    shared.ready.store(true, Ordering::Release);
    scheduler.run(stop.clone()).await;

    // The scheduler dropped its sender; the recorder ends once the last outcome is recorded.
    let _ = recorder.await;
    Ok(())
}

/// Stops probe servers and deletes probe clusters a crashed earlier run left behind, at most `concurrency`
/// users at a time (like the probes themselves).
async fn clean_up_leftovers(probers: &[Arc<HubProber>], concurrency: usize, shutdown: &CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut cleanups = tokio::task::JoinSet::new();
    for prober in probers {
        for user in prober.hub.users.clone() {
            let prober = prober.clone();
            let permits = permits.clone();
            cleanups.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else { return };
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

/// What the detector hears: probe outcomes and real-user signals.
struct Inputs {
    outcomes: mpsc::Receiver<ProbeOutcome>,
    signals: mpsc::Receiver<SignalUpdate>,
}

/// The one owner of the detector: every outcome goes to the metrics, the log and the detector, whose
/// transitions the incident manager stores and queues for PagerDuty; so does every change of the real users
/// affected. Runs until the scheduler is gone.
async fn record(
    mut inputs: Inputs,
    mut detector: Detector,
    incidents: Incidents,
    mut observers: Observers,
    hubs: Vec<String>,
) {
    let mut tick = tokio::time::interval(TICK);
    for hub in &hubs {
        for kind in IncidentKind::ALL {
            observers.set(&detector, hub, kind, 0);
        }
    }
    loop {
        tokio::select! {
            Some(update) = inputs.signals.recv() => {
                let now = SystemTime::now();
                if !update.users.is_empty() {
                    let users: Vec<&String> = update.users.keys().collect();
                    tracing::info!(hub = %update.hub, capability = update.capability.as_str(), ?users, "real users affected (Kubernetes)");
                }
                incidents.handle_all(&detector.signals(&update.hub, update.capability, update.users, now));
                observers.refresh(&detector, &update.hub, IncidentKind::of(update.capability), now);
            }
            outcome = inputs.outcomes.recv() => {
                let Some(outcome) = outcome else { break };
                observers.metrics.observe(&outcome);
                observers.board.record(&outcome);
                log_outcome(&outcome);
                let now = SystemTime::now();
                incidents.handle_all(&detector.observe(&outcome, now));
                // Only this hub and kind can have changed.
                observers.refresh(&detector, &outcome.hub, IncidentKind::of(outcome.capability), now);
            }
            _ = tick.tick() => {
                let now = SystemTime::now();
                match incidents.manager.flush_pending_updates(now) {
                    Ok(wanted) => wanted.into_iter().for_each(|w| incidents.collect(w)),
                    Err(e) => tracing::error!(error = %e, "cannot send held-back incident updates"),
                }
                if let Err(e) = incidents.manager.queue_status_updates(now) {
                    tracing::error!(error = %e, "cannot queue status notes");
                }
                incidents.handle_all(&detector.tick(now));
                // Failures age out of the window with time alone: every hub and kind is looked at.
                for hub in &hubs {
                    for kind in IncidentKind::ALL {
                        observers.refresh(&detector, hub, kind, now);
                    }
                }
            }
        }
    }
}

/// The incident manager and, when Kubernetes is on, the diagnostics its triggers wait for.
struct Incidents {
    manager: Arc<IncidentManager>,
    collector: Option<Arc<Collector>>,
}

impl Incidents {
    fn handle_all(&self, transitions: &[Transition]) {
        for transition in transitions {
            match self.manager.handle(transition) {
                Ok(Some(wanted)) => self.collect(wanted),
                Ok(None) => {}
                // The detector keeps its state; the next transition (or a restart's resume) catches up.
                Err(e) => tracing::error!(error = %e, ?transition, "cannot record an incident change"),
            }
        }
    }

    /// Collects in the background: the trigger goes out when they arrive or when its wait is over,
    /// whichever comes first; diagnostics that come later follow in an update.
    fn collect(&self, wanted: DiagnosticsWanted) {
        let Some(collector) = self.collector.clone() else { return };
        let manager = self.manager.clone();
        tokio::spawn(async move {
            let diagnostics = collector.collect(&wanted.hub, wanted.kind, wanted.users).await;
            if let Err(e) = manager.attach_diagnostics(&wanted.key, &diagnostics, SystemTime::now()) {
                tracing::error!(error = %e, key = %wanted.key, "cannot store diagnostics");
            }
        });
    }
}

/// What observes outcomes and never decides: the metrics (the affected-users gauges written only when what
/// they show changes, as the hot path sees thousands of outcomes a second), the status board, and a log line
/// when a support ticket (1..N-1 users) changes.
struct Observers {
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    /// Per hub and kind: affected users and whether an incident is open, as last written.
    last: HashMap<(String, IncidentKind), (usize, bool)>,
}

impl Observers {
    fn set(&mut self, detector: &Detector, hub: &str, kind: IncidentKind, users: usize) -> Option<(usize, bool)> {
        let now = (users, detector.is_open(hub, kind));
        let previous = self.last.insert((hub.to_string(), kind), now);
        if previous != Some(now) {
            self.metrics.set_affected(hub, kind.as_str(), now.0, now.1);
        }
        previous
    }

    fn refresh(&mut self, detector: &Detector, hub: &str, kind: IncidentKind, now: SystemTime) {
        let symptoms = detector.symptoms(hub, kind, now);
        let users = symptoms.users();
        let previous = self.set(detector, hub, kind, users.len()).map_or(0, |p| p.0);
        let open = detector.is_open(hub, kind);
        self.board.set_affected(hub, kind.capabilities(), &symptoms, open);
        if !open && !users.is_empty() && users.len() != previous {
            let users: Vec<&str> = users.into_iter().collect();
            tracing::info!(
                hub,
                kind = kind.as_str(),
                ?users,
                "support ticket: users affected, below the incident threshold"
            );
        }
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
