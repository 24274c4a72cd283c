//! Running servers taken from their users: a node drained, upgraded or gone, an eviction, a pod deleted from
//! outside. Fresh spawns still work, so no probe fails, yet people lost their work. The pod watch sees the
//! pod go ([`super::pods::loss`]); whether the hub asked for it (a user's stop, an admin's, the culler's) only
//! the hub's log says — and it says so late, since a stop's request line is written when the stop has ended.
//! So a server gone is judged [`GRACE`] later: lost unless a stop of that user's server was requested within
//! [`ASKED_BEFORE`] of it (or since). A deletion the pod itself does not explain is judged only while the
//! hub's log is followed: without it, every ordinary stop would look like a loss. Pure: time is an argument.

use super::pods::Loss;
use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long after a server is gone it is judged: long enough for the hub to log the stop that removed it.
pub const GRACE: Duration = Duration::from_secs(30);
/// A stop requested this long before a server went counts as the reason it went.
pub const ASKED_BEFORE: Duration = Duration::from_secs(60);
/// Stop requests are kept this long (they are only ever compared with the last few minutes).
const KEPT: Duration = Duration::from_secs(600);

/// The stop requests the hub's log showed lately, and whether it is being followed: written by the log
/// follower, read by the pod watch of the same hub.
#[derive(Debug, Default)]
pub struct StopRequests {
    inner: Mutex<Requests>,
}

#[derive(Debug, Default)]
struct Requests {
    asked: BTreeMap<String, SystemTime>,
    following: bool,
}

impl StopRequests {
    /// A stop of `user`'s server was requested (and answered) at `at`.
    pub fn asked(&self, user: &str, at: SystemTime) {
        let mut requests = lock(&self.inner);
        requests.asked.retain(|_, when| at.duration_since(*when).map_or(true, |age| age <= KEPT));
        requests.asked.insert(user.to_string(), at);
    }

    pub fn set_following(&self, following: bool) {
        lock(&self.inner).following = following;
    }

    fn asked_since(&self, user: &str, since: SystemTime) -> bool {
        lock(&self.inner).asked.get(user).is_some_and(|at| *at >= since)
    }

    fn following(&self) -> bool {
        lock(&self.inner).following
    }
}

/// Servers seen gone and not yet judged, and those judged lost (held for the window).
#[derive(Debug, Default)]
pub struct Losses {
    seen: BTreeMap<String, (Loss, SystemTime)>,
    lost: BTreeMap<String, (String, SystemTime)>,
}

impl Losses {
    /// `user`'s server went at `at` (the first sight of it counts; a loss already judged stands).
    pub fn saw(&mut self, user: &str, loss: Loss, at: SystemTime) {
        if !self.lost.contains_key(user) {
            self.seen.entry(user.to_string()).or_insert((loss, at));
        }
    }

    /// How long until the next judgement is due (`grace` after the oldest sight not judged), if any.
    pub fn due_in(&self, now: SystemTime, grace: Duration) -> Option<Duration> {
        let oldest = self.seen.values().map(|(_, at)| *at).min()?;
        Some((oldest + grace).duration_since(now).unwrap_or_default())
    }

    /// Judges what was seen at least `grace` ([`GRACE`]) ago against the hub's stop requests.
    pub fn judge(&mut self, now: SystemTime, grace: Duration, stops: &StopRequests) {
        let due: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at).is_ok_and(|age| age >= grace))
            .map(|(user, _)| user.clone())
            .collect();
        for user in due {
            let Some((loss, at)) = self.seen.remove(&user) else { continue };
            let asked = stops.asked_since(&user, at.checked_sub(ASKED_BEFORE).unwrap_or(at));
            let explained = match loss {
                Loss::Marked(_) => false,
                Loss::Unmarked(_) => !stops.following(),
            };
            if asked || explained {
                tracing::debug!(user, asked, reason = loss.reason(), "a server gone, not a loss");
                continue;
            }
            self.lost.insert(user, (loss.reason().to_string(), at));
        }
    }

    /// The users whose server was lost within `window` of `now`, with the evidence and when; older losses
    /// are forgotten.
    pub fn current(&mut self, now: SystemTime, window: Duration) -> BTreeMap<String, (String, SystemTime)> {
        self.lost.retain(|_, (_, at)| now.duration_since(*at).map_or(true, |age| age <= window));
        self.lost.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    const WINDOW: Duration = Duration::from_secs(900);

    #[test]
    fn a_server_the_cluster_took_is_lost_after_the_grace_unless_the_hub_asked() {
        let stops = StopRequests::default();
        let mut losses = Losses::default();
        losses.saw("alice", Loss::Marked("server lost: drained".into()), at(0));
        losses.saw("bob", Loss::Marked("server lost: drained".into()), at(0));
        // bob's stop was asked 20 s before his pod went: the culler, say.
        stops.asked("bob", at(0) - Duration::from_secs(20));
        assert_eq!(losses.due_in(at(10), GRACE), Some(Duration::from_secs(20)));
        losses.judge(at(29), GRACE, &stops);
        assert!(losses.current(at(29), WINDOW).is_empty(), "not judged within the grace");
        losses.judge(at(30), GRACE, &stops);
        let lost = losses.current(at(30), WINDOW);
        assert_eq!(lost.keys().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(lost["alice"], ("server lost: drained".into(), at(0)), "dated when the server went");
        assert!(losses.current(at(901), WINDOW).is_empty(), "held for the window, then forgotten");
    }

    #[test]
    fn a_stop_logged_after_the_pod_went_explains_it() {
        let stops = StopRequests::default();
        stops.set_following(true);
        let mut losses = Losses::default();
        losses.saw("carol", Loss::Unmarked("server lost: pod deleted".into()), at(0));
        // The hub writes the request line when the stop ends, after the pod is gone.
        stops.asked("carol", at(8));
        losses.judge(at(30), GRACE, &stops);
        assert!(losses.current(at(30), WINDOW).is_empty());
    }

    #[test]
    fn a_bare_deletion_counts_only_while_the_hubs_log_is_followed() {
        let stops = StopRequests::default();
        let mut losses = Losses::default();
        losses.saw("dave", Loss::Unmarked("server lost: pod deleted".into()), at(0));
        losses.judge(at(30), GRACE, &stops);
        assert!(losses.current(at(30), WINDOW).is_empty(), "without the log, a stop cannot be told from a loss");
        stops.set_following(true);
        losses.saw("dave", Loss::Unmarked("server lost: pod deleted".into()), at(40));
        stops.asked("erin", at(41));
        losses.judge(at(70), GRACE, &stops);
        assert_eq!(
            losses.current(at(70), WINDOW).keys().collect::<Vec<_>>(),
            ["dave"],
            "another user's stop is not his"
        );
    }
}
