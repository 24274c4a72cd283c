//! The paging scenario of `paging.rs` and `below_threshold.rs`: the real lab, PagerDuty's stand-in with its
//! REST API, and `hubwatch run` on them, past its first healthy rounds.

use crate::support::daemon::{Daemon, sample, wait_for};
use crate::support::scenario::Scenario;
use serde_json::json;
use std::time::Duration;

/// The scenario's server rounds (`Scenario`'s usual 4 s), their timeout, and a margin for a busy machine:
/// an outage is seen within `EVERY + TIMEOUT + MARGIN`.
pub const EVERY: Duration = Duration::from_secs(4);
pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const MARGIN: Duration = Duration::from_secs(8);

/// A test whose assertions hang on how fast the lab starts servers (a `slow_after` of 9 s) never runs beside
/// the tests with the most servers, launches and Dask clusters (beside them healthy spawns took 13–18 s):
/// tests of one kind may run together, of the two kinds never. A lock taken by both would run them one after
/// the other, and the test thread waiting on it would sit idle. A thread waiting here sits idle too, so the
/// two kinds live in modules far apart in libtest's order, which starts them far apart: `below_threshold`
/// among the first tests, `paging` in the middle.
pub static APART: Apart = Apart { inside: std::sync::Mutex::new((None, 0)), left: tokio::sync::Notify::const_new() };

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Load {
    SpawnTimed,
    Heavy,
}

pub struct Apart {
    /// The kind of the tests running, and how many.
    inside: std::sync::Mutex<(Option<Load>, usize)>,
    left: tokio::sync::Notify,
}

impl Apart {
    /// Waits until no test of the other kind runs.
    pub async fn enter(&'static self, load: Load) -> Inside {
        loop {
            // Made before looking, so a test that leaves in between still wakes this one.
            let left = self.left.notified();
            {
                let mut inside = self.inside.lock().unwrap();
                if inside.0.is_none_or(|running| running == load) {
                    *inside = (Some(load), inside.1 + 1);
                    return Inside(self);
                }
            }
            left.await;
        }
    }
}

pub struct Inside(&'static Apart);

impl Drop for Inside {
    fn drop(&mut self) {
        let mut inside = self.0.inside.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inside.1 -= 1;
        if inside.1 == 0 {
            inside.0 = None;
        }
        drop(inside);
        self.0.left.notify_waiters();
    }
}

/// The paging scenario (the PagerDuty stand-in's events and REST API, notes every 5 s) and `hubwatch run` on
/// it, ready and past its first healthy server rounds.
pub struct Paging {
    pub world: Scenario,
    pub daemon: Daemon,
}

impl Paging {
    pub async fn start(name: &str, port: u16) -> Paging {
        Paging::start_with(name, port, |world| world).await
    }

    /// As [`Paging::start`], with the scenario made by `configure` from the usual one.
    pub async fn start_with(name: &str, port: u16, configure: impl FnOnce(Scenario) -> Scenario) -> Paging {
        let world =
            Scenario::on_lab(name, port).await.with_rest_api().config(json!({"incidents": {"keep_open_for": "0s"},
                "pagerduty": {"status_update_every": "5s", "read_back_every": "1s"}}));
        let world = configure(world);
        let daemon = world.start().await;
        wait_for("healthy server rounds for both users", Duration::from_secs(60), async || {
            sample(&daemon.metrics().await, "hubwatch_probe_runs_total", &["capability=\"server\"", "result=\"ok\""])
                .is_some_and(|runs| runs >= 2.0)
        })
        .await;
        assert!(world.pd.accepted().is_empty(), "a healthy hub pages nobody");
        Paging { world, daemon }
    }
}
