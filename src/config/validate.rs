//! The rules that span keys, once the file has the schema's shape: secrets read (`{env}`, `{file}`), paths
//! and URLs made whole, every hub's probe settings in force, and what one key needs of another (three users
//! for a kept server, a renew deadline under the lease duration, a priority needs a REST token, …). Every
//! problem is reported, each with its key path.

use super::StatusUpdatesConfig;
use super::probes::merged;
use super::{Config, DiscoveryToken, EnvLookup, Hash, HubConfig, KernelCell, LoginMethod, ProbeSettings, SecretRef};
use crate::domain::{HubName, Secret};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use url::Url;

/// z2jh's Secret: the hub's cookie secret, the proxy's token and every service's token. Never hubwatch's.
const Z2JH_HUB_SECRET: &str = "hub";
const NEEDS_REST: &str = "needs pagerduty.api_token and from_email: the priority is set through PagerDuty's REST API";

struct Rules<'a> {
    dir: &'a Path,
    env: EnvLookup<'a>,
    problems: Vec<(String, String)>,
}

/// `config` with its secrets read and every rule checked; `hubs_given`: the file has a `hubs` key.
pub fn validate(
    mut config: Config,
    dir: &Path,
    env: EnvLookup,
    hubs_given: bool,
) -> Result<Config, Vec<(String, String)>> {
    let mut rules = Rules { dir, env, problems: Vec::new() };
    config.state_path = dir.join(&config.state_path);
    rules.web(&mut config);
    rules.pagerduty(&mut config);
    rules.kubernetes(&mut config);
    let defaults = rules.probes(&ProbeSettings::default(), &config.defaults.probes, "defaults.probes");
    if let Some(discovery) = &mut config.kubernetes.discovery {
        discovery.probes = defaults.clone();
    }
    let discovering = config.kubernetes.enabled && config.kubernetes.discovery.is_some();
    if config.hubs.is_empty() && !discovering {
        let problem = if hubs_given { "at least one hub is required" } else { "is required" };
        rules.add("hubs", problem);
    }
    let mut hubs = std::mem::take(&mut config.hubs);
    for (i, hub) in hubs.iter_mut().enumerate() {
        // Just read: nothing else holds it yet, so this never copies.
        rules.hub(Arc::make_mut(hub), &format!("hubs[{i}]"), &defaults);
    }
    rules.shared_hubs(&hubs);
    // Read with room to grow (a doubling vector): 7 MB spare at 5,000 hubs, given back.
    hubs.shrink_to_fit();
    config.hubs = hubs;
    rules.paging(&config);
    if let Some(webhook) = &mut config.webhook {
        webhook.url = rules.url(&webhook.url, "webhook.url", false);
        rules.headers(&mut webhook.headers, "webhook.headers");
    }
    rules.peers(&mut config);
    if let Some(heartbeat) = &mut config.heartbeat {
        heartbeat.url = rules.url(&heartbeat.url, "heartbeat.url", false);
        rules.headers(&mut heartbeat.headers, "heartbeat.headers");
    }
    rules.high_availability(&mut config);
    if config.incidents.fold.min_hubs == 1 {
        rules.add(
            "incidents.fold.min_hubs",
            "1 would make every clustered hub's incident a cluster incident: use 0 (off) or at least 2",
        );
    }
    if rules.problems.is_empty() { Ok(config) } else { Err(rules.problems) }
}

impl Rules<'_> {
    fn add(&mut self, path: &str, problem: impl Into<String>) {
        self.problems.push((path.to_string(), problem.into()));
    }

    /// Peers: named like hubs, never like one of them (their incidents share the namespace), each once.
    fn peers(&mut self, config: &mut Config) {
        let mut names: HashSet<HubName> = config.hubs.iter().map(|h| h.name.clone()).collect();
        for (i, peer) in config.peers.iter_mut().enumerate() {
            let path = format!("peers[{i}]");
            if !names.insert(peer.name.clone()) {
                self.add(&format!("{path}.name"), format!("{:?} is already the name of a hub or a peer", peer.name));
            }
            peer.url = self.url(&peer.url, &format!("{path}.url"), true);
        }
    }

    /// Headers whose values are secrets: valid names, values read.
    fn headers(&mut self, headers: &mut std::collections::BTreeMap<String, SecretRef>, path: &str) {
        for (name, value) in headers {
            let path = format!("{path}.{name}");
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.add(&path, "not a valid HTTP header name");
            }
            self.secret(value, &path);
        }
    }

    /// Reads `secret` from where it points; reports (never quoting it) when it cannot.
    fn secret(&mut self, secret: &mut SecretRef, path: &str) {
        let value = match (&secret.env, &secret.file) {
            (Some(name), _) => match (self.env)(name) {
                Some(v) if !v.trim().is_empty() => Ok(v),
                Some(_) => Err((format!("{path}.env"), format!("environment variable {name} is empty"))),
                None => Err((format!("{path}.env"), format!("environment variable {name} is not set"))),
            },
            (None, Some(file)) => {
                let full = self.dir.join(file);
                match std::fs::read_to_string(&full) {
                    Ok(v) if !v.trim().is_empty() => Ok(v),
                    Ok(_) => Err((format!("{path}.file"), format!("secret file {} is empty", full.display()))),
                    Err(e) => Err((format!("{path}.file"), format!("cannot read secret file {}: {e}", full.display()))),
                }
            }
            (None, None) => Err((path.to_string(), "is required".to_string())),
        };
        match value {
            Ok(v) => *secret = SecretRef { value: Secret::new(v.trim()), ..secret.clone() },
            Err((at, problem)) => self.add(&at, problem),
        }
    }

    /// A routing key: a secret of 32 characters (only its length is ever said).
    fn routing_key(&mut self, key: &mut SecretRef, path: &str) {
        self.secret(key, path);
        let length = key.expose().len();
        if length != 0 && length != 32 {
            self.add(path, format!("a routing key has 32 characters, this one has {length}"));
        }
    }

    /// An http(s) URL without credentials, query or fragment; a base (`joined`) ends with a slash.
    fn url(&mut self, url: &Url, path: &str, joined: bool) -> Url {
        let problem = if !matches!(url.scheme(), "http" | "https") {
            Some("must start with http:// or https://")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("must not carry credentials; use token instead")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("must not have a query or fragment")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.add(path, format!("{problem} (found {})", redact_url(url)));
        }
        let mut url = url.clone();
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&if joined {
            format!("{trimmed}/")
        } else if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed
        });
        url
    }

    fn web(&mut self, config: &mut Config) {
        for (user, hash) in &mut config.web.basic_auth_users {
            let path = format!("web.basic_auth_users.{user}");
            if user.is_empty() || user.contains(':') {
                self.add(&path, "a user name may not be empty or hold ':'");
            }
            if let Hash::Secret(secret) = hash {
                self.secret(secret, &path);
            }
            let text = hash.text();
            // Never quote what was given: it may be a password written where its hash belongs.
            if !text.is_empty() && !is_bcrypt(text) {
                self.add(&path, "expected a bcrypt hash ($2b$12$..., see `hubwatch hash-password`)");
            }
        }
        let costs: std::collections::BTreeSet<&str> =
            config.web.basic_auth_users.values().filter_map(|h| h.text().get(4..6)).collect();
        if costs.len() > 1 {
            let costs: Vec<&str> = costs.into_iter().collect();
            self.add("web.basic_auth_users", format!("every hash needs the same bcrypt cost (found {}): the time a login takes would tell which users exist; make them again with `hubwatch hash-password`", costs.join(" and ")));
        }
        for (i, host) in config.web.hosts.iter().enumerate() {
            if host.starts_with("*.") || !host_pattern(host) {
                self.add(&format!("web.hosts[{i}]"), format!("{host:?} is not a host name (no port, no wildcard)"));
            }
        }
        if let Some(tls) = &mut config.web.tls {
            for (key, file) in [("cert_file", &mut tls.cert_file), ("key_file", &mut tls.key_file)] {
                *file = self.dir.join(&*file);
                if !file.is_file() {
                    self.add(&format!("web.tls.{key}"), format!("{} is not a readable file", file.display()));
                }
            }
        }
    }

    fn pagerduty(&mut self, config: &mut Config) {
        let Some(pd) = &mut config.pagerduty else { return };
        self.routing_key(&mut pd.routing_key, "pagerduty.routing_key");
        pd.events_url = self.url(&pd.events_url, "pagerduty.events_url", false);
        pd.api_url = self.url(&pd.api_url, "pagerduty.api_url", false);
        if let Some(url) = &pd.change_events_url {
            pd.change_events_url = Some(self.url(url, "pagerduty.change_events_url", false));
        }
        if let Some(email) = &pd.from_email {
            let looks_like_email = email.split_once('@').is_some_and(|(name, domain)| {
                !name.is_empty() && domain.contains('.') && !email.chars().any(char::is_whitespace)
            });
            if !looks_like_email {
                self.add(
                    "pagerduty.from_email",
                    format!("{email:?} is not an email address (PagerDuty needs a user's email in From)"),
                );
            }
        }
        match (&mut pd.api_token, &pd.from_email) {
            (Some(token), Some(from_email)) => {
                self.secret(token, "pagerduty.api_token");
                pd.status_updates = Some(StatusUpdatesConfig {
                    api_token: Secret::new(token.expose()),
                    from_email: from_email.clone(),
                    every: pd.status_update_every,
                    api_url: pd.api_url.clone(),
                    read_back_every: pd.read_back_every,
                });
            }
            (None, None) => {}
            (Some(_), None) => self.add(
                "pagerduty.from_email",
                "required with api_token: PagerDuty's REST API needs the email of a PagerDuty user in From",
            ),
            (None, Some(_)) => {
                self.add("pagerduty.api_token", "required with from_email (status notes need a REST API token)")
            }
        }
    }

    /// `priority` anywhere needs the REST API, and hub overrides need the global section they override.
    fn paging(&mut self, config: &Config) {
        let rest = config.pagerduty.as_ref().is_some_and(|p| p.status_updates.is_some());
        let mut priorities: Vec<(String, String)> = Vec::new();
        priorities.extend(
            config.pagerduty.as_ref().and_then(|p| p.priority.clone()).map(|p| ("pagerduty.priority".into(), p)),
        );
        for (i, hub) in config.hubs.iter().enumerate() {
            let Some(paging) = &hub.pagerduty else { continue };
            let path = format!("hubs[{i}].pagerduty");
            if config.pagerduty.is_none() {
                self.add(&path, "needs the top-level pagerduty section (it overrides its settings)");
            }
            for layer in paging.layers(&path) {
                priorities.extend(layer.priority.map(|p| (format!("{}.priority", layer.at), p.clone())));
            }
        }
        for (at, priority) in priorities {
            if !rest {
                self.add(&at, NEEDS_REST);
            }
            if priority.len() > 64 || priority.chars().any(char::is_control) {
                self.add(&at, "a priority's name: at most 64 printable characters, as in PagerDuty (e.g. P1)");
            }
        }
    }

    fn kubernetes(&mut self, config: &mut Config) {
        let Some(discovery) = &mut config.kubernetes.discovery else { return };
        const PATH: &str = "kubernetes.discovery";
        if discovery.enabled && discovery.users.len() < 2 {
            self.add(
                &format!("{PATH}.users"),
                "at least two probe users are needed for discovered hubs (one user alone never makes an incident)",
            );
        }
        if let Some(host) = discovery.allowed_hosts.iter().find(|h| !host_pattern(h)) {
            self.add(&format!("{PATH}.allowed_hosts"), format!("{host:?} is not a host name or a *.domain wildcard"));
        }
        let (name, key) = (discovery.token_secret.clone(), discovery.token_key.clone());
        match &mut discovery.held_token {
            Some(_) if name.is_some() || key.is_some() => {
                self.add(&format!("{PATH}.token"), "give either token or token_secret/token_key, not both")
            }
            Some(held) => {
                self.secret(held, &format!("{PATH}.token"));
                discovery.token = DiscoveryToken::Held(Secret::new(held.expose()));
            }
            None if name.as_deref() == Some(Z2JH_HUB_SECRET) => self.add(
                &format!("{PATH}.token_secret"),
                "z2jh's hub Secret holds the hub's cookie secret, the proxy's token and every service's token; \
                 hubwatch reads only a Secret of its own: put its token in one (default name hubwatch, key token)",
            ),
            None => {
                let name = name.unwrap_or_else(|| "hubwatch".into());
                discovery.token = DiscoveryToken::Secret { name, key: key.unwrap_or_else(|| "token".into()) };
            }
        }
        if !discovery.enabled {
            config.kubernetes.discovery = None;
        }
    }

    fn hub(&mut self, hub: &mut HubConfig, path: &str, defaults: &ProbeSettings) {
        hub.url = self.url(&hub.url, &format!("{path}.url"), true);
        if let Some(gateway) = &mut hub.dask_gateway {
            gateway.url = self.url(&gateway.url, &format!("{path}.dask_gateway.url"), true);
        }
        if let Some(first) = &mut hub.first_login {
            self.secret(&mut first.token, &format!("{path}.first_login.token"));
        }
        if let Some(binder) = &mut hub.binderhub {
            binder.url = self.url(&binder.url, &format!("{path}.binderhub.url"), true);
            if let Some(token) = &mut binder.token {
                self.secret(token, &format!("{path}.binderhub.token"));
            }
        }
        self.secret(&mut hub.token, &format!("{path}.token"));
        if let LoginMethod::Form { password } = &mut hub.login {
            self.secret(password, &format!("{path}.login.password"));
        }
        if let Some(paging) = &mut hub.pagerduty {
            if let Some(key) = &mut paging.routing_key {
                self.routing_key(key, &format!("{path}.pagerduty.routing_key"));
            }
            for (kind, over) in paging.kinds.each_mut() {
                if let Some(key) = over.as_mut().and_then(|o| o.routing_key.as_mut()) {
                    self.routing_key(key, &format!("{path}.pagerduty.kinds.{}.routing_key", kind.as_str()));
                }
            }
        }
        self.users(&hub.users, &format!("{path}.users"));
        self.profiles(hub, path);
        hub.probes = self.probes(defaults, &hub.probe_overrides, &format!("{path}.probes"));
        if let Some(cells) = &hub.kernel_cells {
            self.kernel_cells(cells, &format!("{path}.kernel_cells"));
            hub.probes.kernel.cells = cells.clone();
        }
        if hub.sentinel.is_some() && hub.users.len() < 3 {
            let found = hub.users.len();
            self.add(&format!("{path}.sentinel"), format!("a kept server needs three probe users (found {found}): the last keeps its server, the others go on starting theirs"));
        }
    }

    /// `over` written over `base`, with the kernel's one cell from `code` and `expect`.
    fn probes(&mut self, base: &ProbeSettings, over: &serde_json::Value, path: &str) -> ProbeSettings {
        let mut settings = merged(base, over).unwrap_or_else(|e| {
            self.add(path, e.to_string());
            base.clone()
        });
        let kernel = &mut settings.kernel;
        let cell = KernelCell { code: kernel.code.clone(), expect: Some(kernel.expect.clone()), expect_regex: None };
        kernel.cells = vec![cell];
        settings
    }

    /// Profiles: distinct names, at least one user each, and no probe user twice on the hub.
    fn profiles(&mut self, hub: &HubConfig, path: &str) {
        let mut names = HashSet::new();
        let mut users: HashSet<&str> = hub.users.iter().map(String::as_str).collect();
        for (i, profile) in hub.profiles.iter().enumerate() {
            let at = format!("{path}.profiles[{i}]");
            if !names.insert(profile.name.as_str()) {
                self.add(&format!("{at}.name"), format!("duplicate profile {:?}", profile.name));
            }
            if profile.users.is_empty() {
                self.add(&format!("{at}.users"), "a profile needs at least one probe user of its own");
            }
            for (j, user) in profile.users.iter().enumerate() {
                if !users.insert(user) {
                    self.add(
                        &format!("{at}.users[{j}]"),
                        format!(
                            "{user:?} is already a probe user of this hub: a profile's users start only its servers"
                        ),
                    );
                }
            }
        }
    }

    fn users(&mut self, users: &[String], path: &str) {
        let mut seen = HashSet::new();
        if let Some(i) = users.iter().position(|u| !seen.insert(u)) {
            self.add(&format!("{path}[{i}]"), format!("duplicate probe user {:?}", users[i]));
        }
        if users.len() < 2 {
            let found = users.len();
            self.add(path, format!("at least two probe users are needed, so that one probe user alone never makes an incident (found {found})"));
        }
    }

    fn kernel_cells(&mut self, cells: &[KernelCell], path: &str) {
        if cells.is_empty() {
            self.add(path, "at least one cell is needed (leave kernel_cells out for the default 5 * 4)");
        }
        for (i, cell) in cells.iter().enumerate() {
            if cell.expect.is_some() && cell.expect_regex.is_some() {
                self.add(&format!("{path}[{i}]"), "give either expect or expect_regex, not both");
            }
        }
    }

    /// No duplicate names; two entries for one hub share no probe user (they would stop each other's servers).
    fn shared_hubs(&mut self, hubs: &[Arc<HubConfig>]) {
        let mut names = HashSet::new();
        for (i, hub) in hubs.iter().enumerate() {
            if !names.insert(&hub.name) {
                self.add(&format!("hubs[{i}].name"), format!("duplicate hub name {:?}", hub.name));
            }
            for (j, user) in hub.users.iter().enumerate() {
                if let Some(other) = hubs[..i].iter().find(|h| h.url == hub.url && h.users.contains(user)) {
                    self.add(&format!("hubs[{i}].users[{j}]"), format!("probe user {user:?} is also a probe user of hub {:?} at the same URL; give each entry its own probe users", other.name));
                }
            }
        }
    }

    /// client-go's rules: the leader stops (renew deadline) before a standby may take over (lease duration),
    /// with several renewal attempts (retry period) within the deadline.
    fn high_availability(&mut self, config: &mut Config) {
        let Some(ha) = &mut config.high_availability else { return };
        if !ha.enabled {
            config.high_availability = None;
            return;
        }
        if ha.renew_deadline >= ha.lease_duration {
            self.add(
                "high_availability.renew_deadline",
                "must be shorter than lease_duration: the leader has to stop before a standby may take over",
            );
        }
        if ha.retry_period.mul_f64(1.2) >= ha.renew_deadline {
            self.add(
                "high_availability.retry_period",
                "must be well under renew_deadline (client-go: renew_deadline > 1.2 x retry_period)",
            );
        }
        if !config.kubernetes.enabled {
            self.add(
                "high_availability",
                "needs kubernetes.enabled: true (the lease and the state live in the cluster)",
            );
        }
        if ha.namespace.is_empty() {
            match (self.env)("POD_NAMESPACE").filter(|n| !n.is_empty()) {
                Some(namespace) => ha.namespace = namespace,
                None => self.add(
                    "high_availability.namespace",
                    "missing: set it, or POD_NAMESPACE in the environment (the Helm chart does)",
                ),
            }
        }
        ha.identity =
            (self.env)("HOSTNAME").filter(|h| !h.is_empty()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        ha.call_timeout = config.kubernetes.call_timeout;
    }
}

/// A bcrypt hash as Prometheus' web config takes it: `$2a$`, `$2b$` or `$2y$`, a cost, 53 characters.
fn is_bcrypt(hash: &str) -> bool {
    let parts: Vec<&str> = hash.splitn(4, '$').collect();
    matches!(parts.as_slice(), ["", "2a" | "2b" | "2y", cost, rest]
        if cost.len() == 2 && cost.chars().all(|c| c.is_ascii_digit()) && rest.len() == 53)
}

/// A host name (`hub.example.org`) or a wildcard of one label (`*.example.org`).
fn host_pattern(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

/// A URL for messages: scheme, host and path only.
pub fn redact_url(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bcrypt_hashes_are_recognised_and_passwords_are_not() {
        assert!(super::is_bcrypt("$2b$12$PBh0ZC8CnQzWkqL5dlJNV.BCBz6g4e.Xf0rGX.DkZgtv0mgHAe4fG"));
        assert!(!super::is_bcrypt("hunter2"));
        assert!(!super::is_bcrypt("$2b$12$short"));
    }
}
