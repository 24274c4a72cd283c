//! The real lab (lab/lab.sh): JupyterHub 6 + configurable-http-proxy + jupyter-server/ipykernel + Dask
//! Gateway on 127.0.0.1, with fault flags. Started per test binary, stopped on drop (also on panic).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

pub struct Lab {
    pub dir: PathBuf,
    pub url: String,
    pub env: HashMap<String, String>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Lab {
    /// A lab for a running daemon: every healthy spawn must succeed (a failed one would page), so spawns get
    /// the hub's usual 30 s HTTP timeout and a minute in all.
    pub fn start_for_daemon(name: &str, port: u16, extra: &[(&str, &str)]) -> Lab {
        let mut settings = vec![("SPAWN_HTTP_TIMEOUT", "30"), ("SPAWN_TIMEOUT", "60")];
        settings.extend_from_slice(extra);
        Lab::start_with(name, port, &settings)
    }

    /// Starts a lab in `target/lab-tests/NAME` on ports PORT..PORT+5, with spawner settings overridden
    /// (`SPAWN_HTTP_TIMEOUT`, ...). Spawner timeouts are short so that failure cases end in seconds: the hub
    /// answers spawns at once (202) and gives up on a silent server in 5 s. The short default HTTP timeout makes a crashing server fail fast; under load a healthy server can miss it, so tests
    /// that need every healthy spawn to succeed give it the hub's usual 30 s.
    pub fn start_with(name: &str, port: u16, settings: &[(&str, &str)]) -> Lab {
        let dir = repo().join("target/lab-tests").join(name);
        let mut command = Command::new(repo().join("lab/lab.sh"));
        command
            .args(["start", dir.to_str().unwrap(), &port.to_string()])
            .env("SLOW_SPAWN_TIMEOUT", "1")
            .env("SPAWN_HTTP_TIMEOUT", "5")
            .env("SPAWN_TIMEOUT", "15")
            .env("SPAWN_POLL_INTERVAL", "2");
        for (key, value) in settings {
            command.env(key, value);
        }
        let status = command.status().expect("lab/lab.sh runs");
        assert!(status.success(), "the lab did not start; see {}/hub.log", dir.display());
        let env: HashMap<String, String> = std::fs::read_to_string(dir.join("lab.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Lab { url: env["HUB_URL"].clone(), dir, env }
    }

    pub fn token(&self) -> String {
        self.env["HUBWATCH_TOKEN"].clone()
    }

    /// The first-login check's service token (lab/jupyterhub_config.py).
    pub fn first_login_token(&self) -> String {
        let token = self.token();
        format!("hubwatch-first-login-{}", &token[token.len() - 16..])
    }

    /// Switches a fault on: for one user, or for everyone when `user` is None.
    pub fn set_flag(&self, name: &str, user: Option<&str>, content: &str) {
        let dir = match user {
            Some(u) => self.dir.join("flags").join(u),
            None => self.dir.join("flags"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), content).unwrap();
    }

    pub fn clear_flags(&self) {
        let flags = self.dir.join("flags");
        let _ = std::fs::remove_dir_all(&flags);
        std::fs::create_dir_all(&flags).unwrap();
    }

    /// Sends a signal (STOP, CONT, KILL) to one of the lab's processes (HUB_PID, PROXY_PID, GATEWAY_PID).
    pub fn signal(&self, which: &str, signal: &str) {
        let pid = &self.env[which];
        let status = Command::new("kill").args([&format!("-{signal}"), pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {which}={pid}");
    }

    /// Kills `user`'s single-user server and its kernels (SIGKILL), as when its pod is deleted from outside
    /// or its node goes away: the hub learns it at its next poll. Returns how many processes it killed.
    /// Both are forked by the lab's fork server, which records each by its pid with its user's name while it
    /// runs (lab/labfork.py).
    pub fn kill_server(&self, user: &str) -> usize {
        let records = std::fs::read_dir(self.dir.join("state/forked")).into_iter().flatten().flatten();
        let pids: Vec<String> = records
            .filter(|record| std::fs::read_to_string(record.path()).is_ok_and(|name| name == user))
            .map(|record| record.file_name().to_string_lossy().into_owned())
            .collect();
        pids.iter().filter(|pid| Command::new("kill").args(["-KILL", pid.as_str()]).status().unwrap().success()).count()
    }

    /// The proxy's REST API (configurable-http-proxy on PORT+2) and its token.
    fn proxy_api(&self, path: &str) -> (String, String) {
        let port: u16 = self.url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
        let token = self.token();
        (
            format!("http://127.0.0.1:{}/api/routes{path}", port + 2),
            format!("token lab-proxy-{}", &token[token.len() - 16..]),
        )
    }

    /// The proxy's routing table, as its API lists it.
    pub async fn routes(&self) -> serde_json::Value {
        let (url, auth) = self.proxy_api("");
        let answer = reqwest::Client::new().get(url).header("Authorization", auth).send().await.unwrap();
        answer.json().await.unwrap()
    }

    /// Deletes a route (`/user/probe-3`) as a restarted proxy loses it; returns its target, to put it back.
    pub async fn delete_route(&self, path: &str) -> String {
        let target = self.routes().await[path]["target"].as_str().expect("the route exists").to_string();
        let (url, auth) = self.proxy_api(path);
        let answer = reqwest::Client::new().delete(url).header("Authorization", auth).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 204);
        target
    }

    /// Puts a route back, as the hub does when it checks its routes.
    pub async fn add_route(&self, path: &str, target: &str) {
        let (url, auth) = self.proxy_api(path);
        let body = serde_json::json!({"target": target, "jupyterhub": true});
        let answer = reqwest::Client::new().post(url).header("Authorization", auth).json(&body).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 201);
    }

    /// Asks the hub to start (`POST`) or stop (`DELETE`) `user`'s server, as the user or an admin would (with
    /// hubwatch's service token); the HTTP status of the hub's answer.
    pub async fn ask_server(&self, method: reqwest::Method, user: &str) -> u16 {
        let url = format!("{}/hub/api/users/{user}/server", self.url);
        let request =
            reqwest::Client::new().request(method, url).header("Authorization", format!("token {}", self.token()));
        request.send().await.unwrap().status().as_u16()
    }

    /// Whether `user`'s default server is running (or starting), from the hub's REST API.
    pub async fn has_server(&self, user: &str) -> bool {
        self.servers_of(user).await.get("").is_some()
    }

    /// A token of the probe user itself, minted with hubwatch's service token.
    pub async fn mint_user_token(&self, user: &str) -> String {
        let body = serde_json::json!({"expires_in": 600, "note": "hubwatch tests"});
        let minted = self.answer(reqwest::Method::POST, &format!("hub/api/users/{user}/tokens"), Some(body)).await;
        minted["token"].as_str().expect("the hub minted a token").to_string()
    }

    /// The user's servers as the hub lists them (through hubwatch's service token).
    pub async fn servers_of(&self, user: &str) -> serde_json::Value {
        self.answer(reqwest::Method::GET, &format!("hub/api/users/{user}"), None).await["servers"].clone()
    }

    /// The hub's JSON answer to `method` on `path` (under the hub's URL) with hubwatch's service token.
    async fn answer(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}/{path}", self.url))
            .header("Authorization", format!("token {}", self.token()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// True when the hub lists no server for the user (after waiting up to 10 s for it to forget one).
    pub async fn has_no_server(&self, user: &str) -> bool {
        for _ in 0..20 {
            let servers = self.servers_of(user).await;
            let servers =
                servers.as_object().unwrap_or_else(|| panic!("the user model of {user} has servers: {servers}"));
            if servers.is_empty() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        false
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A frozen process would keep the stop waiting.
        for which in ["PROXY_PID", "GATEWAY_PID", "HUB_PID"] {
            let _ = Command::new("kill").args(["-CONT", &self.env[which]]).status();
        }
        let _ = Command::new(repo().join("lab/lab.sh")).args(["stop", self.dir.to_str().unwrap()]).status();
    }
}
