//! Following a hub's and its proxy's logs (`kubectl logs -f`), for the real users [`super::logs`] finds in
//! them. Bounded: each line is cut at [`LINE_LIMIT`] bytes, whatever the pod writes; the failures kept are
//! those within the window. When a stream ends or fails (the pod restarted, the API server went away), it is
//! opened again after a pause that grows to [`MAX_PAUSE`], on the component's pod of the moment, from the
//! last line read (lines already read are skipped). A quiet stream is reopened every [`REOPEN_EVERY`], since
//! a hung connection and a quiet hub look alike.

use super::logs::{LogNews, LogWindow, news_in};
use super::losses::StopRequests;
use crate::domain::{Capability, HubName, RealUsers, SignalSource};
use crate::metrics::{Metrics, StartSource};
use crate::redact::Redactor;
use crate::status::StatusBoard;
use futures_util::io::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const LINE_LIMIT: usize = 4096;
const MAX_PAUSE: Duration = Duration::from_secs(30);
const REOPEN_EVERY: Duration = Duration::from_secs(300);
/// How often the users affected are worked out again (failures age out with time alone).
const EVALUATE_EVERY: Duration = Duration::from_secs(5);

/// The logs followed: z2jh's hub and proxy pods, by label, and their containers.
const SOURCES: [(&str, &str); 2] = [("component=hub", HUB_CONTAINER), ("component=proxy", "chp")];
/// The hub's container: the log that says which stops were asked for.
const HUB_CONTAINER: &str = "hub";

#[derive(Clone)]
pub struct HubLogs {
    pub client: kube::Client,
    pub hub: HubName,
    pub namespace: String,
    /// The hub's base path (`/`, `/prefix/`).
    pub prefix: String,
    pub probe_users: BTreeSet<String>,
    pub window: Duration,
    pub call_timeout: Duration,
    pub redactor: Arc<Redactor>,
    /// Where real users' start times go: the metrics' histogram and the status board's day of starts.
    pub metrics: Arc<Metrics>,
    pub board: Arc<StatusBoard>,
    /// The stop requests the hub's log shows, for the pod watch to tell a stop from a lost server.
    pub stops: Arc<StopRequests>,
}

impl HubLogs {
    /// Follows until `stop`; sends the users affected per capability whenever they change.
    pub async fn run(self, updates: mpsc::Sender<RealUsers>, stop: CancellationToken) {
        let (news_tx, mut news) = mpsc::channel::<LogNews>(256);
        let followers = SOURCES.map(|(selector, container)| self.follow(selector, container, news_tx.clone(), &stop));
        drop(news_tx);
        let [hub, proxy] = followers;
        let mut window = LogWindow::default();
        let mut sent: BTreeMap<Capability, BTreeMap<String, (String, SystemTime)>> = BTreeMap::new();
        let mut evaluate = tokio::time::interval(EVALUATE_EVERY);
        let (mut hub, mut proxy) = (pin!(hub), pin!(proxy));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut hub => {}
                _ = &mut proxy => {}
                _ = evaluate.tick() => {}
                // Evaluated at once: a page waits for no tick.
                Some(one) = news.recv() => {
                    self.count_start(&one);
                    match one {
                        LogNews::StopRequested { who } => self.stops.asked(&who, SystemTime::now()),
                        one => window.take(one, SystemTime::now()),
                    }
                }
            }
            for capability in [Capability::Login, Capability::Server] {
                let users = window.affected(capability, SystemTime::now(), self.window, &self.probe_users);
                if sent.get(&capability) == Some(&users) || (users.is_empty() && !sent.contains_key(&capability)) {
                    continue;
                }
                sent.insert(capability, users.clone());
                let update = RealUsers { hub: self.hub.clone(), source: SignalSource::HubLogs, capability, users };
                if updates.send(update).await.is_err() {
                    return;
                }
            }
        }
    }

    /// A real user's start time, for the figures (probe users' starts are counted by their probes).
    fn count_start(&self, news: &LogNews) {
        if let LogNews::Started { who, took: Some(took) } = news
            && !self.probe_users.contains(who)
        {
            self.metrics.observe_server_start(&self.hub, StartSource::Users, *took);
            self.board.record_start(&self.hub, SystemTime::now(), *took);
        }
    }

    /// Follows one component's log until `stop`, reopening it as needed.
    async fn follow(&self, selector: &str, container: &str, news: mpsc::Sender<LogNews>, stop: &CancellationToken) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut last_read: Option<SystemTime> = None;
        let mut pause = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let opened = tokio::select! {
                _ = stop.cancelled() => return,
                opened = self.read_once(&pods, selector, container, &mut last_read, &news) => opened,
            };
            match opened {
                Ok(()) => {
                    pause = Duration::from_secs(1);
                    if std::mem::take(&mut failing) {
                        tracing::info!(hub = %self.hub, selector, "following the log again");
                    }
                }
                Err(e) => {
                    if container == HUB_CONTAINER {
                        self.stops.set_following(false);
                    }
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(hub = %self.hub, selector, error = %self.redactor.redact(&e), "cannot follow the log; retrying");
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Opens the log of the component's pod of the moment and reads it until it ends, fails, or has been
    /// open for [`REOPEN_EVERY`]. `Ok` when it was read (an end is normal: a restart, a reopen).
    async fn read_once(
        &self,
        pods: &Api<Pod>,
        selector: &str,
        container: &str,
        last_read: &mut Option<SystemTime>,
        news: &mpsc::Sender<LogNews>,
    ) -> Result<(), String> {
        let listed = tokio::time::timeout(self.call_timeout, pods.list(&ListParams::default().labels(selector)))
            .await
            .map_err(|_| format!("listing pods {selector} took over {:?}", self.call_timeout))?
            .map_err(|e| e.to_string())?;
        let running = listed.items.iter().rev().find(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        });
        let Some(name) = running.and_then(|p| p.metadata.name.clone()) else {
            return Err(format!("no running pod {selector}"));
        };
        let since = last_read.map_or(self.window, |at| SystemTime::now().duration_since(at).unwrap_or_default());
        let params = LogParams {
            container: Some(container.to_string()),
            follow: true,
            timestamps: true,
            since_seconds: Some(since.as_secs() as i64 + 1),
            ..LogParams::default()
        };
        let stream = tokio::time::timeout(self.call_timeout, pods.log_stream(&name, &params))
            .await
            .map_err(|_| format!("opening the log of {name} took over {:?}", self.call_timeout))?
            .map_err(|e| e.to_string())?;
        if container == HUB_CONTAINER {
            self.stops.set_following(true);
        }
        let _ = tokio::time::timeout(REOPEN_EVERY, self.read_lines(stream, last_read, news)).await;
        Ok(())
    }

    async fn read_lines(
        &self,
        stream: impl AsyncBufRead,
        last_read: &mut Option<SystemTime>,
        news: &mpsc::Sender<LogNews>,
    ) -> Result<(), String> {
        let mut stream = pin!(stream);
        while let Some(line) = next_line(&mut stream, LINE_LIMIT).await.map_err(|e| e.to_string())? {
            let (at, text) = stamped(&line);
            // Reopened from a second before the last line read: skip what was read.
            if let (Some(at), Some(last)) = (at, *last_read) {
                if at <= last {
                    continue;
                }
            }
            if at.is_some() {
                *last_read = at;
            }
            if let Some(one) = news_in(text, &self.prefix) {
                let one = match one {
                    LogNews::Failed { who, capability, reason } => {
                        LogNews::Failed { who, capability, reason: self.redactor.redact(&reason) }
                    }
                    started => started,
                };
                if news.send(one).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The kubelet's timestamp in front of a line (`timestamps=true`), and the line.
fn stamped(line: &str) -> (Option<SystemTime>, &str) {
    match line.split_once(' ') {
        Some((stamp, rest)) => match humantime::parse_rfc3339(stamp) {
            Ok(at) => (Some(at), rest),
            Err(_) => (None, line),
        },
        None => (None, line),
    }
}

/// The next line, cut at `limit` bytes (the rest of a longer line is read and dropped); `None` at the end.
pub async fn next_line<R: AsyncBufRead + Unpin + ?Sized>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut any = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(any.then(|| String::from_utf8_lossy(&line).into_owned()));
        }
        any = true;
        let (chunk, used, ended) = match buffer.iter().position(|b| *b == b'\n') {
            Some(i) => (&buffer[..i], i + 1, true),
            None => (buffer, buffer.len(), false),
        };
        let room = limit.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume_unpin(used);
        if ended {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_cut_at_the_limit_and_the_rest_is_dropped() {
        let long = "x".repeat(10_000);
        let text = format!("first\n{long}\nlast");
        let mut reader = futures_util::io::BufReader::with_capacity(64, text.as_bytes());
        assert_eq!(next_line(&mut reader, 100).await.unwrap().as_deref(), Some("first"));
        assert_eq!(next_line(&mut reader, 100).await.unwrap().unwrap().len(), 100);
        assert_eq!(next_line(&mut reader, 100).await.unwrap().as_deref(), Some("last"));
        assert_eq!(next_line(&mut reader, 100).await.unwrap(), None);
    }

    #[test]
    fn the_kubelets_timestamp_is_read_off_the_line() {
        let (at, text) = stamped("2026-11-30T12:49:14.273456789Z [E 2026-11-30 12:49:14.273 JupyterHub log:192] 500");
        assert_eq!(text, "[E 2026-11-30 12:49:14.273 JupyterHub log:192] 500");
        assert_eq!(humantime::format_rfc3339_nanos(at.unwrap()).to_string(), "2026-11-30T12:49:14.273456789Z");
        assert_eq!(stamped("no stamp here"), (None, "no stamp here"));
    }
}
