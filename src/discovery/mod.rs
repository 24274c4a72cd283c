//! Discovery (optional): the hubs of a cluster, so that a new hub is watched without editing hubwatch's
//! config. A hub is a Deployment labelled `component=hub` (zero-to-jupyterhub); it is named after its
//! namespace; its public URL is the `hubwatch.jupyter.org/url` annotation on the Deployment, else the
//! `proxy-public` Service's load balancer, else that Service's cluster DNS name. Probe users come from
//! `kubernetes.discovery.users` or the Deployment's `hubwatch.jupyter.org/users` annotation. A hub or namespace
//! that `hubs` names explicitly is left alone: explicit config wins.
//!
//! Least privilege: hubwatch's token is one key of a Secret of its own in the hub's namespace (default
//! `hubwatch`; read by name, so RBAC can grant exactly that Secret), or one token hubwatch holds — never z2jh's
//! `hub` Secret, which holds the hub's cookie secret, the proxy's token and every service's token. And since
//! annotations steer where hubwatch sends that token, an annotated URL must be https (http only to loopback or
//! a Service of the hub's own namespace) and name a host of the namespace's Ingresses or of
//! `kubernetes.discovery.allowed_hosts`; a Dask Gateway URL may also name the hub's own host.

use crate::domain::{HubName, Secret};

use crate::config::{DiscoveryConfig, DiscoveryToken, HubConfig};
use crate::kubeapi::{list, timed};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret as KubeSecret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub const URL_ANNOTATION: &str = "hubwatch.jupyter.org/url";
pub const USERS_ANNOTATION: &str = "hubwatch.jupyter.org/users";
pub const DASK_GATEWAY_ANNOTATION: &str = "hubwatch.jupyter.org/dask-gateway-url";
/// `"true"` on a hub's Deployment before it is deleted: its disappearance is then a removal, not an outage.
pub const DECOMMISSIONED_ANNOTATION: &str = "hubwatch.jupyter.org/decommissioned";

pub mod memory;

/// What one look at the cluster found.
#[derive(Debug, Default)]
pub struct Look {
    /// The hubs that can be watched.
    pub hubs: Vec<HubConfig>,
    /// Hubs found that cannot be watched, by name, and why (no token, no URL, …).
    pub unwatchable: std::collections::BTreeMap<HubName, String>,
    /// Hubs marked decommissioned.
    pub decommissioned: std::collections::BTreeSet<HubName>,
    /// Hubs with no public URL (no annotation, no Ingress): probed at proxy-public, past DNS, the ingress and
    /// TLS, where several real outages were.
    pub fallbacks: std::collections::BTreeSet<HubName>,
}
const PROXY_SERVICE: &str = "proxy-public";

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot list hub Deployments{scope}: {reason}")]
    List { scope: String, reason: String },
}

fn annotation<'d>(deployment: &'d Deployment, key: &str) -> Option<&'d str> {
    deployment.metadata.annotations.as_ref()?.get(key).map(String::as_str).filter(|v| !v.trim().is_empty())
}

fn with_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// Where hubwatch may send a hub's token. A namespace's own token (its Secret) may go where the namespace
/// says: its Ingress hosts and Services. The held token works on every hub, so it goes only where the operator
/// said: https to `allowed_hosts` (or loopback), whatever a tenant's Ingress, Service or annotation names.
#[derive(Debug, Clone)]
pub struct TrustedHosts {
    namespace: String,
    /// Host names and `*.domain` wildcards (one label, as Ingress rules read them).
    patterns: Vec<String>,
    /// The token is hubwatch's held one.
    held: bool,
}

impl TrustedHosts {
    pub fn new(namespace: &str, ingress_hosts: Vec<String>, allowed_hosts: &[String], held: bool) -> Self {
        let ingress_hosts = ingress_hosts.into_iter().filter(|_| !held);
        let patterns = ingress_hosts.chain(allowed_hosts.iter().cloned()).collect();
        TrustedHosts { namespace: namespace.to_string(), patterns, held }
    }

    /// Also `host` (the hub's own, for its gateway).
    fn and(&self, host: &str) -> Self {
        let mut trusted = self.clone();
        trusted.patterns.push(host.to_string());
        trusted
    }

    /// Loopback, or (for the namespace's own token) a Service of the hub's namespace (`NAME.NAMESPACE.svc`,
    /// optionally `.cluster.local`).
    fn local(&self, host: &str) -> bool {
        let in_namespace = |domain: &str| {
            host.strip_suffix(domain)
                .and_then(|rest| rest.strip_suffix(&format!(".{}", self.namespace)))
                .is_some_and(|service| !service.is_empty() && !service.contains('.'))
        };
        let loopback = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let service = !self.held && (in_namespace(".svc") || in_namespace(".svc.cluster.local"));
        loopback || host == "localhost" || service
    }

    fn named(&self, host: &str) -> bool {
        self.patterns.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => pattern.eq_ignore_ascii_case(host),
        })
    }

    /// The URL an annotation gives, if hubwatch may send the hub's token there.
    pub fn check(&self, annotation: &str, text: &str) -> Result<Url, String> {
        let url =
            Url::parse(text.trim()).map_err(|e| format!("annotation {annotation} {text:?} is not a URL ({e})"))?;
        let what = format!("annotation {annotation}");
        self.permits(&url, &what).map(|()| with_slash(url))
    }

    /// Whether hubwatch may send the hub's token to `url` (`what` names where the URL came from).
    pub fn permits(&self, url: &Url, what: &str) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let local = self.local(&host);
        let allowed = if self.held {
            "in kubernetes.discovery.allowed_hosts (the held token goes nowhere else)"
        } else {
            "a host of the namespace's Ingresses nor in kubernetes.discovery.allowed_hosts"
        };
        let refused = match url.scheme() {
            _ if !url.username().is_empty() || url.password().is_some() => Some("carries credentials".to_string()),
            "https" if local || self.named(&host) => None,
            "http" if local => None,
            "https" if self.held => Some(format!("names {host}, which is not {allowed}")),
            "https" => Some(format!("names {host}, which is neither {allowed}")),
            "http" => Some(format!(
                "is plain http to {host}: the token would cross the network in clear text (http is only for \
                 loopback{})",
                if self.held { "" } else { " and the Services of the hub's namespace" }
            )),
            _ => Some("is not an http(s) URL".to_string()),
        };
        match refused {
            None => Ok(()),
            Some(why) => Err(format!("{what} {why}; hubwatch does not send the hub's token there")),
        }
    }
}

/// The hosts a namespace's Ingresses serve (rules and TLS).
pub fn ingress_hosts(ingresses: &[Ingress]) -> Vec<String> {
    let mut hosts: Vec<String> = ingresses
        .iter()
        .filter_map(|i| i.spec.as_ref())
        .flat_map(|spec| {
            let rules = spec.rules.iter().flatten().filter_map(|r| r.host.clone());
            let tls = spec.tls.iter().flatten().flat_map(|t| t.hosts.clone().unwrap_or_default());
            rules.chain(tls).collect::<Vec<_>>()
        })
        .map(|h| h.to_ascii_lowercase())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The public URL an Ingress of the namespace serves `proxy-public` at (z2jh's `ingress`): https when the
/// Ingress has TLS for that host.
pub fn ingress_url(ingresses: &[Ingress]) -> Option<Url> {
    ingresses.iter().filter_map(|i| i.spec.as_ref()).find_map(|spec| {
        let rule = spec.rules.iter().flatten().find(|rule| {
            let to_proxy = rule
                .http
                .iter()
                .flat_map(|h| &h.paths)
                .any(|path| path.backend.service.as_ref().is_some_and(|s| s.name == PROXY_SERVICE));
            to_proxy && rule.host.as_ref().is_some_and(|h| !h.starts_with('*'))
        })?;
        let host = rule.host.as_ref()?;
        let tls = spec.tls.iter().flatten().any(|t| t.hosts.iter().flatten().any(|h| h == host));
        Url::parse(&format!("{}://{host}/", if tls { "https" } else { "http" })).ok()
    })
}

/// Where a hub's URL came from; the last two skip the way users come in (DNS, the ingress, TLS), where
/// several real outages were, so discovery says when it has to use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    Annotation,
    Ingress,
    LoadBalancer,
    ClusterDns,
}

/// The hub's public URL: the annotation (if trusted), else the host its Ingress serves, else the
/// proxy-public load balancer, else its cluster DNS name.
pub fn hub_url(deployment: &Deployment, found: &Found<'_>, namespace: &str) -> Result<(Url, UrlSource), String> {
    if let Some(text) = annotation(deployment, URL_ANNOTATION) {
        return found.trusted.check(URL_ANNOTATION, text).map(|url| (url, UrlSource::Annotation));
    }
    if let Some(url) = ingress_url(found.ingresses) {
        return held_may_go(found, url, "the namespace's Ingress URL").map(|url| (url, UrlSource::Ingress));
    }
    let Some(proxy) = found.proxy else {
        return Err(format!(
            "no {URL_ANNOTATION} annotation, no Ingress to {PROXY_SERVICE} and no {PROXY_SERVICE} Service"
        ));
    };
    let https =
        proxy.spec.as_ref().and_then(|s| s.ports.as_ref()).is_some_and(|ports| ports.iter().any(|p| p.port == 443));
    let scheme = if https { "https" } else { "http" };
    let ingress = proxy
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|ingress| ingress.first())
        .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()));
    let source = if ingress.is_some() { UrlSource::LoadBalancer } else { UrlSource::ClusterDns };
    let host = ingress.unwrap_or_else(|| format!("{PROXY_SERVICE}.{namespace}.svc.cluster.local"));
    let url =
        Url::parse(&format!("{scheme}://{host}/")).map_err(|e| format!("{PROXY_SERVICE} gives no usable URL ({e})"))?;
    held_may_go(found, url, &format!("the {PROXY_SERVICE} Service's URL")).map(|url| (url, source))
}

/// `url` (which the namespace chose), if the token may go there: always for the namespace's own token, only
/// to an allowed host for the held one.
fn held_may_go(found: &Found<'_>, url: Url, what: &str) -> Result<Url, String> {
    if found.trusted.held { found.trusted.permits(&url, what).map(|()| url) } else { Ok(url) }
}

/// What discovery found in a hub's namespace besides its Deployment.
pub struct Found<'a> {
    pub proxy: Option<&'a Service>,
    pub ingresses: &'a [Ingress],
    pub token: Option<String>,
    pub trusted: &'a TrustedHosts,
}

/// A discovered hub, or why it cannot be watched.
pub fn hub_from(deployment: &Deployment, found: Found<'_>, settings: &DiscoveryConfig) -> Result<HubConfig, String> {
    let namespace = deployment.metadata.namespace.clone().ok_or("the Deployment has no namespace")?;
    let (url, _) = hub_url(deployment, &found, &namespace)?;
    let token = found.token.filter(|t| !t.trim().is_empty()).ok_or_else(|| match &settings.token {
        // Worded without "token:", which reads as a secret's key to the redactor.
        DiscoveryToken::Secret { name, key } => format!("Secret {name:?} has no key {key:?} (hubwatch's token)"),
        DiscoveryToken::Held(_) => "kubernetes.discovery.token is empty".to_string(),
    })?;
    let users: Vec<String> = match annotation(deployment, USERS_ANNOTATION) {
        Some(list) => list.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect(),
        None => settings.users.clone(),
    };
    if users.len() < 2 {
        return Err(format!("{} probe users; at least two are needed (annotation {USERS_ANNOTATION})", users.len()));
    }
    let gateway_hosts = found.trusted.and(url.host_str().unwrap_or_default());
    let dask_gateway = match annotation(deployment, DASK_GATEWAY_ANNOTATION) {
        None => None,
        Some(text) => Some(crate::config::DaskGatewayConfig {
            from_server: false,
            url: gateway_hosts.check(DASK_GATEWAY_ANNOTATION, text)?,
            cluster_options: Default::default(),
        }),
    };
    let hub = HubConfig::found(&namespace, url, Secret::new(token.trim()), users, settings.probes.clone());
    Ok(HubConfig { namespace: Some(namespace), dask_gateway, cluster: Some(settings.cluster.clone()), ..hub })
}

/// The hubs found now, minus those `explicit` already names (by hub name or namespace). A hub that cannot be
/// watched is logged and reported with its reason; only a failed listing is an error.
pub async fn discover(
    client: &kube::Client,
    settings: &DiscoveryConfig,
    explicit: &[Arc<HubConfig>],
    timeout: Duration,
) -> Result<Look, DiscoveryError> {
    let selector = ListParams::default().labels("component=hub");
    let mut deployments = Vec::new();
    if settings.namespaces.is_empty() {
        let api: Api<Deployment> = Api::all(client.clone());
        let found = list(api, selector, timeout).await;
        deployments = found.map_err(|reason| DiscoveryError::List { scope: String::new(), reason })?;
    } else {
        for namespace in &settings.namespaces {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let found = list(api, selector.clone(), timeout).await;
            let scope = format!(" in {namespace}");
            deployments.extend(found.map_err(|reason| DiscoveryError::List { scope, reason })?);
        }
    }
    deployments.sort_by_key(|d| (d.metadata.namespace.clone(), d.metadata.name.clone()));
    let mut look = Look::default();
    for deployment in &deployments {
        let Some(namespace) = deployment.metadata.namespace.as_deref() else { continue };
        let named = explicit.iter().any(|h| h.name == namespace || h.namespace.as_deref() == Some(namespace));
        if named || look.hubs.iter().any(|h| h.name == namespace) {
            continue;
        }
        if annotation(deployment, DECOMMISSIONED_ANNOTATION) == Some("true") {
            look.decommissioned.insert(HubName::new(namespace));
            continue;
        }
        match look_at(client, deployment, namespace, settings, timeout).await {
            Ok((hub, source)) => {
                if matches!(source, UrlSource::LoadBalancer | UrlSource::ClusterDns) {
                    look.fallbacks.insert(hub.name.clone());
                }
                look.hubs.push(hub);
            }
            Err(reason) => {
                tracing::warn!(namespace, %reason, "a hub was found but cannot be watched");
                look.unwatchable.insert(HubName::new(namespace), reason);
            }
        }
    }
    Ok(look)
}

/// Reads what a hub needs besides its Deployment: its proxy Service, hubwatch's token, and its namespace's
/// Ingresses (the hosts an annotated URL may name, and the public URL when none is annotated).
async fn look_at(
    client: &kube::Client,
    deployment: &Deployment,
    namespace: &str,
    settings: &DiscoveryConfig,
    timeout: Duration,
) -> Result<(HubConfig, UrlSource), String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let ingresses = list(Api::<Ingress>::namespaced(client.clone(), namespace), ListParams::default(), timeout);
    let token = async {
        match &settings.token {
            DiscoveryToken::Held(token) => Ok::<_, String>(Some(token.expose().to_string())),
            DiscoveryToken::Secret { name, key } => {
                let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
                let secret = timed(timeout, secrets.get_opt(name)).await?.ok_or_else(|| {
                    format!("there is no Secret {name:?} (hubwatch's token) in namespace {namespace}")
                })?;
                Ok(secret.data.and_then(|data| data.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())))
            }
        }
    };
    let (proxy, token, ingresses) = tokio::join!(timed(timeout, services.get_opt(PROXY_SERVICE)), token, ingresses);
    let ingresses = ingresses?;
    let held = matches!(settings.token, DiscoveryToken::Held(_));
    let trusted = TrustedHosts::new(namespace, ingress_hosts(&ingresses), &settings.allowed_hosts, held);
    let proxy = proxy?;
    let found = Found { proxy: proxy.as_ref(), ingresses: &ingresses, token: token?, trusted: &trusted };
    let (_, source) = hub_url(deployment, &found, namespace)?;
    Ok((hub_from(deployment, found, settings)?, source))
}

/// Whether two hub lists would be probed the same way (same hubs, URLs, users, tokens and gateways).
pub fn same_hubs(a: &[Arc<HubConfig>], b: &[Arc<HubConfig>]) -> bool {
    let key = |h: &HubConfig| {
        (
            h.name.clone(),
            h.url.to_string(),
            h.users.clone(),
            h.token.expose().to_string(),
            h.dask_gateway.as_ref().map(|g| g.url.to_string()),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> DiscoveryConfig {
        serde_json::from_value(json!({"users": ["hubwatch-probe-1", "hubwatch-probe-2"]})).unwrap()
    }

    fn deployment(annotations: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "hub", "namespace": "temple", "labels": {"component": "hub"}, "annotations": annotations},
            "spec": {"selector": {}, "template": {}},
        }))
        .unwrap()
    }

    fn service(status: serde_json::Value, port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "proxy-public", "namespace": "temple"},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": port}]},
            "status": status,
        }))
        .unwrap()
    }

    fn trusted() -> TrustedHosts {
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "jupyterhub", "namespace": "temple"},
            "spec": {"rules": [{"host": "temple.example.org"}], "tls": [{"hosts": ["*.temple.example.org"]}]},
        }))
        .unwrap();
        TrustedHosts::new("temple", ingress_hosts(&[ingress]), &["hubs.example.net".to_string()], false)
    }

    fn ingress(spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": "jupyterhub", "namespace": "temple"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn the_url_comes_from_the_annotation_then_the_ingress_then_the_load_balancer_then_cluster_dns() {
        let trusted = trusted();
        let url = |deployment: &Deployment, proxy: Option<&Service>, ingresses: &[Ingress]| {
            let found = Found { proxy, ingresses, token: None, trusted: &trusted };
            hub_url(deployment, &found, "temple").map(|(url, source)| (url.to_string(), source))
        };
        let to_proxy = json!({"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "proxy-public", "port": {"name": "http"}}}}]});
        let served = ingress(json!({"rules": [{"host": "temple.example.org", "http": to_proxy}],
            "tls": [{"hosts": ["temple.example.org"], "secretName": "tls"}]}));
        let plain_http = ingress(json!({"rules": [{"host": "lab.temple.example.org", "http": to_proxy}]}));
        let elsewhere = ingress(json!({"rules": [{"host": "grafana.temple.example.org", "http": {"paths": [{
            "path": "/", "pathType": "Prefix", "backend": {"service": {"name": "grafana", "port": {"number": 80}}}}]}}]}));
        let balanced = service(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}), 443);
        let internal = service(json!({}), 80);

        let annotated = deployment(json!({URL_ANNOTATION: "https://temple.example.org"}));
        assert_eq!(
            url(&annotated, Some(&balanced), std::slice::from_ref(&served)).unwrap(),
            ("https://temple.example.org/".into(), UrlSource::Annotation)
        );
        let plain = deployment(json!({}));
        assert_eq!(
            url(&plain, Some(&balanced), &[elsewhere.clone(), served]).unwrap(),
            ("https://temple.example.org/".into(), UrlSource::Ingress)
        );
        assert_eq!(
            url(&plain, Some(&balanced), &[plain_http]).unwrap(),
            ("http://lab.temple.example.org/".into(), UrlSource::Ingress)
        );
        assert_eq!(
            url(&plain, Some(&balanced), std::slice::from_ref(&elsewhere)).unwrap(),
            ("https://203.0.113.7/".into(), UrlSource::LoadBalancer)
        );
        assert_eq!(
            url(&plain, Some(&internal), &[]).unwrap(),
            ("http://proxy-public.temple.svc.cluster.local/".into(), UrlSource::ClusterDns)
        );
        assert!(url(&plain, None, &[elsewhere]).unwrap_err().contains("no proxy-public Service"));
    }

    #[test]
    fn an_annotated_url_must_be_https_to_a_known_host_or_http_within_the_namespace() {
        let trusted = trusted();
        for ok in [
            "https://temple.example.org/",
            "https://lab.temple.example.org/",
            "https://hubs.example.net/temple/",
            "http://proxy-public.temple.svc/",
            "http://proxy-public.temple.svc.cluster.local:8000/",
            "http://127.0.0.1:18500/",
            "https://TEMPLE.example.org/",
        ] {
            assert!(trusted.check(URL_ANNOTATION, ok).is_ok(), "{ok} refused");
        }
        for (refused, why) in [
            ("https://evil.example.com/", "neither a host of the namespace's Ingresses"),
            ("https://a.b.temple.example.org/", "neither a host"),
            ("https://temple.example.org.evil.com/", "neither a host"),
            ("http://temple.example.org/", "plain http"),
            ("http://proxy-public.other.svc/", "plain http"),
            ("http://evil.temple.svc.evil.com/", "plain http"),
            ("https://u:p@temple.example.org/", "carries credentials"),
            ("ftp://temple.example.org/", "not an http(s) URL"),
            ("not a url", "is not a URL"),
        ] {
            let error = trusted.check(URL_ANNOTATION, refused).unwrap_err();
            assert!(error.contains(why), "{refused}: {error}");
            assert!(!error.contains("u:p"), "{error}");
        }
    }

    #[test]
    fn the_held_token_goes_only_over_https_to_allowed_hosts_whatever_a_tenant_says() {
        let to_proxy = json!({"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "proxy-public", "port": {"name": "http"}}}}]});
        let hostile = ingress(json!({"rules": [{"host": "evil.example", "http": to_proxy}]}));
        let hostile_tls = ingress(json!({"rules": [{"host": "evil.example", "http": to_proxy}],
            "tls": [{"hosts": ["evil.example"], "secretName": "tls"}]}));
        let held = TrustedHosts::new(
            "tenant",
            ingress_hosts(std::slice::from_ref(&hostile_tls)),
            &["*.hubs.example.net".into()],
            true,
        );
        let url = |deployment: &Deployment, proxy: Option<&Service>, ingresses: &[Ingress]| {
            let found = Found { proxy, ingresses, token: Some("held".into()), trusted: &held };
            hub_url(deployment, &found, "tenant").map(|(url, _)| url.to_string())
        };
        let plain = deployment(json!({}));
        for ingresses in [&hostile, &hostile_tls] {
            let refused = url(&plain, None, std::slice::from_ref(ingresses)).unwrap_err();
            assert!(
                refused.contains("the held token goes nowhere else") || refused.contains("plain http"),
                "{refused}"
            );
        }
        let balanced = service(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}), 443);
        assert!(url(&plain, Some(&balanced), &[]).is_err(), "a tenant's load balancer");
        let internal = service(json!({}), 80);
        assert!(url(&plain, Some(&internal), &[]).unwrap_err().contains("plain http"), "a tenant's Service");
        let annotated = |to: &str| deployment(json!({URL_ANNOTATION: to}));
        assert!(url(&annotated("https://evil.example/"), None, &[hostile_tls]).is_err(), "its annotation");
        assert!(url(&annotated("http://proxy-public.tenant.svc/"), None, &[]).is_err(), "its Service by name");
        assert_eq!(
            url(&annotated("https://tenant.hubs.example.net/"), None, &[]).unwrap(),
            "https://tenant.hubs.example.net/"
        );
        assert!(url(&annotated("http://tenant.hubs.example.net/"), None, &[]).is_err(), "never in clear text");
        assert_eq!(url(&annotated("http://127.0.0.1:18500/"), None, &[]).unwrap(), "http://127.0.0.1:18500/");
    }

    #[test]
    fn a_gateway_may_also_be_on_the_hubs_own_host() {
        let found = |trusted: &TrustedHosts, url: &str, gateway: &str| {
            let annotated = deployment(json!({URL_ANNOTATION: url, DASK_GATEWAY_ANNOTATION: gateway}));
            hub_from(&annotated, Found { proxy: None, ingresses: &[], token: Some("t".into()), trusted }, &settings())
        };
        let own = TrustedHosts::new("temple", vec![], &["hubs.example.net".into()], false);
        let hub =
            found(&own, "https://hubs.example.net/temple", "https://hubs.example.net/services/dask-gateway").unwrap();
        assert_eq!(hub.dask_gateway.unwrap().url.as_str(), "https://hubs.example.net/services/dask-gateway/");
        let elsewhere = found(&own, "https://hubs.example.net/temple", "https://gateway.example.com/").unwrap_err();
        assert!(elsewhere.contains("hubwatch.jupyter.org/dask-gateway-url names gateway.example.com"), "{elsewhere}");
    }

    #[test]
    fn a_hub_needs_a_token_and_two_users_and_takes_them_from_annotations() {
        let trusted = trusted();
        let found = |token: Option<&str>| Found {
            proxy: None,
            ingresses: &[],
            token: token.map(String::from),
            trusted: &trusted,
        };
        let annotated = deployment(json!({URL_ANNOTATION: "https://temple.example.org", USERS_ANNOTATION: "a, b"}));
        let hub = hub_from(&annotated, found(Some("token\n")), &settings()).unwrap();
        assert_eq!((hub.name.as_str(), hub.namespace.as_deref()), ("temple", Some("temple")));
        assert_eq!(hub.users, ["a", "b"]);
        assert_eq!(hub.token.expose(), "token");
        assert_eq!(hub.cluster.as_deref(), Some("local"), "discovered hubs share the cluster hubwatch runs in");
        let missing = hub_from(&annotated, found(None), &settings()).unwrap_err();
        assert!(missing.contains("Secret \"hubwatch\" has no key \"token\""), "{missing}");
        let one = deployment(json!({URL_ANNOTATION: "https://temple.example.org", USERS_ANNOTATION: "a"}));
        assert!(hub_from(&one, found(Some("t")), &settings()).unwrap_err().contains("at least two"));
    }
}
