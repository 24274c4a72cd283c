//! The login capability: the token flow (hubwatch's service token mints a short-lived token for the probe
//! user, who must then be recognised) and the browser's form flow (`_xsrf` cookie and field, POST, 302).

use super::answers::{Text, html_element_text, hub_message};
use super::lane::{Plain, PlainRound, Probe};
use super::round::HubProber;
use super::{Deadline, Stages, user_path};
use crate::config::LoginMethod;
use crate::domain::ProbeOutcome;
use crate::domain::{Capability, Secret, Stage, StepFailure};
use crate::http::{Auth, HttpClient, Response, Target};
use hyper::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, StatusCode};
use std::time::Duration;
use url::Url;

/// Minted probe tokens live an hour and are renewed when less than this is left, so that a token never
/// expires in the middle of a round (server 10 m + kernel 2 m + clean-up).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const RENEW_BEFORE: Duration = Duration::from_secs(1800);

/// A probe user's token as the prober keeps it between rounds.
pub struct CachedToken {
    token: Secret,
    renew_at: tokio::time::Instant,
}

/// Every probe user logs in, on the login interval.
pub(super) fn lane(prober: &HubProber, _: &str) -> Option<Box<dyn Probe>> {
    let round: PlainRound =
        |c, cancel| Box::pin(async move { c.prober.probe_login(&c.user, &cancel).await.into_iter().collect() });
    Some(Box::new(Plain { capability: Capability::Login, every: prober.hub.probes.login.every, round }))
}

impl HubProber {
    /// The login capability for `user`. None when cancelled.
    pub async fn probe_login(&self, user: &str, cancel: &tokio_util::sync::CancellationToken) -> Option<ProbeOutcome> {
        let round = self.round(user, Capability::Login, self.hub.probes.login.timeout);
        let (stages, deadline) = (&round.stages, round.deadline);
        let steps = round
            .steps(cancel, async {
                match &self.hub.login {
                    LoginMethod::Token => self.token_login(user, stages, deadline).await,
                    LoginMethod::Form { password } => {
                        let login = form_login(&self.http, &self.hub.url, user, password, deadline);
                        stages.run(Stage::LoginSubmit, login).await
                    }
                    LoginMethod::OAuth { identity_providers } => {
                        self.token_login(user, stages, deadline).await?;
                        let (http, hub) = (&self.http, &self.hub.url);
                        super::oauth::identity_provider(http, hub, identity_providers, stages, deadline).await
                    }
                }
            })
            .await;
        let duration = round.elapsed();
        round.finish(steps, Ok(()), duration)
    }

    /// The token flow: the (cached or minted) token must name the user, and the login page must render.
    async fn token_login(&self, user: &str, stages: &Stages, deadline: Deadline) -> Result<(), StepFailure> {
        let (token, was_cached) = self.user_token(user, deadline, stages).await?;
        let who =
            |token| async move { whoami(&self.http, &self.hub.url, Auth::Token(&token), None, user, deadline).await };
        let checked = stages.run(Stage::WhoAmI, who(token)).await;
        if checked.is_err() && was_cached {
            // A cached token may have been revoked (a hub database reset): mint afresh once.
            self.forget_token(user).await;
            let (token, _) = self.user_token(user, deadline, stages).await?;
            stages.run(Stage::WhoAmI, who(token)).await?;
        } else {
            checked?;
        }
        stages.run(Stage::LoginPage, async { login_page(&self.http, &self.hub.url, deadline).await.map(|_| ()) }).await
    }

    /// The probe user's token: cached, minted with the service token when missing or due for renewal.
    /// `(token, whether it came from the cache)`.
    pub(super) async fn user_token(
        &self,
        user: &str,
        deadline: Deadline,
        stages: &Stages,
    ) -> Result<(Secret, bool), StepFailure> {
        let slot = self.tokens.get(user).expect("tokens are made for every configured user");
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| tokio::time::Instant::now() < c.renew_at) {
            return Ok((c.token.clone(), true));
        }
        let mint = mint_token(&self.http, &self.hub.url, &self.hub.token, user, TOKEN_LIFETIME, deadline);
        let minted = stages.run(Stage::MintToken, mint).await?;
        let renew_at = tokio::time::Instant::now() + minted.lifetime.saturating_sub(RENEW_BEFORE);
        *cached = Some(CachedToken { token: minted.token.clone(), renew_at });
        Ok((minted.token, false))
    }

    async fn forget_token(&self, user: &str) {
        if let Some(slot) = self.tokens.get(user) {
            *slot.lock().await = None;
        }
    }
}

/// A token minted for a probe user.
pub struct MintedToken {
    pub token: Secret,
    pub lifetime: Duration,
}

/// `POST /hub/api/users/{user}/tokens` with hubwatch's service token.
pub async fn mint_token(
    http: &HttpClient,
    hub: &Url,
    service_token: &Secret,
    user: &str,
    lifetime: Duration,
    deadline: Deadline,
) -> Result<MintedToken, StepFailure> {
    let stage = Stage::MintToken;
    let url = hub_url(hub, &format!("hub/api/users/{}/tokens", user_path(user)));
    let body = serde_json::json!({"note": "hubwatch probe", "expires_in": lifetime.as_secs()});
    let response = http
        .call(Method::POST, url, Auth::Token(service_token), Some(&body), deadline.at)
        .await
        .map_err(|e| deadline.request_failure(stage, e))?;
    match response.status {
        StatusCode::CREATED | StatusCode::OK => {
            #[derive(serde::Deserialize)]
            struct Minted {
                #[serde(default)]
                token: Text,
            }
            let minted: Minted = response.json().map_err(|e| StepFailure::hub(stage, e))?;
            match minted.token.0 {
                Some(token) if !token.is_empty() => Ok(MintedToken { token: Secret::new(token), lifetime }),
                _ => Err(StepFailure::hub(stage, "the hub answered without a token")),
            }
        }
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
            Err(explain_refused_mint(http, hub, service_token, user, deadline).await)
        }
        StatusCode::NOT_FOUND => Err(StepFailure::monitor(
            stage,
            format!("probe user {user:?} does not exist on the hub: create it (and allow it to log in)"),
        )),
        StatusCode::BAD_REQUEST => {
            Err(StepFailure::monitor(stage, format!("the hub refused the token request: {}", response.describe())))
        }
        _ => Err(StepFailure::hub(stage, response.describe())),
    }
}

/// A refused mint is hubwatch's fault either way; say which fix applies.
async fn explain_refused_mint(
    http: &HttpClient,
    hub: &Url,
    service_token: &Secret,
    user: &str,
    deadline: Deadline,
) -> StepFailure {
    let whoami =
        http.call(Method::GET, hub_url(hub, "hub/api/user"), Auth::Token(service_token), None, deadline.at).await;
    let reason = match whoami {
        Ok(r) if r.status == StatusCode::FORBIDDEN || r.status == StatusCode::UNAUTHORIZED => {
            "the hub refused hubwatch's service token (revoked, expired or wrong): issue a new one and update the hub's token secret".to_string()
        }
        _ => format!(
            "hubwatch's service token may not mint tokens for {user:?}: grant its role the scope tokens!user={user} and check that the user exists"
        ),
    };
    StepFailure::monitor(Stage::MintToken, reason)
}

/// `GET /hub/api/user` must answer with the probe user.
pub async fn whoami(
    http: &HttpClient,
    hub: &Url,
    auth: Auth<'_>,
    cookies: Option<&str>,
    user: &str,
    deadline: Deadline,
) -> Result<(), StepFailure> {
    let stage = Stage::WhoAmI;
    let mut request = http.get(hub_url(hub, "hub/api/user")).auth(auth);
    if let Some(cookies) = cookies {
        request = request.header(COOKIE, cookies);
    }
    let response = http.send(request, deadline.at).await.map_err(|e| deadline.request_failure(stage, e))?;
    if response.status != StatusCode::OK {
        return Err(StepFailure::hub(stage, response.describe()));
    }
    #[derive(serde::Deserialize)]
    struct UserModel {
        #[serde(default)]
        name: Text,
    }
    let model: UserModel = response.json().map_err(|e| StepFailure::hub(stage, e))?;
    match model.name.as_deref() {
        Some(name) if name == user => Ok(()),
        Some(other) => Err(StepFailure::hub(
            stage,
            format!("the hub took the login for another user ({other:?}, expected {user:?})"),
        )),
        None => Err(StepFailure::hub(stage, "the hub's user model has no name")),
    }
}

/// `GET /hub/login` must render (or redirect to the identity provider when the hub logs in automatically).
pub async fn login_page(http: &HttpClient, hub: &Url, deadline: Deadline) -> Result<Response, StepFailure> {
    let stage = Stage::LoginPage;
    let response = http
        .call(Method::GET, hub_url(hub, "hub/login"), Auth::None, None, deadline.at)
        .await
        .map_err(|e| deadline.request_failure(stage, e))?;
    let is_html = response.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("html"));
    match response.status {
        StatusCode::OK if is_html => Ok(response),
        StatusCode::OK => Err(StepFailure::hub(stage, "the login page is not HTML")),
        s if s.is_redirection() && response.headers.contains_key(LOCATION) => Ok(response),
        _ => Err(StepFailure::hub(stage, response.describe())),
    }
}

/// The browser's login: the form's `_xsrf` field and cookie, POST, a 302, then `/hub/api/user` with the
/// session cookies. Returns nothing: the cookies are only used to prove the session works.
pub async fn form_login(
    http: &HttpClient,
    hub: &Url,
    user: &str,
    password: &Secret,
    deadline: Deadline,
) -> Result<(), StepFailure> {
    let page = login_page(http, hub, deadline).await?;
    let html = String::from_utf8_lossy(&page.body);
    let mut jar = CookieJar::default();
    jar.absorb(&page);
    let field = input_value(&html, "_xsrf")
        .ok_or_else(|| StepFailure::hub(Stage::LoginPage, "the login page has no login form with an _xsrf field"))?;
    let action = form_action(&html).unwrap_or_else(|| "/hub/login?next=".to_string());
    // The password goes where the form says only if that is the hub.
    let action = super::answers::on_origin(hub, &action)
        .map_err(|why| StepFailure::hub(Stage::LoginPage, format!("the login form's action is not used: {why}")))?;

    let stage = Stage::LoginSubmit;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("_xsrf", &field)
        .append_pair("username", user)
        .append_pair("password", password.expose())
        .finish();
    let request = http
        .post(action)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, jar.header())
        .body(form);
    let response = http.send(request, deadline.at).await.map_err(|e| deadline.request_failure(stage, e))?;
    if !response.status.is_redirection() {
        let message = match html_element_text(&String::from_utf8_lossy(&response.body), "class=\"login_error\"") {
            Some(error) => format!("HTTP {}: {error}", response.status),
            None => response.describe(),
        };
        return Err(StepFailure::hub(stage, message)
            .with_detail("if the probe users' password was changed, update login.password in hubwatch's config"));
    }
    jar.absorb(&response);
    if !jar.has_session() {
        let note = hub_message(&response.headers, &response.body);
        return Err(StepFailure::hub(
            stage,
            format!("HTTP {} but no login cookie was set {note}", response.status).trim().to_string(),
        ));
    }
    whoami(http, hub, Auth::None, Some(&jar.header()), user, deadline).await
}

/// `hub` joined with `path` (relative to it, a query allowed; the hub's URL always ends with a slash and has
/// no query): the URL joining would give, made as text. At thousands of hubs, parsing the URL again (its
/// host's IDNA mapping most of it), then setting its path and parsing it once more as a URI, were a twentieth
/// of hubwatch's CPU (docs/benchmarks.md).
pub fn hub_url(hub: &Url, path: &str) -> HubUrl {
    HubUrl(format!("{}{path}", &hub[..url::Position::AfterPath]))
}

/// A URL on a hub, as [`hub_url`] makes it; parsed once, as the request's URI.
#[derive(Clone, Debug)]
pub struct HubUrl(String);

impl Target for HubUrl {
    fn uri(self) -> Result<hyper::Uri, String> {
        hyper::Uri::try_from(self.0).map_err(|e| format!("the hub's URL cannot be sent ({e})"))
    }
}

impl std::fmt::Display for HubUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The few cookies a login needs, by name (paths do not matter: every request goes to the hub).
#[derive(Default)]
struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    fn absorb(&mut self, response: &Response) {
        for header in response.headers.get_all(SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                let (name, value) = (name.trim().to_string(), value.trim().trim_matches('"').to_string());
                self.cookies.retain(|(n, _)| *n != name);
                self.cookies.push((name, value));
            }
        }
    }

    fn has_session(&self) -> bool {
        self.cookies
            .iter()
            .any(|(n, _)| n.starts_with("jupyterhub-hub-login") || n.starts_with("jupyterhub-session-id"))
    }

    fn header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }
}

/// The value of `<input ... name="NAME" ... value="...">`.
fn input_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    attribute(&html[start..end], "value")
}

fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let end = start + html[start..].find('>')?;
    attribute(&html[start..end], "action").map(|a| a.replace("&amp;", "&"))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let at = tag.find(&marker)? + marker.len();
    let end = at + tag[at..].find('"')?;
    Some(tag[at..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_are_what_joining_gives() {
        let hubs =
            ["http://127.0.0.1:8000/", "https://hub.example.org/jupyter/", "https://Hub.Example.ORG:443/a%20b/?x=1"];
        let paths = [
            "hub/api/user",
            "hub/login",
            "hub/api/users/probe-1/tokens",
            "hub/api/users/n%C3%A9e%2F1/server",
            "hub/api/users?name_filter=hubwatch-first-",
        ];
        for hub in hubs {
            let hub = Url::parse(hub).unwrap();
            for path in paths {
                let joined = hub.join(path).unwrap();
                assert_eq!(hub_url(&hub, path).to_string(), joined.as_str(), "{hub} + {path}");
                assert_eq!(hub_url(&hub, path).uri().unwrap(), joined.uri().unwrap());
            }
        }
    }

    const FORM: &str = r#"<form action="/hub/login?next=%2Fhub%2F&amp;x=1" method="post" role="form">
        <input type="hidden" name="_xsrf" value="2|abc|def"/>
        <input id="username_input" type="text" name="username"/></form>"#;

    #[test]
    fn form_fields_are_found() {
        assert_eq!(input_value(FORM, "_xsrf").as_deref(), Some("2|abc|def"));
        assert_eq!(form_action(FORM).as_deref(), Some("/hub/login?next=%2Fhub%2F&x=1"));
        assert_eq!(input_value(FORM, "password"), None);
    }
}
