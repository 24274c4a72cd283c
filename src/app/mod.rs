//! The composition root of `hubwatch run`: [`App::build`] wires everything from the config;
//! [`App::run_until`] starts every task under supervision ([`Tasks`]), follows the data flow — probes →
//! recorder (detector, incidents, store) → notifier (PagerDuty) — and on shutdown stops them in the order
//! that keeps the promise (probing and its drain, whose decisions are stored; then the notifier's last pass;
//! then the last mirror; then the lease) and joins them all.

use crate::clock::Clock;
use crate::config::Config;
use crate::config::TlsFiles;
use crate::diagnostics::collect::Collector;
use crate::domain::{HubName, HubNews, IncidentKind, ProbeOutcome, RealUsers};
use crate::ha::{Candidate, Fence, Handover};
use crate::http::HttpClient;
use crate::incident::recorder::{Inputs, Recorder};
use crate::probe::{self, HubProber};
use crate::redact::Redactor;
use crate::scheduler::Scheduler;
use crate::signals::follow::HubLogs;
use crate::signals::losses::StopRequests;
use crate::signals::{Watch, changes};
use crate::store::{Store, StoreError};
use crate::sync::lock;
use crate::tasks::{off_runtime, on_own_thread};
use crate::web::auth::Access;
use crate::web::origin::Served;
use crate::web::tls::TlsListener;
use crate::web::{metrics_router, router};
use discovery::Memory;
use pipeline::Pipeline;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often retention looks for closed incidents past `state.retention`, and how many it deletes per
/// transaction.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const RETENTION_BATCH: usize = 100;
mod discovery;
pub mod pipeline;

/// How long reconciling with PagerDuty may hold probing up at start.
const RECONCILE_LIMIT: Duration = Duration::from_secs(30);

/// How long tasks get to end after everything was told to stop.
const JOIN_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::web::tls::TlsError),
    #[error(transparent)]
    HttpClient(#[from] crate::http::ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("high_availability needs a Kubernetes client (in-cluster config or KUBECONFIG)")]
    HighAvailabilityWithoutKubernetes,
    #[error("lost the leader lease; exiting so that this replica restarts as a standby")]
    LostLeadership,
}

/// Everything `hubwatch run` is made of; built once.
pub struct App {
    config: Arc<Config>,
    /// The decision and delivery side: store, metrics, health, tasks, clock, …
    pipeline: Pipeline,
    kube: Option<kube::Client>,
    candidate: Option<Candidate>,
    fence: Fence,
    /// Bound at build time (a taken port fails at once); each start of the web task serves a copy.
    listener: std::net::TcpListener,
    metrics_listener: Option<std::net::TcpListener>,
    /// Who may read the pages.
    access: Arc<Access>,
    /// Shared with the log: everything taken from hubs and the cluster passes through it.
    redactor: Arc<Redactor>,
}

/// A replica that leads: the tasks that keep its lease and mirror its state, and what stops them.
struct Leading {
    lost: CancellationToken,
    handover: Arc<Handover>,
    stop_mirror: CancellationToken,
    mirror: JoinHandle<()>,
    stop_lease: CancellationToken,
    lease: JoinHandle<()>,
}

impl App {
    /// `redactor` already knows the config's secrets (the log writes through it from the start).
    pub async fn build(config: Config, redactor: Arc<Redactor>) -> Result<App, DaemonError> {
        let kube = kubernetes_client(&config).await;
        let candidate = match (&config.high_availability, &kube) {
            (Some(ha), Some(client)) => Some(Candidate::new(client.clone(), ha.clone())),
            (Some(_), None) => return Err(DaemonError::HighAvailabilityWithoutKubernetes),
            (None, _) => None,
        };
        if config.pagerduty.is_none() {
            tracing::warn!("no pagerduty section: a dry run, incidents are logged and shown but never sent");
        }
        let listener = bind(config.listen)?;
        let metrics_listener = config.metrics_listen.map(bind).transpose()?;
        if let Some(files) = &config.web.tls {
            crate::web::tls::load(files)?;
        }
        let access = Arc::new(Access::new(config.web.users(), config.web.trusted_proxies.clone()));
        if !access.required() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen, "the pages, with logs and user names, are served to anyone who can reach \
                this address: set web.basic_auth_users (or listen on loopback behind an authenticating proxy)");
        }
        let store = Arc::new(Store::open(&config.state_path)?);
        Ok(App {
            pipeline: Pipeline::new(&config, store, HttpClient::new()?, Clock::start()),
            fence: if candidate.is_some() { Fence::lease() } else { Fence::always() },
            config: Arc::new(config),
            kube,
            candidate,
            listener,
            metrics_listener,
            access,
            redactor,
        })
    }

    /// Runs until `shutdown` (or, with several replicas, until this one loses its lease).
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), DaemonError> {
        let web_stop = CancellationToken::new();
        let web = self.serve(web_stop.clone());
        let leading = match &self.candidate {
            Some(candidate) => match self.lead(candidate, &shutdown).await {
                Some(leading) => Some(leading),
                None => return self.finish(web_stop, web, false).await,
            },
            None => None,
        };
        // Everything that probes and pages stops on a shutdown or on a lost lease.
        let lost = leading.as_ref().map(|l| l.lost.clone()).unwrap_or_default();
        let work = shutdown.child_token();
        self.pipeline.tasks.spawn_once("stop-on-lost-lease", {
            let (lost, work) = (lost.clone(), work.clone());
            async move {
                tokio::select! {
                    _ = lost.cancelled() => work.cancel(),
                    _ = work.cancelled() => {}
                }
            }
        });
        // The notifier outlives probing: pages decided while the probes drain go out before the exit.
        let deliveries = CancellationToken::new();
        let notifier = self.deliver(leading.as_ref().map(|l| l.handover.clone()), deliveries.clone());
        self.pipeline.tasks.spawn_once("stop-deliveries-on-lost-lease", {
            let (lost, deliveries) = (lost.clone(), deliveries.clone());
            async move {
                tokio::select! {
                    _ = lost.cancelled() => deliveries.cancel(),
                    _ = deliveries.cancelled() => {}
                }
            }
        });
        self.reconcile().await;
        self.retain(work.clone());
        self.heartbeat(work.clone());
        self.read_responses(work.clone());
        self.probe(&work).await;
        // Probing is over and its last decisions stored: the last deliveries, the last mirror, the lease.
        work.cancel();
        deliveries.cancel();
        let _ = notifier.await;
        if let Some(leading) = leading {
            leading.stop_mirror.cancel();
            let _ = leading.mirror.await;
            leading.stop_lease.cancel();
            let _ = leading.lease.await;
            self.pipeline.metrics.set_leader(false);
        }
        self.finish(web_stop, web, lost.is_cancelled()).await
    }

    async fn finish(&self, web_stop: CancellationToken, web: JoinHandle<()>, lost: bool) -> Result<(), DaemonError> {
        web_stop.cancel();
        let _ = web.await;
        self.pipeline.tasks.join(JOIN_GRACE).await;
        tracing::info!("hubwatch stopped");
        if lost { Err(DaemonError::LostLeadership) } else { Ok(()) }
    }

    /// The HTTP endpoints, until `stop` (the last thing to go): the pages on `listen` (authenticated, over
    /// TLS when configured), and `/metrics`, `/healthz`, `/readyz` on `metrics_listen`.
    fn serve(&self, stop: CancellationToken) -> JoinHandle<()> {
        let state = self.pipeline.web_state(&self.config);
        if let Some(listener) = &self.metrics_listener {
            let (app, listener, stop) = (metrics_router(state.clone()), listener.try_clone(), stop.clone());
            self.pipeline
                .tasks
                .supervise("metrics_web", move || serve_on(copy(&listener), None, app.clone(), stop.clone()));
        }
        let served = Arc::new(Served::new(self.config.public_url.as_ref(), &self.config.web.hosts));
        let (app, listener, tls) =
            (router(state, self.access.clone(), served), self.listener.try_clone(), self.config.web.tls.clone());
        self.pipeline.tasks.supervise("web", move || serve_on(copy(&listener), tls.clone(), app.clone(), stop.clone()))
    }

    /// Stands by until this replica leads (`None`: shutdown came first), then takes over the state and
    /// starts keeping the lease and mirroring.
    async fn lead(&self, candidate: &Candidate, shutdown: &CancellationToken) -> Option<Leading> {
        // A standby is ready: it serves the pages (a copy of the leader's state); false would stall rollouts.
        // It stays a standby (refusing writes) until the takeover is done: a write the restore overwrote
        // would be lost.
        self.pipeline.health.set_started(true);
        self.pipeline.health.set_standing_by(true);
        let (term, elector) = loop {
            let (mut elector, _) =
                candidate.stand_by(&self.pipeline.store, &self.fence, &self.pipeline.metrics, shutdown).await?;
            match candidate.take_over(&mut elector, &self.pipeline.store, &self.fence, &self.pipeline.metrics).await {
                Ok(term) => break (term, elector),
                // Said why in the log; another replica (or this one, later) takes over.
                Err(_) => tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                },
            }
        };
        tracing::warn!(identity = candidate.identity(), term, "this replica leads now");
        self.pipeline.health.set_started(false);
        self.pipeline.health.set_standing_by(false);
        self.pipeline.metrics.set_leader(true);
        let (lost, stop_mirror, stop_lease) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        // The takeover's elector renews with one call; a restarted keeper makes a new one.
        let elector = Arc::new(Mutex::new(Some(elector)));
        let lease = self.pipeline.tasks.supervise("lease", {
            let (candidate, fence, lost, stop) =
                (candidate.clone(), self.fence.clone(), lost.clone(), stop_lease.clone());
            move || {
                let (candidate, fence, lost, stop) = (candidate.clone(), fence.clone(), lost.clone(), stop.clone());
                let elector = lock(&elector).take();
                async move { candidate.keep(term, elector, fence, lost, stop).await }
            }
        });
        let handover = Arc::new(candidate.handover(
            self.pipeline.store.clone(),
            self.fence.clone(),
            self.pipeline.metrics.clone(),
            lost.clone(),
        ));
        let mirror = self.pipeline.tasks.supervise("mirror", {
            let (handover, lost, stop) = (handover.clone(), lost.clone(), stop_mirror.clone());
            move || Candidate::mirror_state(handover.clone(), lost.clone(), stop.clone())
        });
        Some(Leading { lost, handover, stop_mirror, mirror, stop_lease, lease })
    }

    /// The notifier, until `stop` (then one last pass, fenced and handed over like every other).
    fn deliver(&self, handover: Option<Arc<Handover>>, stop: CancellationToken) -> JoinHandle<()> {
        let fence = self.fence.clone();
        let identity = self.candidate.as_ref().map(|c| c.identity().to_string()).unwrap_or_default();
        let (pipeline, config) = (self.pipeline.clone(), self.config.clone());
        self.pipeline.tasks.supervise("notifier", move || {
            let notifier = pipeline.notifier(config.clone()).fenced(fence.clone(), handover.clone(), &identity);
            on_own_thread(notifier.run(stop.clone()))
        })
    }

    /// Before probing starts, with PagerDuty's REST API configured: adopts the open PagerDuty incidents this
    /// state does not know (see [`crate::incident::reconcile`]). Bounded: it never holds probing up for long.
    async fn reconcile(&self) {
        let Some(settings) = self.config.pagerduty.as_ref().and_then(|p| p.status_updates.clone()) else { return };
        let owners = crate::incident::reconcile::KeyOwners::of(&self.config);
        let reconciling = crate::incident::reconcile::reconcile(
            &self.pipeline.store,
            &self.pipeline.http,
            &settings,
            &owners,
            self.pipeline.clock,
        );
        match tokio::time::timeout(RECONCILE_LIMIT, reconciling).await {
            Ok(Ok(done)) if done.is_empty() => tracing::info!("PagerDuty's open incidents match the state"),
            Ok(Ok(done)) => {
                tracing::warn!(?done, "reconciled with PagerDuty's open incidents");
                self.pipeline.wake.notify_one();
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot reconcile with PagerDuty's open incidents; going on"),
            Err(_) => tracing::error!("reconciling with PagerDuty took too long; going on without it"),
        }
    }

    /// The dead-man's switch, pinged while this replica leads (this runs only then) and is healthy.
    fn heartbeat(&self, stop: CancellationToken) {
        let Some(config) = self.config.heartbeat.clone() else { return };
        let pipeline = self.pipeline.clone();
        self.pipeline.tasks.supervise("heartbeat", move || {
            let heartbeat = crate::notify::heartbeat::Heartbeat {
                config: config.clone(),
                http: pipeline.http.clone(),
                health: pipeline.health.clone(),
                store: pipeline.store.clone(),
                metrics: pipeline.metrics.clone(),
            };
            heartbeat.run(stop.clone())
        });
    }

    /// With a REST token, what responders do in PagerDuty is read back while this replica leads.
    fn read_responses(&self, stop: CancellationToken) {
        let Some(settings) = self.config.pagerduty.as_ref().and_then(|p| p.status_updates.clone()) else { return };
        let pipeline = self.pipeline.clone();
        self.pipeline.tasks.supervise("responses", move || {
            let reader = crate::incident::responses::ResponseReader {
                store: pipeline.store.clone(),
                http: pipeline.http.clone(),
                settings: settings.clone(),
                clock: pipeline.clock,
                call_timeout: crate::incident::responses::CALL_TIMEOUT,
            };
            reader.run(stop.clone())
        });
    }

    /// Retention: every hour, closed incidents past `state.retention` go, in small batches.
    fn retain(&self, stop: CancellationToken) {
        let (store, metrics, retention, clock) = (
            self.pipeline.store.clone(),
            self.pipeline.metrics.clone(),
            self.config.state.retention,
            self.pipeline.clock,
        );
        self.pipeline.tasks.supervise("retention", move || {
            let (store, metrics, stop) = (store.clone(), metrics.clone(), stop.clone());
            async move {
                loop {
                    let before = clock.now().checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
                    loop {
                        let batch = store.clone();
                        match off_runtime(move || batch.prune(before, RETENTION_BATCH)).await {
                            Ok(0) => break,
                            Ok(rows) => metrics.count_pruned(rows),
                            Err(e) => {
                                tracing::warn!(error = %e, "retention: cannot delete old incidents; next hour");
                                break;
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RETENTION_EVERY) => {}
                    }
                }
            }
        });
    }

    /// One generation of probing `config`'s hubs until `stop`: start-up clean-up, the watches, the recorder
    /// and the scheduler; returns when the scheduler's rounds are done and the recorder stored the last
    /// of their outcomes.
    async fn generation(&self, config: &Arc<Config>, stop: &CancellationToken, memory: Option<&Arc<Mutex<Memory>>>) {
        self.pipeline.board.set_hubs(&config.hubs);
        for hub in &config.hubs {
            self.pipeline.metrics.set_probe_users(&hub.name, hub.probe_users().count());
        }
        // Discovered hubs bring tokens the config did not have.
        self.redactor.learn(config.secrets());
        let probers = probe::probers(config, &self.pipeline.http, &self.redactor);
        let (shared, metrics, until) = (config.clone(), self.pipeline.metrics.clone(), stop.clone());
        self.pipeline.tasks.supervise("certificates", move || {
            crate::signals::certificates::watch(shared.clone(), metrics.clone(), until.clone())
        });
        tracing::info!(listen = %config.listen, hubs = config.hubs.len(), "hubwatch started");
        clean_up_leftovers(&probers, config.scheduler.max_concurrent_probes, stop).await;

        let (outcomes_tx, outcomes) = mpsc::channel::<ProbeOutcome>(1024);
        let (real_users_tx, real_users) = mpsc::channel::<RealUsers>(64);
        let (changes_tx, changes) = mpsc::channel::<HubNews>(64);
        if let Some(memory) = memory {
            self.report_gone_hubs(memory.clone(), real_users_tx.clone(), stop.clone());
        }
        for peer in &config.peers {
            let (peer, http, metrics) = (peer.clone(), self.pipeline.http.clone(), self.pipeline.metrics.clone());
            let (users, stop) = (real_users_tx.clone(), stop.clone());
            self.pipeline.tasks.supervise("peer_watch", move || {
                let (peer, http, metrics) = (peer.clone(), http.clone(), metrics.clone());
                crate::signals::peers::watch(peer, http, metrics, users.clone(), stop.clone())
            });
        }
        self.watch(config, real_users_tx, changes_tx, stop);
        let recorder = self.record(config, Inputs { outcomes, real_users, changes });
        self.pipeline.on_demand.probing(probers.clone(), outcomes_tx.clone(), stop.clone());
        let lanes = probe::lanes(&probers);
        let scheduler = Scheduler::new(lanes, config.scheduler.clone(), self.pipeline.metrics.clone(), outcomes_tx);
        tracing::info!(lanes = scheduler.lane_count(), "probing");
        self.pipeline.health.set_started(true);
        scheduler.run(stop.clone()).await;
        // Its outcomes sender goes too: the recorder ends once every sender has.
        self.pipeline.on_demand.stopped();
        stop_kept_servers(&probers).await;
        // The scheduler dropped its sender; the recorder ends once the last outcome is recorded.
        let _ = recorder.await;
    }

    /// Per hub with a namespace: its user pods (real users affected) and its Deployment (changes).
    fn watch(
        &self,
        config: &Config,
        real_users: mpsc::Sender<RealUsers>,
        hub_changes: mpsc::Sender<HubNews>,
        stop: &CancellationToken,
    ) {
        let Some(client) = &self.kube else { return };
        for hub in &config.hubs {
            let Some(namespace) = hub.namespace.clone() else { continue };
            let stops = Arc::new(StopRequests::default());
            let watch = Watch {
                client: client.clone(),
                hub: hub.name.clone(),
                namespace: namespace.clone(),
                pending_after: config.kubernetes.pending_after,
                call_timeout: config.kubernetes.call_timeout,
                redactor: self.redactor.clone(),
                lost_for: config.incidents.window,
                stops: stops.clone(),
                loss_grace: crate::signals::losses::GRACE,
                own_users: {
                    let hub = hub.clone();
                    Arc::new(move |user: &str| hub.stops_own_servers(user))
                },
            };
            let (dask, users, stop_pods) = (hub.dask_gateway.is_some(), real_users.clone(), stop.clone());
            self.pipeline
                .tasks
                .supervise("pod_watch", move || watch.clone().run(dask, users.clone(), stop_pods.clone()));
            let logs = HubLogs {
                client: client.clone(),
                hub: hub.name.clone(),
                namespace: namespace.clone(),
                prefix: hub.url.path().to_string(),
                probe_users: hub.probe_users().map(String::from).collect(),
                window: config.incidents.window,
                call_timeout: config.kubernetes.call_timeout,
                redactor: self.redactor.clone(),
                metrics: self.pipeline.metrics.clone(),
                board: self.pipeline.board.clone(),
                stops,
            };
            let (users, stop_logs) = (real_users.clone(), stop.clone());
            self.pipeline.tasks.supervise("hub_logs", move || logs.clone().run(users.clone(), stop_logs.clone()));
            let (client, name, sender, stop) = (client.clone(), hub.name.clone(), hub_changes.clone(), stop.clone());
            let redactor = self.redactor.clone();
            self.pipeline.tasks.supervise("change_watch", move || {
                let (client, name, namespace) = (client.clone(), name.clone(), namespace.clone());
                changes::watch(client, name, namespace, sender.clone(), stop.clone(), redactor.clone())
            });
        }
    }

    /// The recorder of this generation, restarted (resuming from the store and the backlog) if it panics.
    fn record(&self, config: &Arc<Config>, inputs: Inputs) -> JoinHandle<()> {
        let inputs = Arc::new(tokio::sync::Mutex::new(inputs));
        let no_client = config.kubernetes.enabled && self.kube.is_none();
        let no_diagnostics = no_client.then_some("not collected: hubwatch has no Kubernetes client (see its log)");
        let collector =
            self.kube.as_ref().map(|client| Arc::new(Collector::new(client.clone(), config, self.redactor.clone())));
        let context = self.pipeline.context(config, collector);
        let (pipeline, config_of_generation) = (self.pipeline.clone(), config.clone());
        let manager_for = move || pipeline.manager(&config_of_generation, no_diagnostics);
        let hubs: Vec<(HubName, Vec<IncidentKind>)> = config.hubs.iter().map(|h| (h.name.clone(), h.kinds())).collect();
        self.pipeline.tasks.supervise("recorder", move || {
            let (inputs, context, hubs, manager) = (inputs.clone(), context.clone(), hubs.clone(), manager_for());
            // SQLite on every decision: on a thread of its own (see tasks::on_own_thread).
            on_own_thread(async move {
                let mut inputs = inputs.lock().await;
                Recorder::start(manager, hubs, context).await.run(&mut inputs).await;
            })
        })
    }
}

/// Binds `addr` now (a taken port is an error at start, not later).
fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    let listen = |source| DaemonError::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    Ok(listener)
}

/// A listener the runtime can use, from (a copy of) the one bound at start.
fn copy(listener: &std::io::Result<std::net::TcpListener>) -> std::io::Result<tokio::net::TcpListener> {
    match listener {
        Ok(listener) => listener.try_clone().and_then(tokio::net::TcpListener::from_std),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop`.
async fn serve_on(
    listener: std::io::Result<tokio::net::TcpListener>,
    tls: Option<TlsFiles>,
    app: axum::Router,
    stop: CancellationToken,
) {
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match (listener, tls) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(listener), None) => {
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await.map_err(|e| e.to_string())
        }
        (Ok(listener), Some(files)) => match TlsListener::new(listener, files) {
            // tap_io: how axum hands a custom listener's peer address to ConnectInfo.
            Ok(listener) => axum::serve(axum::serve::ListenerExt::tap_io(listener, |_| {}), app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP endpoint failed");
    }
}

async fn kubernetes_client(config: &Config) -> Option<kube::Client> {
    if !config.kubernetes.enabled {
        return None;
    }
    match kube::Client::try_default().await {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes client (in-cluster config or KUBECONFIG): no diagnostics, no pod signals, no discovery");
            None
        }
    }
}

/// When probing ends (shutdown, or a new generation of hubs): every kept server is stopped, each within the
/// clean-up timeout. (At start-up, the clean-up of leftovers stops one a crashed run kept, or one whose hub
/// no longer asks for it.)
async fn stop_kept_servers(probers: &[Arc<HubProber>]) {
    let mut stops = tokio::task::JoinSet::new();
    for prober in probers {
        let Some(user) = prober.hub.sentinel_user().map(String::from) else { continue };
        let prober = prober.clone();
        stops.spawn(async move {
            match prober.stop_kept_server(&user).await {
                Ok(()) => tracing::info!(hub = %prober.hub.name, user, "the kept server was stopped"),
                Err(failure) => tracing::warn!(hub = %prober.hub.name, user, reason = %failure.reason,
                    "could not stop the kept server; the next start stops it"),
            }
        });
    }
    while stops.join_next().await.is_some() {}
}

/// Stops probe servers and deletes probe clusters a crashed earlier run left behind, at most `concurrency`
/// users at a time (like the probes themselves).
async fn clean_up_leftovers(probers: &[Arc<HubProber>], concurrency: usize, shutdown: &CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut cleanups = tokio::task::JoinSet::new();
    for prober in probers {
        for user in prober.hub.probe_users().map(String::from).collect::<Vec<_>>() {
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
