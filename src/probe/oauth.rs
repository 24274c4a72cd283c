//! The identity provider, for hubs that log in through OAuth (`login: {method: oauth}`): an expired client
//! secret, a changed callback URL or a provider outage locks every user out, and no token-based probe sees it.
//! `GET /hub/oauth_login` must redirect to the provider's authorize URL, and the provider must serve that page
//! without an error: a 4xx/5xx, an OAuth error (`redirect_uri_mismatch`, `invalid_client`, …) in the page or
//! in a redirect back, fails `login` in the provider's words. Nothing is sent to the provider but that GET —
//! no token, no cookie, no password — and its redirects are not followed. The hub chooses where that GET
//! goes, so it goes only to an origin `identity_providers` names, or, without them, over https to a public
//! address: never loopback, link-local (the cloud's metadata service), private or cluster-internal.

use super::answers::hub_message;
use super::login::hub_url;
use super::{Deadline, Stages};
use crate::domain::wording::truncate;
use crate::domain::{Stage, StepFailure};
use crate::http::{Auth, HttpClient, Response};
use hyper::Method;
use hyper::header::LOCATION;
use std::net::IpAddr;
use url::{Host, Url};

/// The OAuth errors a provider names in its authorize page or its redirect (RFC 6749 4.1.2.1, and the
/// providers' own `redirect_uri_mismatch`).
const OAUTH_ERRORS: &[&str] = &[
    "redirect_uri_mismatch",
    "invalid_client",
    "unauthorized_client",
    "invalid_request",
    "invalid_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
];

/// `/hub/oauth_login`, then the provider's authorize page.
pub async fn identity_provider(
    http: &HttpClient,
    hub: &Url,
    providers: &[Url],
    stages: &Stages,
    deadline: Deadline,
) -> Result<(), StepFailure> {
    let authorize = stages.run(Stage::OAuthLogin, authorize_url(http, hub, deadline)).await?;
    let visit = async {
        may_visit(&authorize, providers).await.map_err(|why| StepFailure::hub(Stage::Authorize, why))?;
        authorize_page(http, &authorize, deadline).await
    };
    stages.run(Stage::Authorize, visit).await
}

/// Whether the check may GET `url`, where the hub redirected it: an origin of `providers`, or without them
/// https to a host whose every address is public.
async fn may_visit(url: &Url, providers: &[Url]) -> Result<(), String> {
    let origin = url.origin().ascii_serialization();
    let refused =
        |why: &str| Err(format!("/hub/oauth_login redirected to {origin}, {why}; hubwatch does not go there"));
    if !providers.is_empty() {
        if providers.iter().any(|p| p.origin() == url.origin()) {
            return Ok(());
        }
        return refused("which is not one of login.identity_providers");
    }
    if url.scheme() != "https" {
        return refused("which is not https (name it in login.identity_providers to allow it)");
    }
    let addresses: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![ip.into()],
        Some(Host::Ipv6(ip)) => vec![ip.into()],
        Some(Host::Domain(name)) if internal_name(name) => return refused("a cluster-internal name"),
        Some(Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(443);
            match tokio::net::lookup_host((name, port)).await {
                Ok(found) => found.map(|a| a.ip()).collect(),
                Err(e) => return Err(format!("the identity provider {name} cannot be resolved ({e})")),
            }
        }
        None => return refused("which has no host"),
    };
    match addresses.iter().find(|ip| !public(**ip)) {
        Some(ip) => refused(&format!(
            "which is at {ip}, not a public address (name it in login.identity_providers to allow it)"
        )),
        None => Ok(()),
    }
}

/// `localhost`, a Service's or node's name: never an identity provider on the internet.
fn internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || [".localhost", ".local", ".svc", ".internal", ".cluster.local"].iter().any(|s| name.ends_with(s))
        || !name.contains('.')
}

/// An address on the internet: not loopback, link-local, private, shared (CGNAT), unspecified or multicast.
fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(v4.into()),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

async fn authorize_url(http: &HttpClient, hub: &Url, deadline: Deadline) -> Result<Url, StepFailure> {
    let stage = Stage::OAuthLogin;
    let answer = http
        .call(Method::GET, hub_url(hub, "hub/oauth_login"), Auth::None, None, deadline.at)
        .await
        .map_err(|e| deadline.request_failure(stage, e))?;
    let location = answer.headers.get(LOCATION).and_then(|v| v.to_str().ok());
    match (answer.status.is_redirection(), location) {
        (true, Some(location)) => hub.join(location).map_err(|e| {
            StepFailure::hub(stage, format!("/hub/oauth_login redirected to something that is not a URL ({e})"))
        }),
        _ => Err(StepFailure::hub(
            stage,
            format!("/hub/oauth_login did not redirect to the identity provider: {}", answer.describe()),
        )),
    }
}

async fn authorize_page(http: &HttpClient, url: &Url, deadline: Deadline) -> Result<(), StepFailure> {
    let stage = Stage::Authorize;
    let provider = url.host_str().unwrap_or("the identity provider").to_string();
    let answer = http.call(Method::GET, url.clone(), Auth::None, None, deadline.at).await.map_err(|e| {
        let failure = deadline.request_failure(stage, e);
        StepFailure { reason: format!("the identity provider {provider}: {}", failure.reason), ..failure }
    })?;
    match refusal(&answer) {
        None => Ok(()),
        Some(why) => Err(StepFailure::hub(stage, format!("the identity provider {provider} refused the login: {why}"))),
    }
}

/// Why the provider's answer refuses the login, if it does.
fn refusal(answer: &Response) -> Option<String> {
    if answer.status.is_redirection() {
        let location = answer.headers.get(LOCATION).and_then(|v| v.to_str().ok())?;
        let back = Url::parse(location).ok()?;
        let field = |name: &str| back.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        let error = field("error")?;
        let description = field("error_description").map(|d| format!(": {d}")).unwrap_or_default();
        return Some(truncate(&format!("{error}{description}"), 300));
    }
    if !answer.status.is_success() {
        return Some(answer.describe());
    }
    let page = String::from_utf8_lossy(&answer.body);
    let named = OAUTH_ERRORS.iter().find(|code| page.contains(**code))?;
    let words = hub_message(&answer.headers, &answer.body);
    Some(if words.is_empty() { named.to_string() } else { format!("{named}: {words}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[tokio::test]
    async fn the_check_goes_only_to_configured_origins_or_public_https() {
        let url = |text: &str| Url::parse(text).unwrap();
        let refused = async |text: &str, providers: &[Url]| may_visit(&url(text), providers).await.unwrap_err();
        for internal in [
            "https://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1/authorize",
            "https://10.0.0.5/authorize",
            "https://[::1]/authorize",
            "https://[fd00::1]/authorize",
            "https://[::ffff:169.254.169.254]/",
            "https://100.64.0.1/",
            "https://keycloak.auth.svc.cluster.local/authorize",
            "https://localhost/authorize",
            "https://metadata/computeMetadata",
        ] {
            let why = refused(internal, &[]).await;
            assert!(why.contains("hubwatch does not go there"), "{internal}: {why}");
        }
        assert!(refused("http://github.com/login/oauth/authorize", &[]).await.contains("not https"));
        assert!(may_visit(&url("https://203.0.113.9/authorize"), &[]).await.is_ok(), "a public address");
        let configured = [url("http://127.0.0.1:8080")];
        assert!(may_visit(&url("http://127.0.0.1:8080/authorize?x=1"), &configured).await.is_ok(), "configured");
        let other = refused("https://github.com/login/oauth/authorize", &configured).await;
        assert!(other.contains("not one of login.identity_providers") && !other.contains("authorize"), "{other}");
    }
    use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

    fn answer(status: u16, headers: &[(hyper::header::HeaderName, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        Response { status: StatusCode::from_u16(status).unwrap(), headers: map, body: body.as_bytes().to_vec().into() }
    }

    #[test]
    fn a_login_page_passes_and_every_kind_of_refusal_is_quoted() {
        assert_eq!(refusal(&answer(200, &[(CONTENT_TYPE, "text/html")], "<html><title>Sign in</title></html>")), None);
        let back =
            "https://hub.example.org/hub/oauth_callback?error=invalid_client&error_description=Client+secret+expired";
        assert_eq!(
            refusal(&answer(302, &[(LOCATION, back)], "")).as_deref(),
            Some("invalid_client: Client secret expired")
        );
        let json = r#"{"error": "redirect_uri_mismatch", "error_description": "The redirect_uri MUST match"}"#;
        let refused = refusal(&answer(400, &[(CONTENT_TYPE, "application/json")], json)).unwrap();
        assert!(refused.starts_with("HTTP 400 Bad Request"), "{refused}");
        let page = "<html><title>Error 400: redirect_uri_mismatch</title><body>redirect_uri_mismatch</body></html>";
        let refused = refusal(&answer(200, &[(CONTENT_TYPE, "text/html")], page)).unwrap();
        assert_eq!(refused, "redirect_uri_mismatch: Error 400: redirect_uri_mismatch");
        assert!(refusal(&answer(503, &[], "")).unwrap().starts_with("HTTP 503"));
    }
}
