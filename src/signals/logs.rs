//! Real users from the hub's and the proxy's own logs: who met an error, in the hub's words. It is the only
//! way to see some outages: an expired identity-provider secret fails every `oauth_callback` while probes
//! that log in with a token pass; a proxy that lost its routes sends users already working round a login
//! loop while fresh servers get fresh routes. Pure: lines and time in, users affected out.
//!
//! What counts, per user (the user a request's path names, else the one the hub logged it for):
//! - a 5xx on `hub/spawn…`, `hub/api/users/NAME/server(s)…`, `hub/user/NAME/…` (the hub answering for a
//!   lost route: a redirect loop ends in `500 … ?redirects=4`) or `user/NAME/…` → `server`;
//! - `Unhandled error starting NAME's server: …` → `server`;
//! - a 5xx on `hub/oauth_callback` or `hub/login` → `login` (before the login the hub knows no user: such
//!   failures count once per client address);
//! - the proxy's `error: 503 GET /user/NAME/…` → `server`;
//! - a 429 on a spawn path (`hub/spawn…`, `hub/api/users/NAME/server`): the hub's `concurrent_spawn_limit`
//!   turned the user away ("Too many users trying to log in right now") → `server`.
//!
//! `Server NAME is ready` or `User NAME took … to start` clears that user's `server` failure. A failure
//! counts within `incidents.window` of when it was logged; probe users are left out (their probes speak for
//! them).

use crate::domain::Capability;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// Longest reason kept from a line.
const REASON_LIMIT: usize = 300;

/// What one log line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogNews {
    Failed {
        who: String,
        capability: Capability,
        reason: String,
    },
    /// A stop of the user's server was asked for and done (`DELETE /hub/api/users/NAME/server`, by the
    /// user, an admin or the culler; or the user deleted).
    StopRequested {
        who: String,
    },
    /// The user's server started, in `took` when the hub said ("User NAME took 6.410 seconds to start").
    Started {
        who: String,
        took: Option<Duration>,
    },
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The news in one line of the hub's or the proxy's log, if any. `prefix` is the hub's base path
/// (`/` or `/prefix/`).
pub fn news_in(line: &str, prefix: &str) -> Option<LogNews> {
    let line = without_colours(line);
    if let Some(news) = spawn_news(&line) {
        return Some(news);
    }
    let (status, method, target, logged_for) = request(&line)?;
    if method == "DELETE" && (200..300).contains(&status) {
        return stop_requested(target, prefix);
    }
    let throttled = status == 429;
    if !(500..600).contains(&status) && !throttled {
        return None;
    }
    let path = target.split('?').next().unwrap_or_default();
    let path = path.strip_prefix(prefix).or_else(|| path.strip_prefix('/'))?;
    let (capability, named) = classify(path)?;
    if throttled && !is_spawn(path) {
        return None;
    }
    let user_of = |logged: &'_ str| logged.rsplit_once('@').map_or(logged, |(user, _)| user).to_string();
    let who = match (named, logged_for) {
        (Some(user), _) => user,
        (None, Some(logged)) if !user_of(logged).is_empty() => user_of(logged),
        (None, Some(logged)) => format!("someone at {}", logged.rsplit('@').next().unwrap_or_default()),
        (None, None) => "someone".to_string(),
    };
    let request = format!("HTTP {status} on {method} {}", target.split('?').next().unwrap_or_default());
    let reason = match throttled {
        true => cut(&format!("the hub is refusing new servers: too many starting at once ({request})")),
        false => cut(&request),
    };
    Some(LogNews::Failed { who, capability, reason })
}

/// `DELETE hub/api/users/NAME/server[s/…]` or `DELETE hub/api/users/NAME`, answered: a stop asked for.
fn stop_requested(target: &str, prefix: &str) -> Option<LogNews> {
    let path = target.split('?').next().unwrap_or_default();
    let path = path.strip_prefix(prefix).or_else(|| path.strip_prefix('/'))?;
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["hub", "api", "users", who] | ["hub", "api", "users", who, "server" | "servers", ..] => {
            Some(LogNews::StopRequested { who: percent_decoded(who) })
        }
        _ => None,
    }
}

/// A request that starts a server: where the hub's spawn throttle answers 429.
fn is_spawn(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(segments.as_slice(), ["hub", "spawn", ..] | ["hub", "api", "users", _, "server" | "servers", ..])
}

/// `Unhandled error starting NAME's server: why`, `Server NAME is ready`, `User NAME took 6.4 seconds to
/// start`.
fn spawn_news(line: &str) -> Option<LogNews> {
    if let Some((_, rest)) = line.split_once("Unhandled error starting ") {
        let (who, why) = rest.split_once("'s server: ").or_else(|| rest.split_once("'s server:"))?;
        return Some(LogNews::Failed {
            who: who.trim().to_string(),
            capability: Capability::Server,
            reason: cut(&format!("the hub could not start the server: {}", why.trim())),
        });
    }
    if let Some((_, rest)) = line.split_once("] Server ")
        && let Some(who) = rest.strip_suffix(" is ready").or_else(|| rest.trim_end().strip_suffix(" is ready"))
    {
        return Some(LogNews::Started { who: who.trim().to_string(), took: None });
    }
    let (_, rest) = line.split_once("] User ")?;
    let (who, after) = rest.split_once(" took ")?;
    let seconds = after.trim_end().strip_suffix("seconds to start")?;
    let took = seconds.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64);
    Some(LogNews::Started { who: who.trim().to_string(), took })
}

/// A request line: the hub's `] 500 GET /path (user@ip) 12.3ms` or the proxy's `error: 503 GET /path …`.
fn request(line: &str) -> Option<(u16, &str, &str, Option<&str>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.windows(3).position(|w| {
        w[0].len() == 3 && w[0].bytes().all(|b| b.is_ascii_digit()) && METHODS.contains(&w[1]) && w[2].starts_with('/')
    })?;
    let (status, method, target) = (words[at].parse().ok()?, words[at + 1], words[at + 2]);
    let logged_for = words.get(at + 3).and_then(|w| w.strip_prefix('(')?.strip_suffix(')')).filter(|w| w.contains('@'));
    Some((status, method, target, logged_for))
}

/// The capability a failing path belongs to, and the user it names (if it names one).
fn classify(path: &str) -> Option<(Capability, Option<String>)> {
    let segments: Vec<&str> = path.split('/').collect();
    let named = |i: usize| segments.get(i).filter(|s| !s.is_empty()).map(|s| percent_decoded(s));
    match segments.as_slice() {
        ["hub", "spawn" | "spawn-pending", ..] => Some((Capability::Server, named(2))),
        ["hub", "api", "users", _, "server" | "servers", ..] => Some((Capability::Server, named(3))),
        ["hub", "user", _, ..] | ["user", _, ..] => {
            let at = if segments[0] == "hub" { 2 } else { 1 };
            Some((Capability::Server, named(at)))
        }
        ["hub", "oauth_callback" | "login", ..] => Some((Capability::Login, None)),
        _ => None,
    }
}

fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The proxy colours its log levels (`\x1b[31merror\x1b[39m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn cut(text: &str) -> String {
    crate::domain::wording::truncate(text, REASON_LIMIT)
}

/// The failures the logs showed lately, per capability and user.
#[derive(Debug, Default)]
pub struct LogWindow {
    /// (capability, user) → (reason, first seen, last seen).
    failures: BTreeMap<(Capability, String), (String, SystemTime, SystemTime)>,
}

impl LogWindow {
    pub fn take(&mut self, news: LogNews, at: SystemTime) {
        match news {
            LogNews::Failed { who, capability, reason } => {
                let entry = self.failures.entry((capability, who)).or_insert((String::new(), at, at));
                (entry.0, entry.2) = (reason, at);
            }
            LogNews::Started { who, .. } => {
                self.failures.remove(&(Capability::Server, who));
            }
            LogNews::StopRequested { .. } => {}
        }
    }

    /// The users affected in `capability` at `now` (failures within `window`), except `probe_users`;
    /// older failures are forgotten.
    pub fn affected(
        &mut self,
        capability: Capability,
        now: SystemTime,
        window: Duration,
        probe_users: &BTreeSet<String>,
    ) -> BTreeMap<String, (String, SystemTime)> {
        self.failures.retain(|_, (_, _, last)| now.duration_since(*last).map_or(true, |age| age <= window));
        self.failures
            .iter()
            .filter(|((c, who), _)| *c == capability && !probe_users.contains(who))
            .map(|((_, who), (reason, since, _))| (who.clone(), (reason.clone(), *since)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(who: &str, capability: Capability, reason: &str) -> Option<LogNews> {
        Some(LogNews::Failed { who: who.into(), capability, reason: reason.into() })
    }

    #[test]
    fn the_hubs_and_the_proxys_own_lines_name_the_user_and_the_capability() {
        // Lines as JupyterHub 6 and configurable-http-proxy 5 wrote them in the lab.
        let cases = [
            (
                "[E 2026-11-30 12:49:14.273 JupyterHub log:192] 500 POST /hub/api/users/alice/server (alice@10.0.3.7) 238.68ms",
                failed("alice", Capability::Server, "HTTP 500 on POST /hub/api/users/alice/server"),
            ),
            (
                "[E 2026-11-30 12:47:59.823 JupyterHub user:1072] Unhandled error starting alice's server: injected spawn failure (flag spawn-fail)",
                failed(
                    "alice",
                    Capability::Server,
                    "the hub could not start the server: injected spawn failure (flag spawn-fail)",
                ),
            ),
            (
                "[E 2026-11-30 12:37:24.735 JupyterHub log:192] 500 GET /hub/user/carol/api/status?redirects=4 (hubwatch@127.0.0.1) 52.93ms",
                failed("carol", Capability::Server, "HTTP 500 on GET /hub/user/carol/api/status"),
            ),
            (
                "[E 2026-11-30 09:01:02.003 JupyterHub log:192] 500 GET /hub/oauth_callback?code=[redacted]&state=xyz (@10.0.0.9) 1203.00ms",
                failed("someone at 10.0.0.9", Capability::Login, "HTTP 500 on GET /hub/oauth_callback"),
            ),
            (
                "[E 2026-11-30 09:01:02.003 JupyterHub log:192] 503 GET /hub/spawn/erin%40example.org (erin@example.org@10.0.0.9) 3.0ms",
                failed("erin@example.org", Capability::Server, "HTTP 503 on GET /hub/spawn/erin%40example.org"),
            ),
            (
                "2026-11-30T12:49:20.567Z [ConfigProxy] \x1b[31merror\x1b[39m: 503 GET /user/dave/api/kernels connect ECONNREFUSED 10.0.4.2:8888",
                failed("dave", Capability::Server, "HTTP 503 on GET /user/dave/api/kernels"),
            ),
            (
                "[I 2026-11-30 12:49:32.836 JupyterHub users:1105] Server alice is ready",
                Some(LogNews::Started { who: "alice".into(), took: None }),
            ),
            (
                "[I 2026-11-30 12:49:32.823 JupyterHub base:1192] User alice took 6.410 seconds to start",
                Some(LogNews::Started { who: "alice".into(), took: Some(Duration::from_millis(6_410)) }),
            ),
            (
                // JupyterHub's concurrent_spawn_limit: "Too many users trying to log in right now."
                "[W 2026-11-30 12:50:01.118 JupyterHub log:192] 429 POST /hub/api/users/frank/server (frank@10.0.3.8) 4.02ms",
                failed(
                    "frank",
                    Capability::Server,
                    "the hub is refusing new servers: too many starting at once (HTTP 429 on POST /hub/api/users/frank/server)",
                ),
            ),
            (
                "[W 2026-11-30 12:50:01.118 JupyterHub log:192] 429 GET /hub/spawn/gina (gina@10.0.3.9) 2.1ms",
                failed(
                    "gina",
                    Capability::Server,
                    "the hub is refusing new servers: too many starting at once (HTTP 429 on GET /hub/spawn/gina)",
                ),
            ),
            (
                "[W 2026-11-30 12:50:01.118 JupyterHub log:192] 429 GET /user/gina/api/kernels (gina@10.0.3.9) 2.1ms",
                None,
            ),
            (
                // The culler (a service) stopping alice's server; the request line is written when it ended.
                "[I 2026-11-30 12:55:10.002 JupyterHub log:192] 204 DELETE /hub/api/users/alice/server (cull-idle@127.0.0.1) 10521.3ms",
                Some(LogNews::StopRequested { who: "alice".into() }),
            ),
            (
                "[I 2026-11-30 12:55:10.002 JupyterHub log:192] 202 DELETE /hub/api/users/erin%40example.org/server (admin@10.0.0.2) 10003.0ms",
                Some(LogNews::StopRequested { who: "erin@example.org".into() }),
            ),
            (
                "[W 2026-11-30 12:55:10.002 JupyterHub log:192] 400 DELETE /hub/api/users/alice/server (alice@10.0.0.2) 3.0ms",
                None,
            ),
            ("[I 2026-11-30 12:49:32.823 JupyterHub log:192] 200 GET /hub/spawn/alice (alice@10.0.3.7) 3.1ms", None),
            ("[W 2026-11-30 12:49:32.823 JupyterHub log:192] 404 GET /hub/user/alice/lab (alice@10.0.3.7) 3.1ms", None),
            ("[E 2026-11-30 12:49:32.823 JupyterHub log:192] 500 GET /hub/api/info (alice@10.0.3.7) 3.1ms", None),
            ("2026-11-30T12:49:20.567Z [ConfigProxy] \x1b[32minfo\x1b[39m: 200 GET /api/routes", None),
        ];
        for (line, expected) in cases {
            assert_eq!(news_in(line, "/"), expected, "{line}");
        }
    }

    #[test]
    fn a_hub_under_a_prefix_is_read_under_it() {
        let line = "[E 2026-11-30 12:49:14.273 JupyterHub log:192] 500 POST /temple/hub/spawn (alice@10.0.3.7) 2ms";
        assert_eq!(
            news_in(line, "/temple/"),
            failed("alice", Capability::Server, "HTTP 500 on POST /temple/hub/spawn")
        );
    }

    #[test]
    fn failures_count_within_the_window_a_start_clears_them_and_probe_users_are_left_out() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let window = Duration::from_secs(900);
        let probe_users: BTreeSet<String> = ["probe-1".to_string()].into();
        let mut logs = LogWindow::default();
        for (who, s) in [("alice", 0), ("bob", 10), ("probe-1", 10), ("alice", 20)] {
            logs.take(LogNews::Failed { who: who.into(), capability: Capability::Server, reason: "x".into() }, at(s));
        }
        let affected = logs.affected(Capability::Server, at(30), window, &probe_users);
        assert_eq!(affected.keys().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(affected["alice"].1, at(0), "since the first failure");
        assert!(logs.affected(Capability::Login, at(30), window, &probe_users).is_empty());
        logs.take(LogNews::Started { who: "bob".into(), took: None }, at(40));
        assert_eq!(
            logs.affected(Capability::Server, at(41), window, &probe_users).keys().collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(logs.affected(Capability::Server, at(20 + 901), window, &probe_users).is_empty(), "aged out");
    }
}
