//! Where pages go: per-hub (and per-kind) PagerDuty overrides of the routing key, the severity and the
//! priority, and the optional webhook sink (a JSON POST for incidents and support tickets).

use super::{Config, SecretRef, Span, secs};
use crate::domain::{HubName, IncidentKind, RouteNotice, Severity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// What a hub (or one kind on it) changes of the global `pagerduty` settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageOverride {
    /// Its own service's integration key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// A PagerDuty priority's name as the account lists it (P1, SEV-2, …); needs pagerduty.api_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// `hubs[].pagerduty`: the hub's overrides, and per incident kind ones that win over them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubPaging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default)]
    pub kinds: KindOverrides,
}

/// Per incident kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KindOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_access: Option<PageOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dask_gateway: Option<PageOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binder: Option<PageOverride>,
}

impl KindOverrides {
    /// Each kind's overrides, named by the kind.
    pub fn each_mut(&mut self) -> [(IncidentKind, &mut Option<PageOverride>); 3] {
        [
            (IncidentKind::HubAccess, &mut self.hub_access),
            (IncidentKind::DaskGateway, &mut self.dask_gateway),
            (IncidentKind::Binder, &mut self.binder),
        ]
    }

    fn each(&self) -> [(IncidentKind, &Option<PageOverride>); 3] {
        [
            (IncidentKind::HubAccess, &self.hub_access),
            (IncidentKind::DaskGateway, &self.dask_gateway),
            (IncidentKind::Binder, &self.binder),
        ]
    }
}

impl HubPaging {
    /// The hub's own overrides, then each kind's, with the key path that names them.
    pub fn layers(&self, path: &str) -> Vec<Layer<'_>> {
        let hub = Layer {
            at: path.to_string(),
            kind: None,
            routing_key: self.routing_key.as_ref(),
            severity: self.severity,
            priority: self.priority.as_ref(),
        };
        let kinds = self.kinds.each();
        let kinds = kinds.into_iter().filter_map(|(kind, over)| Some((kind, over.as_ref()?)));
        let kinds = kinds.map(|(kind, over)| Layer {
            at: format!("{path}.kinds.{}", kind.as_str()),
            kind: Some(kind),
            routing_key: over.routing_key.as_ref(),
            severity: over.severity,
            priority: over.priority.as_ref(),
        });
        std::iter::once(hub).chain(kinds).collect()
    }

    pub fn routing_keys(&self) -> impl Iterator<Item = &SecretRef> {
        self.layers("").into_iter().filter_map(|layer| layer.routing_key)
    }
}

/// One set of overrides (a hub's, or one kind's on it) and the key path that names it.
pub struct Layer<'a> {
    pub at: String,
    pub kind: Option<IncidentKind>,
    pub routing_key: Option<&'a SecretRef>,
    pub severity: Option<Severity>,
    pub priority: Option<&'a String>,
}

/// The settings one page goes out with, and the config key each came from (the page names them).
#[derive(Debug, Clone)]
pub struct PageRoute<'a> {
    pub routing_key: &'a SecretRef,
    pub routing_key_rule: String,
    pub severity: Severity,
    /// The priority to set on the PagerDuty incident, with the key that chose it.
    pub priority: Option<(String, String)>,
}

impl PageRoute<'_> {
    /// The severity of pages `route` sends, `Severity`'s default without one (no pagerduty section).
    pub fn severity_of(route: Option<&PageRoute<'_>>) -> Severity {
        route.map_or_else(Severity::default, |r| r.severity)
    }

    /// Where the page's settings came from (no secret: only where the key came from).
    pub fn notice(&self) -> RouteNotice {
        RouteNotice {
            routing_key_rule: self.routing_key_rule.clone(),
            severity: self.severity,
            priority: self.priority.as_ref().map(|(p, _)| p.clone()),
            priority_rule: self.priority.as_ref().map(|(_, rule)| rule.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Url,
    /// Sent with every POST (e.g. Authorization); values are secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretRef>,
    /// First delay after a failed delivery (doubles, with jitter, up to 5m).
    #[serde(default = "webhook_retry_delay", with = "Span")]
    pub retry_delay: Duration,
    /// How long one delivery may take.
    #[serde(default = "webhook_timeout", with = "Span")]
    pub timeout: Duration,
    #[serde(default)]
    pub format: WebhookFormat,
}

/// A dead-man's switch hubwatch pings while it leads and is healthy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// The check's ping URL (it may carry the check's key: it is never logged).
    pub url: Url,
    /// How often; set the service's period to this and its grace to a few more.
    #[serde(default = "heartbeat_every", with = "Span")]
    pub every: Duration,
    #[serde(default)]
    pub method: HeartbeatMethod,
    /// Sent with every ping (an Opsgenie `Authorization: GenieKey …`); values are secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretRef>,
}

fn heartbeat_every() -> Duration {
    secs(60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatMethod {
    #[default]
    Get,
    Post,
}

fn webhook_retry_delay() -> Duration {
    secs(2)
}

fn webhook_timeout() -> Duration {
    secs(30)
}

/// What the webhook's body looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// hubwatch's own JSON object (docs/on-call.md): for helpdesks, chat bridges, scripts.
    #[default]
    Json,
    /// A one-alert list for Alertmanager's `POST /api/v2/alerts`: firing until it ends (`endsAt`).
    Alertmanager,
}

/// A fingerprint of a routing key: enough to tell two keys apart, nothing of the key itself (64 bits of its
/// SHA-256; the key is a random 128-bit value).
pub fn fingerprint(key: &SecretRef) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.expose().as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Config {
    /// The routing key with this [`fingerprint`], wherever the configuration names it (globally, for a hub or
    /// a kind): where an incident's later events go once its trigger went there.
    pub fn routing_key_with(&self, wanted: &str) -> Option<&SecretRef> {
        let global = self.pagerduty.iter().map(|p| &p.routing_key);
        let overrides = self.hubs.iter().filter_map(|h| h.pagerduty.as_ref()).flat_map(HubPaging::routing_keys);
        global.chain(overrides).find(|key| fingerprint(key) == wanted)
    }

    /// The PagerDuty settings of `hub` (and `kind`): the kind's override, the hub's, then the global ones.
    /// `None` without a `pagerduty` section.
    pub fn page_route(&self, hub: &HubName, kind: Option<IncidentKind>) -> Option<PageRoute<'_>> {
        let global = self.pagerduty.as_ref()?;
        let mut route = PageRoute {
            routing_key: &global.routing_key,
            routing_key_rule: "pagerduty.routing_key".into(),
            severity: global.severity,
            priority: global.priority.clone().map(|p| (p, "pagerduty.priority".into())),
        };
        let Some(paging) = self.hub(hub).and_then(|h| h.pagerduty.as_ref()) else { return Some(route) };
        for layer in paging.layers(&format!("hubs[{hub}].pagerduty")) {
            if layer.kind.is_some() && layer.kind != kind {
                continue;
            }
            if let Some(key) = layer.routing_key {
                route.routing_key = key;
                route.routing_key_rule = format!("{}.routing_key", layer.at);
            }
            route.severity = layer.severity.unwrap_or(route.severity);
            if let Some(priority) = layer.priority {
                route.priority = Some((priority.clone(), format!("{}.priority", layer.at)));
            }
        }
        Some(route)
    }

    /// The severity of pages for `hub`'s `kind` incidents (also on the webhook without a pagerduty section).
    pub fn severity(&self, hub: &HubName, kind: IncidentKind) -> Severity {
        PageRoute::severity_of(self.page_route(hub, Some(kind)).as_ref())
    }
}
