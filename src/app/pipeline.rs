//! The decision and delivery side of `hubwatch run` — what every recorder decides with, the incident manager
//! and the notifier — wired in one place: by [`super::App`], and by the tests that drive it without a hub
//! (so a test exercises the daemon's wiring, not a copy of it).

use crate::clock::Clock;
use crate::config::Config;
use crate::diagnostics::collect::Collector;
use crate::health::Health;
use crate::http::HttpClient;
use crate::incident::IncidentManager;
use crate::incident::backlog::Backlog;
use crate::incident::holds::Rollouts;
use crate::incident::recorder::Context;
use crate::incident::report::ReportSettings;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::probe::on_demand::{Notes, OnDemand};
use crate::status::StatusBoard;
use crate::store::Store;
use crate::tasks::Tasks;
use crate::web::WebState;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The parts shared by every generation of probing and by the notifier (cheap to clone: all shared).
#[derive(Clone)]
pub struct Pipeline {
    pub store: Arc<Store>,
    pub http: HttpClient,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub board: Arc<StatusBoard>,
    pub tasks: Tasks,
    /// Wakes the notifier when an event is queued.
    pub wake: Arc<Notify>,
    /// Decisions the store could not take yet; outlives every recorder.
    pub backlog: Arc<Mutex<Backlog>>,
    /// Hub Deployments mid-rollout; outlives every recorder.
    pub rollouts: Arc<Rollouts>,
    /// The one clock every decision reads.
    pub clock: Clock,
    /// Checks on demand (`POST /api/v1/hubs/{hub}/check`), lent each generation's probers.
    pub on_demand: Arc<OnDemand>,
}

impl Pipeline {
    /// On `store`, with `health` judging it after `config.state.unhealthy_after`, on `clock`.
    pub fn new(config: &Config, store: Arc<Store>, http: HttpClient, clock: Clock) -> Pipeline {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(config.state.unhealthy_after));
        let wake = Arc::new(Notify::new());
        // Notes need PagerDuty's REST API.
        let rest = config.pagerduty.as_ref().is_some_and(|p| p.status_updates.is_some());
        let notes = rest.then(|| Notes { store: store.clone(), wake: wake.clone() });
        Pipeline {
            store,
            http,
            tasks: Tasks::new(metrics.clone(), health.clone()),
            metrics,
            health,
            board: Arc::new(StatusBoard::default()),
            wake,
            backlog: Arc::default(),
            rollouts: Arc::default(),
            clock,
            on_demand: Arc::new(OnDemand::new(notes)),
        }
    }

    /// The incident manager for `config`'s hubs; with `no_diagnostics`, none are collected and every page
    /// says why.
    pub fn manager(&self, config: &Arc<Config>, no_diagnostics: Option<&'static str>) -> IncidentManager {
        let manager = IncidentManager::new(self.store.clone(), config, self.wake.clone())
            .with_status_board(self.board.clone())
            .with_rollouts(self.rollouts.clone());
        match no_diagnostics {
            Some(why) => manager.without_diagnostics(why),
            None => manager,
        }
    }

    /// What a recorder of `config`'s hubs decides with; `collector` gathers the diagnostics.
    pub fn context(&self, config: &Config, collector: Option<Arc<Collector>>) -> Context {
        Context {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            board: self.board.clone(),
            health: self.health.clone(),
            backlog: self.backlog.clone(),
            tasks: self.tasks.clone(),
            collector,
            settings: config.incidents.detector(),
            ticket_after: config.incidents.ticket_after,
            clock: self.clock,
        }
    }

    /// What the pages read (`config` gives their public URL and the incident threshold).
    pub fn web_state(&self, config: &Config) -> WebState {
        WebState {
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            store: self.store.clone(),
            board: self.board.clone(),
            report: Arc::new(ReportSettings {
                public_url: config.public_url(),
                threshold: config.incidents.min_affected_users,
            }),
            clock: self.clock,
            on_demand: self.on_demand.clone(),
        }
    }

    /// The notifier of `config`'s PagerDuty, routes and webhook, on the pipeline's clock (the daemon also
    /// fences it when it leads with others).
    pub fn notifier(&self, config: Arc<Config>) -> Notifier {
        let pagerduty = config.pagerduty.clone();
        Notifier::new(self.store.clone(), self.http.clone(), pagerduty, self.metrics.clone(), self.wake.clone())
            .configured(config)
            .with_clock(self.clock)
    }
}
