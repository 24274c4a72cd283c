//! Discovery (optional): the hubs of a cluster, so that a new hub is watched without editing hubwatch's
//! config. A hub is a Deployment labelled `component=hub` (zero-to-jupyterhub); it is named after its
//! namespace; its public URL is the `hubwatch.jupyter.org/url` annotation on the Deployment, else the
//! `proxy-public` Service's load balancer, else that Service's cluster DNS name; hubwatch's service token is
//! one key of one Secret in its namespace (read by name: RBAC can allow exactly that Secret). Probe users come
//! from `kubernetes.discovery.users` or the Deployment's `hubwatch.jupyter.org/users` annotation. A hub or
//! namespace that `hubs` names explicitly is left alone: explicit config wins.

use crate::domain::Secret;

use crate::config::{DiscoveryConfig, HubConfig, LoginMethod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret as KubeSecret, Service};
use kube::api::{Api, ListParams};
use std::time::Duration;
use url::Url;

pub const URL_ANNOTATION: &str = "hubwatch.jupyter.org/url";
pub const USERS_ANNOTATION: &str = "hubwatch.jupyter.org/users";
pub const DASK_GATEWAY_ANNOTATION: &str = "hubwatch.jupyter.org/dask-gateway-url";
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

/// The hub's public URL: the annotation, else the proxy-public load balancer, else its cluster DNS name.
pub fn hub_url(deployment: &Deployment, proxy: Option<&Service>, namespace: &str) -> Result<Url, String> {
    if let Some(text) = annotation(deployment, URL_ANNOTATION) {
        let url = Url::parse(text).map_err(|e| format!("annotation {URL_ANNOTATION} {text:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("annotation {URL_ANNOTATION} {text:?} is not an http(s) URL"));
        }
        return Ok(with_slash(url));
    }
    let Some(proxy) = proxy else {
        return Err(format!("no {URL_ANNOTATION} annotation and no {PROXY_SERVICE} Service"));
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
    let host = ingress.unwrap_or_else(|| format!("{PROXY_SERVICE}.{namespace}.svc.cluster.local"));
    Url::parse(&format!("{scheme}://{host}/")).map_err(|e| format!("{PROXY_SERVICE} gives no usable URL ({e})"))
}

/// A discovered hub, or why it cannot be watched.
pub fn hub_from(
    deployment: &Deployment,
    proxy: Option<&Service>,
    token: Option<String>,
    settings: &DiscoveryConfig,
) -> Result<HubConfig, String> {
    let namespace = deployment.metadata.namespace.clone().ok_or("the Deployment has no namespace")?;
    let url = hub_url(deployment, proxy, &namespace)?;
    let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        format!("no hubwatch token: Secret {:?} has no key {:?}", settings.token_secret, settings.token_key)
    })?;
    let users: Vec<String> = match annotation(deployment, USERS_ANNOTATION) {
        Some(list) => list.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect(),
        None => settings.users.clone(),
    };
    if users.len() < 2 {
        return Err(format!("{} probe users; at least two are needed (annotation {USERS_ANNOTATION})", users.len()));
    }
    let dask_gateway = match annotation(deployment, DASK_GATEWAY_ANNOTATION) {
        None => None,
        Some(text) => Some(crate::config::DaskGatewayConfig {
            url: with_slash(Url::parse(text).map_err(|e| format!("annotation {DASK_GATEWAY_ANNOTATION}: {e}"))?),
            cluster_options: Default::default(),
        }),
    };
    Ok(HubConfig {
        name: namespace.clone(),
        url,
        namespace: Some(namespace),
        token: Secret::new(token.trim()),
        users,
        login: LoginMethod::Token,
        dask_gateway,
        probes: settings.probes.clone(),
    })
}

async fn timed<T>(timeout: Duration, call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
    }
}

/// The hubs found now, minus those `explicit` already names (by hub name or namespace). A hub that cannot be
/// watched is logged and left out until the next look; only a failed listing is an error.
pub async fn discover(
    client: &kube::Client,
    settings: &DiscoveryConfig,
    explicit: &[HubConfig],
    timeout: Duration,
) -> Result<Vec<HubConfig>, DiscoveryError> {
    let selector = ListParams::default().labels("component=hub");
    let mut deployments = Vec::new();
    if settings.namespaces.is_empty() {
        let api: Api<Deployment> = Api::all(client.clone());
        let list = timed(timeout, api.list(&selector)).await;
        deployments = list.map_err(|reason| DiscoveryError::List { scope: String::new(), reason })?.items;
    } else {
        for namespace in &settings.namespaces {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let list = timed(timeout, api.list(&selector)).await;
            let scope = format!(" in {namespace}");
            deployments.extend(list.map_err(|reason| DiscoveryError::List { scope, reason })?.items);
        }
    }
    deployments.sort_by_key(|d| (d.metadata.namespace.clone(), d.metadata.name.clone()));
    let mut hubs: Vec<HubConfig> = Vec::new();
    for deployment in &deployments {
        let Some(namespace) = deployment.metadata.namespace.as_deref() else { continue };
        let named = explicit.iter().any(|h| h.name == namespace || h.namespace.as_deref() == Some(namespace));
        if named || hubs.iter().any(|h| h.name == namespace) {
            continue;
        }
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
        let (proxy, secret) = tokio::join!(
            timed(timeout, services.get_opt(PROXY_SERVICE)),
            timed(timeout, secrets.get_opt(&settings.token_secret))
        );
        let found = proxy.and_then(|proxy| {
            let token = secret?
                .and_then(|s| s.data?.get(&settings.token_key).map(|b| String::from_utf8_lossy(&b.0).into_owned()));
            hub_from(deployment, proxy.as_ref(), token, settings)
        });
        match found {
            Ok(hub) => hubs.push(hub),
            Err(reason) => tracing::warn!(namespace, %reason, "a hub was found but cannot be watched"),
        }
    }
    Ok(hubs)
}

/// Whether two hub lists would be probed the same way (same hubs, URLs, users, tokens and gateways).
pub fn same_hubs(a: &[HubConfig], b: &[HubConfig]) -> bool {
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
    use crate::config::ProbeSettings;
    use serde_json::json;

    fn settings() -> DiscoveryConfig {
        DiscoveryConfig {
            namespaces: vec![],
            users: vec!["hubwatch-probe-1".into(), "hubwatch-probe-2".into()],
            token_secret: "hub".into(),
            token_key: "hub.services.hubwatch.apiToken".into(),
            every: Duration::from_secs(300),
            probes: ProbeSettings::default(),
        }
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

    #[test]
    fn the_url_comes_from_the_annotation_then_the_load_balancer_then_cluster_dns() {
        let annotated = deployment(json!({URL_ANNOTATION: "https://temple.example.org"}));
        assert_eq!(hub_url(&annotated, None, "temple").unwrap().as_str(), "https://temple.example.org/");
        let plain = deployment(json!({}));
        let balanced = service(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}), 443);
        assert_eq!(hub_url(&plain, Some(&balanced), "temple").unwrap().as_str(), "https://203.0.113.7/");
        let internal = service(json!({}), 80);
        assert_eq!(
            hub_url(&plain, Some(&internal), "temple").unwrap().as_str(),
            "http://proxy-public.temple.svc.cluster.local/"
        );
        assert!(hub_url(&plain, None, "temple").unwrap_err().contains("no proxy-public Service"));
        let bad = deployment(json!({URL_ANNOTATION: "ftp://x"}));
        assert!(hub_url(&bad, None, "temple").unwrap_err().contains("not an http(s) URL"));
    }

    #[test]
    fn a_hub_needs_a_token_and_two_users_and_takes_them_from_annotations() {
        let annotated = deployment(json!({URL_ANNOTATION: "https://temple.example.org", USERS_ANNOTATION: "a, b"}));
        let hub = hub_from(&annotated, None, Some("token\n".into()), &settings()).unwrap();
        assert_eq!((hub.name.as_str(), hub.namespace.as_deref()), ("temple", Some("temple")));
        assert_eq!(hub.users, ["a", "b"]);
        assert_eq!(hub.token.expose(), "token");
        assert!(hub_from(&annotated, None, None, &settings()).unwrap_err().contains("no hubwatch token"));
        let one = deployment(json!({URL_ANNOTATION: "https://t.example.org", USERS_ANNOTATION: "a"}));
        assert!(hub_from(&one, None, Some("t".into()), &settings()).unwrap_err().contains("at least two"));
    }
}
