//! Where pages go: per-hub (and per-kind) PagerDuty overrides of the routing key, the severity and the
//! priority, and the optional webhook sink (a JSON POST for incidents and support tickets).

use super::walk::{Table, join, string, type_name};
use super::{Config, Severity, Validator, secret};
use crate::domain::{IncidentKind, Secret};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

const OVERRIDE_KEYS: &[&str] = &["routing_key", "severity", "priority", "kinds"];
const KIND_OVERRIDE_KEYS: &[&str] = &["routing_key", "severity", "priority"];
const WEBHOOK_KEYS: &[&str] = &["url", "headers", "retry_delay", "timeout", "format"];

/// What a hub (or one kind on it) changes of the global `pagerduty` settings.
#[derive(Debug, Clone, Default)]
pub struct PageOverride {
    pub routing_key: Option<Secret>,
    pub severity: Option<Severity>,
    pub priority: Option<String>,
}

/// `hubs[].pagerduty`: the hub's overrides, and per kind ones that win over them.
#[derive(Debug, Clone, Default)]
pub struct HubPaging {
    pub hub: PageOverride,
    pub kinds: BTreeMap<IncidentKind, PageOverride>,
}

/// The settings one page goes out with, and the config key each came from (the page names them).
#[derive(Debug, Clone)]
pub struct PageRoute<'a> {
    pub routing_key: &'a Secret,
    pub routing_key_rule: String,
    pub severity: Severity,
    /// The priority to set on the PagerDuty incident, with the key that chose it.
    pub priority: Option<(String, String)>,
}

impl PageRoute<'_> {
    /// What the page's `custom_details.routing` says (no secret: only where the key came from).
    pub fn details(&self) -> Value {
        serde_json::json!({
            "routing_key_rule": self.routing_key_rule,
            "severity": self.severity.as_str(),
            "priority": self.priority.as_ref().map(|(p, _)| p),
            "priority_rule": self.priority.as_ref().map_or("none (no pagerduty.priority applies)", |(_, rule)| rule),
        })
    }
}

/// `webhook`: a JSON POST per incident opened and resolved and per support ticket opened and closed.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: Url,
    /// Sent with every POST (e.g. `Authorization`); values are secrets.
    pub headers: Vec<(String, Secret)>,
    pub retry_delay: Duration,
    pub timeout: Duration,
    pub format: WebhookFormat,
}

/// What the webhook's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// hubwatch's own JSON object (docs/on-call.md): for helpdesks, chat bridges, scripts.
    Json,
    /// A one-alert list for Alertmanager's `POST /api/v2/alerts`: firing until it ends (`endsAt`).
    Alertmanager,
}

/// A fingerprint of a routing key: enough to tell two keys apart, nothing of the key itself (64 bits of its
/// SHA-256; the key is a random 128-bit value).
pub fn fingerprint(key: &Secret) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.expose().as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Config {
    /// The routing key with this [`fingerprint`], wherever the configuration names it (globally, for a hub or
    /// a kind): where an incident's later events go once its trigger went there.
    pub fn routing_key_with(&self, wanted: &str) -> Option<&Secret> {
        let global = self.pagerduty.iter().map(|p| &p.routing_key);
        let overrides = self.hubs.iter().filter_map(|h| h.pagerduty.as_ref()).flat_map(|paging| {
            std::iter::once(&paging.hub).chain(paging.kinds.values()).filter_map(|o| o.routing_key.as_ref())
        });
        global.chain(overrides).find(|key| fingerprint(key) == wanted)
    }

    /// The PagerDuty settings of `hub` (and `kind`): the kind's override, the hub's, then the global ones.
    /// `None` without a `pagerduty` section.
    pub fn page_route(&self, hub: &str, kind: Option<IncidentKind>) -> Option<PageRoute<'_>> {
        let global = self.pagerduty.as_ref()?;
        let mut route = PageRoute {
            routing_key: &global.routing_key,
            routing_key_rule: "pagerduty.routing_key".into(),
            severity: global.severity,
            priority: global.priority.clone().map(|p| (p, "pagerduty.priority".into())),
        };
        let Some(paging) = self.hub(hub).and_then(|h| h.pagerduty.as_ref()) else { return Some(route) };
        let mut layers = vec![(format!("hubs[{hub}].pagerduty"), &paging.hub)];
        if let Some((kind, over)) = kind.and_then(|k| paging.kinds.get_key_value(&k)) {
            layers.push((format!("hubs[{hub}].pagerduty.kinds.{}", kind.as_str()), over));
        }
        for (path, over) in layers {
            if let Some(key) = &over.routing_key {
                route.routing_key = key;
                route.routing_key_rule = format!("{path}.routing_key");
            }
            if let Some(severity) = over.severity {
                route.severity = severity;
            }
            if let Some(priority) = &over.priority {
                route.priority = Some((priority.clone(), format!("{path}.priority")));
            }
        }
        Some(route)
    }
}

impl Validator<'_> {
    /// `hubs[].pagerduty`: `{routing_key, severity, priority, kinds: {KIND: {routing_key, severity, priority}}}`.
    pub(super) fn hub_paging(&mut self, value: &Value, path: &str) -> Option<HubPaging> {
        let mut table = Table::new(value, path, OVERRIDE_KEYS, self.problems)?;
        let hub = self.page_override(&mut table, path);
        let kinds = match table.get("kinds") {
            None => Some(BTreeMap::new()),
            Some(v) => self.kind_overrides(v, &join(path, "kinds")),
        };
        table.finish(self.problems);
        Some(HubPaging { hub: hub?, kinds: kinds? })
    }

    fn kind_overrides(&mut self, value: &Value, path: &str) -> Option<BTreeMap<IncidentKind, PageOverride>> {
        let Value::Object(map) = value else {
            self.problems.add(path, format!("expected a mapping of incident kinds, found {}", type_name(value)));
            return None;
        };
        let mut kinds = BTreeMap::new();
        let mut ok = true;
        for (name, value) in map {
            let path = join(path, name);
            let Some(kind) = IncidentKind::parse(name) else {
                let known: Vec<&str> = IncidentKind::ALL.iter().map(|k| k.as_str()).collect();
                self.problems.add(&path, format!("unknown incident kind (expected one of: {})", known.join(", ")));
                ok = false;
                continue;
            };
            match Table::new(value, &path, KIND_OVERRIDE_KEYS, self.problems) {
                Some(mut table) => {
                    let over = self.page_override(&mut table, &path);
                    table.finish(self.problems);
                    match over {
                        Some(over) => drop(kinds.insert(kind, over)),
                        None => ok = false,
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(kinds)
    }

    fn page_override(&mut self, table: &mut Table, path: &str) -> Option<PageOverride> {
        let routing_key = match table.get("routing_key") {
            None => Some(None),
            Some(v) => self.routing_key(v, &join(path, "routing_key")).map(Some),
        };
        let severity = match table.get("severity") {
            None => Some(None),
            Some(v) => self.severity(v, &join(path, "severity")).map(Some),
        };
        let priority = match table.get("priority") {
            None => Some(None),
            Some(v) => self.priority(v, &join(path, "priority")).map(Some),
        };
        Some(PageOverride { routing_key: routing_key?, severity: severity?, priority: priority? })
    }

    /// A PagerDuty priority's name, as the account's priorities list it (`P1`, `SEV-2`, …).
    pub(super) fn priority(&mut self, value: &Value, path: &str) -> Option<String> {
        let name = string(value, path, self.problems)?;
        if name.len() > 64 || name.chars().any(char::is_control) {
            self.problems.add(path, "a priority's name: at most 64 printable characters, as in PagerDuty (e.g. P1)");
            return None;
        }
        Some(name)
    }

    /// `priority` anywhere needs the REST API (it is set on the incident once it exists), and hub overrides
    /// need the global section they override.
    pub(super) fn check_paging(&mut self, config: &Config) {
        let rest = config.pagerduty.as_ref().is_some_and(|p| p.status_updates.is_some());
        if config.pagerduty.as_ref().is_some_and(|p| p.priority.is_some()) && !rest {
            self.problems.add(
                "pagerduty.priority",
                "needs pagerduty.api_token and from_email: the priority is set through PagerDuty's REST API",
            );
        }
        for (i, hub) in config.hubs.iter().enumerate() {
            let Some(paging) = &hub.pagerduty else { continue };
            let path = format!("hubs[{i}].pagerduty");
            if config.pagerduty.is_none() {
                self.problems.add(&path, "needs the top-level pagerduty section (it overrides its settings)");
                continue;
            }
            let overrides = std::iter::once((path.clone(), &paging.hub))
                .chain(paging.kinds.iter().map(|(k, o)| (format!("{path}.kinds.{}", k.as_str()), o)));
            for (at, over) in overrides {
                if over.priority.is_some() && !rest {
                    self.problems.add(
                        &join(&at, "priority"),
                        "needs pagerduty.api_token and from_email: the priority is set through PagerDuty's REST API",
                    );
                }
            }
        }
    }

    pub(super) fn webhook(&mut self, value: &Value) -> Option<WebhookConfig> {
        let mut table = Table::new(value, "webhook", WEBHOOK_KEYS, self.problems)?;
        let url = table.required("url", self.problems).and_then(|v| self.url(v, "webhook.url")).map(|mut url| {
            // url() adds a slash for joining; the webhook is posted to as given.
            let trimmed = url.path().trim_end_matches('/').to_string();
            url.set_path(if trimmed.is_empty() { "/" } else { &trimmed });
            url
        });
        let headers = match table.get("headers") {
            None => Some(Vec::new()),
            Some(v) => self.webhook_headers(v),
        };
        let format = match table.get("format").map(|v| (v, string(v, "webhook.format", self.problems))) {
            None => Some(WebhookFormat::Json),
            Some((_, Some(f))) if f == "json" => Some(WebhookFormat::Json),
            Some((_, Some(f))) if f == "alertmanager" => Some(WebhookFormat::Alertmanager),
            Some((_, Some(f))) => {
                self.problems.add("webhook.format", format!("unknown format {f:?} (expected json or alertmanager)"));
                None
            }
            Some((_, None)) => None,
        };
        let (mut retry_delay, mut timeout) = (Duration::from_secs(2), Duration::from_secs(30));
        let ok = self.durations(&mut table, [("retry_delay", &mut retry_delay), ("timeout", &mut timeout)]);
        table.finish(self.problems);
        ok.then_some(())?;
        Some(WebhookConfig { url: url?, headers: headers?, retry_delay, timeout, format: format? })
    }

    fn webhook_headers(&mut self, value: &Value) -> Option<Vec<(String, Secret)>> {
        let Value::Object(map) = value else {
            self.problems.add("webhook.headers", format!("expected a mapping, found {}", type_name(value)));
            return None;
        };
        let mut headers = Vec::new();
        let mut ok = true;
        for (name, value) in map {
            let path = format!("webhook.headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problems.add(&path, "not a valid HTTP header name");
                ok = false;
                continue;
            }
            match secret::resolve(value, &path, self.config_dir, self.env, self.problems) {
                Some(secret) => headers.push((name.clone(), secret)),
                None => ok = false,
            }
        }
        ok.then_some(headers)
    }
}
