//! What probing finds: capabilities, stages, and the outcome of one attempt.

use super::HubName;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Login,
    Server,
    Kernel,
    /// Saving to the home directory (write, read back, delete a small file through the server).
    Home,
    DaskGateway,
    /// Launching a repository through the hub's BinderHub (build or cached image, then a server).
    Binder,
    /// A brand-new user gets started: created, logged in, a server, saving home (a support ticket at most).
    FirstLogin,
    /// Another hubwatch instance answers `/healthz` (`peers`): the watcher watched.
    Monitor,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Login,
        Capability::Server,
        Capability::Kernel,
        Capability::Home,
        Capability::DaskGateway,
        Capability::Binder,
        Capability::FirstLogin,
        Capability::Monitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Login => "login",
            Capability::Server => "server",
            Capability::Kernel => "kernel",
            Capability::Home => "home",
            Capability::DaskGateway => "dask_gateway",
            Capability::Binder => "binder",
            Capability::FirstLogin => "first_login",
            Capability::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of a probe, named as in the table `hubwatch check` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    // login
    MintToken,
    LoginPage,
    LoginSubmit,
    WhoAmI,
    OAuthLogin,
    Authorize,
    // server
    StopLeftover,
    RequestSpawn,
    Progress,
    StopServer,
    /// The kept server: reading its state, then reaching it through the hub's public URL.
    KeptServer,
    Route,
    // kernel
    StartKernel,
    Connect,
    Execute,
    DeleteKernel,
    // home
    WriteFile,
    ReadFile,
    DeleteFile,
    // dask gateway
    DeleteLeftoverClusters,
    CreateCluster,
    WaitRunning,
    Scale,
    WaitWorker,
    DeleteCluster,
    /// From inside a user server: a kernel creates a cluster through the gateway, connects to its scheduler,
    /// computes, and shuts it down.
    ConnectFromServer,
    // binder: BinderHub's health, then its build stream's phases, then the launched server
    BinderHealth,
    /// `waiting`, `fetching`: the repository and ref resolved.
    Resolve,
    Build,
    Push,
    /// `built`, `launching`: a server started for the image.
    Launch,
    /// `ready`: the launched server answers with the returned token.
    Ready,
    StopBinder,
    // first login: a user made for the check, and deleted after it
    CreateUser,
    DeleteUser,
    // real users (Kubernetes signals, not a probe step)
    /// A real user's pod is stuck or crashing.
    UserPod,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::MintToken => "mint_token",
            Stage::LoginPage => "login_page",
            Stage::LoginSubmit => "login_submit",
            Stage::WhoAmI => "whoami",
            Stage::OAuthLogin => "oauth_login",
            Stage::Authorize => "authorize",
            Stage::StopLeftover => "stop_leftover",
            Stage::RequestSpawn => "request_spawn",
            Stage::Progress => "progress",
            Stage::StopServer => "stop_server",
            Stage::KeptServer => "kept_server",
            Stage::Route => "route",
            Stage::StartKernel => "start_kernel",
            Stage::Connect => "connect",
            Stage::Execute => "execute",
            Stage::DeleteKernel => "delete_kernel",
            Stage::WriteFile => "write_file",
            Stage::ReadFile => "read_file",
            Stage::DeleteFile => "delete_file",
            Stage::DeleteLeftoverClusters => "delete_leftover_clusters",
            Stage::CreateCluster => "create_cluster",
            Stage::WaitRunning => "wait_running",
            Stage::Scale => "scale",
            Stage::WaitWorker => "wait_worker",
            Stage::DeleteCluster => "delete_cluster",
            Stage::ConnectFromServer => "connect_from_server",
            Stage::BinderHealth => "binder_health",
            Stage::Resolve => "resolve",
            Stage::Build => "build",
            Stage::Push => "push",
            Stage::Launch => "launch",
            Stage::Ready => "ready",
            Stage::StopBinder => "stop_binder",
            Stage::CreateUser => "create_user",
            Stage::DeleteUser => "delete_user",
            Stage::UserPod => "user_pod",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The buckets (seconds) server start times are counted in, by the metrics and the status page alike: from
/// a warm start to the 10 minute probe timeout.
pub const SERVER_START_BUCKETS: [f64; 15] =
    [5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0];

/// Who is at fault when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The hub (or something behind it) failed: users are affected.
    Hub,
    /// hubwatch's own setup is wrong (token refused, probe user missing, scopes missing): fix the monitor.
    Monitor,
}

/// Why a step failed. `reason` is short and safe to show anywhere (no secrets, no response bodies);
/// `detail` adds context such as the last progress messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub stage: Stage,
    pub reason: String,
    pub detail: Option<String>,
    pub cause: FailureCause,
}

impl StepFailure {
    pub fn hub(stage: Stage, reason: impl Into<String>) -> Self {
        StepFailure { stage, reason: reason.into(), detail: None, cause: FailureCause::Hub }
    }

    pub fn monitor(stage: Stage, reason: impl Into<String>) -> Self {
        StepFailure { stage, reason: reason.into(), detail: None, cause: FailureCause::Monitor }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Why a probe that worked counts as slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slowness {
    /// The server took `took` to start, longer than `limit` (`probes.server.slow_after`).
    Start { took: Duration, limit: Duration },
    /// BinderHub launched the server only after `failed` launch attempts had failed; `last` is its word.
    Retried { failed: u32, last: String },
}

impl Slowness {
    /// Where the time went.
    pub fn stage(&self) -> Stage {
        match self {
            Slowness::Start { .. } => Stage::Progress,
            Slowness::Retried { .. } => Stage::Launch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Ok,
    /// It worked, slowly: users wait, yet can work. Not a failure: a support ticket when enough users' server
    /// starts are slow, never a page.
    Slow(Slowness),
    Failed(StepFailure),
    /// `by` failed first, so this capability could not be tried; not a failure of its own.
    Blocked {
        by: Capability,
    },
}

impl ProbeResult {
    pub fn label(&self) -> &'static str {
        match self {
            ProbeResult::Ok => "ok",
            ProbeResult::Slow(_) => "slow",
            ProbeResult::Failed(_) => "failed",
            ProbeResult::Blocked { .. } => "blocked",
        }
    }

    /// It worked (slowly or not).
    pub fn is_success(&self) -> bool {
        matches!(self, ProbeResult::Ok | ProbeResult::Slow(_))
    }

    /// Why it was slow, in words: "the server took 2m 31s to start (slow after 2m)".
    pub fn slowness(&self) -> Option<String> {
        let ProbeResult::Slow(slowness) = self else { return None };
        Some(match slowness {
            Slowness::Start { took, limit } => {
                let took = humantime::format_duration(Duration::from_secs(took.as_secs()));
                format!("the server took {took} to start (slow after {})", humantime::format_duration(*limit))
            }
            Slowness::Retried { failed, last } => {
                let attempts = if *failed == 1 { "attempt" } else { "attempts" };
                format!("BinderHub launched the server after {failed} failed launch {attempts} ({last})")
            }
        })
    }

    /// A failure that affects users (not a monitor fault, not blocked).
    pub fn is_user_affecting(&self) -> bool {
        matches!(self, ProbeResult::Failed(f) if f.cause == FailureCause::Hub)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageTiming {
    pub stage: Stage,
    pub seconds: f64,
}

/// One capability attempted by one probe user at one time.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub hub: HubName,
    pub user: String,
    pub capability: Capability,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub result: ProbeResult,
    pub stages: Vec<StageTiming>,
}

/// Where a probe ran from: hubwatch itself, or a user's server (Dask from inside, `connect_from_server`). The
/// detector keeps a user's attempts per vantage, so that the gateway answering hubwatch never clears the
/// failure users' servers meet reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vantage {
    Hubwatch,
    UsersServer,
}

impl Vantage {
    /// Where an attempt at `capability` that reached `stage` ran: Dask Gateway's kernel stages (Dask from
    /// inside) in the user's server; everything else from hubwatch. A failure's stage says where it was met.
    pub fn of(capability: Capability, stage: Stage) -> Vantage {
        match (capability, stage) {
            (Capability::DaskGateway, Stage::StartKernel | Stage::Connect | Stage::ConnectFromServer) => {
                Vantage::UsersServer
            }
            _ => Vantage::Hubwatch,
        }
    }
}

impl ProbeOutcome {
    /// Where it ran: from a user's server if any of its stages did ([`Vantage::of`]), else from hubwatch.
    pub fn vantage(&self) -> Vantage {
        let from = |s: &StageTiming| Vantage::of(self.capability, s.stage);
        self.stages.iter().map(from).find(|v| *v == Vantage::UsersServer).unwrap_or(Vantage::Hubwatch)
    }

    /// How long a server that started took to: from the spawn request to ready (the stages the hub's own
    /// "User NAME took X seconds to start" measures). `None` for anything but a server that started.
    pub fn start_time(&self) -> Option<Duration> {
        if self.capability != Capability::Server || !self.result.is_success() {
            return None;
        }
        let spawning = self.stages.iter().filter(|s| matches!(s.stage, Stage::RequestSpawn | Stage::Progress));
        let seconds: f64 = spawning.map(|s| s.seconds).sum();
        (seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
    }

    /// A started server's outcome marked slow when it took longer than `limit` to start.
    pub fn slow_after(mut self, limit: Duration) -> Self {
        if let (ProbeResult::Ok, Some(took)) = (&self.result, self.start_time())
            && took > limit
        {
            self.result = ProbeResult::Slow(Slowness::Start { took, limit });
        }
        self
    }
    /// The JSON line `hubwatch check --output json` prints (keys are part of the CLI contract).
    pub fn to_json(&self) -> serde_json::Value {
        let slowness = self.result.slowness();
        let (stage, reason, detail, cause, blocked_by) = match &self.result {
            ProbeResult::Ok => (None, None, None, None, None),
            ProbeResult::Slow(why) => (Some(why.stage().as_str()), slowness.as_deref(), None, None, None),
            ProbeResult::Failed(f) => {
                (Some(f.stage.as_str()), Some(f.reason.as_str()), f.detail.as_deref(), Some(f.cause), None)
            }
            ProbeResult::Blocked { by } => (None, None, None, None, Some(by.as_str())),
        };
        serde_json::json!({
            "hub": self.hub,
            "capability": self.capability,
            "user": self.user,
            "result": self.result.label(),
            "seconds": round_ms(self.duration.as_secs_f64()),
            "stage": stage,
            "reason": reason,
            "detail": detail,
            "cause": cause,
            "blocked_by": blocked_by,
            "started_at": humantime::format_rfc3339_millis(self.started_at).to_string(),
            "stages": self.stages,
        })
    }
}

pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
