//! Diagnostics against the Kubernetes stand-in: golden kubectl-style text for realistic incidents, canary
//! secrets never in the output, and an API server that is down, slow or denies access.

use crate::support::apiserver::ApiServer;
use crate::support::golden::assert_golden;
use crate::support::k8s_fixtures::{self, CANARY, NAMESPACE, Trouble};
use hubwatch::diagnostics::collect::{Request, collect};
use hubwatch::domain::IncidentKind;
use hubwatch::redact::Redactor;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

async fn client_for(server: &ApiServer) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = server.start().await;
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

fn request(kind: IncidentKind, users: &[&str], call_timeout: Duration) -> Request {
    Request {
        namespace: NAMESPACE.into(),
        kind,
        users: users.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>(),
        log_lines: 50,
        call_timeout,
        autoscaler: Some(("kube-system".into(), "cluster-autoscaler-status".into())),
    }
}

async fn diagnostics_of(trouble: Trouble, kind: IncidentKind, users: &[&str]) -> String {
    let server = ApiServer::default();
    k8s_fixtures::load(&server, trouble, k8s_fixtures::now());
    let client = client_for(&server).await;
    let redactor = Arc::new(Redactor::knowing(["hubwatch-0123456789abcdef0123456789abcdef"]));
    let diagnostics =
        collect(&client, request(kind, users, Duration::from_secs(5)), redactor, k8s_fixtures::now()).await;
    let text = diagnostics.render();
    assert!(!text.contains(CANARY), "a planted secret leaked:\n{text}");
    for secret in k8s_fixtures::PLANTED {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(!text.contains("canary-kube-token"), "{text}");
    text
}

/// The diagnostics of a hub access incident of `users` in `trouble`: each of `expected` in them, and the whole
/// as `golden` has it.
async fn shows(trouble: Trouble, users: &[&str], expected: &[&str], golden: &str) {
    let text = diagnostics_of(trouble, IncidentKind::HubAccess, users).await;
    crate::support::golden::assert_contains_all(&text, expected);
    assert_golden(golden, &text);
}

#[tokio::test]
async fn node_pool_full_shows_pending_pods_their_scheduling_events_and_the_pressured_node() {
    let expected = [
        "jupyter-alice           0/1     Pending",
        "FailedScheduling",
        "NotTriggerScaleUp",
        "$ kubectl -n temple describe pod jupyter-alice",
        "MemoryPressure=True",
    ];
    shows(Trouble::NodePoolFull, &["alice", "bob"], &expected, "diagnostics-node-pool-full.txt").await;
}

/// cluster-autoscaler 1.30's status while the GPU pool cannot grow (the cloud's quota).
const AUTOSCALER_STATUS: &str = include_str!("../fixtures/autoscaler-status.yaml");

#[tokio::test]
async fn pods_waiting_for_a_node_show_the_autoscalers_status_and_why_it_adds_none() {
    let server = ApiServer::default();
    k8s_fixtures::load(&server, Trouble::NodePoolFull, k8s_fixtures::now());
    let status_map = |namespace: &str| {
        serde_json::json!({"metadata": {"name": "cluster-autoscaler-status", "namespace": namespace},
            "data": {"status": AUTOSCALER_STATUS}})
    };
    server.put("configmaps", status_map("kube-system"));
    let client = client_for(&server).await;
    let redactor = Arc::new(Redactor::knowing(Vec::<String>::new()));
    let collected = |request: Request| collect(&client, request, redactor.clone(), k8s_fixtures::now());
    let diagnostics = collected(request(IncidentKind::HubAccess, &["alice", "bob"], Duration::from_secs(5))).await;
    let text = diagnostics.render();
    crate::support::golden::assert_contains_all(
        &text,
        &[
            "$ kubectl -n kube-system get configmap cluster-autoscaler-status -o jsonpath={.data.status}\ntime: ",
            "errorCode: QUOTA_EXCEEDED",
            "Likely cause: the cluster autoscaler cannot add nodes: `node group gpu-pool: adding nodes failed \
             (QUOTA_EXCEEDED: Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in region us-central1.); backing off",
        ],
    );
    assert!(
        server.requests().iter().any(|r| r == "/api/v1/namespaces/kube-system/configmaps/cluster-autoscaler-status"),
        "read by name, never listed: {:?}",
        server.requests()
    );

    // Switched off, or written elsewhere than hubwatch looks: no section, and the scheduler's words are the cause.
    for place in [None, Some(("autoscaling".to_string(), "cluster-autoscaler-status".to_string()))] {
        let quiet =
            Request { autoscaler: place, ..request(IncidentKind::HubAccess, &["alice"], Duration::from_secs(5)) };
        let text = collected(quiet).await.render();
        assert!(!text.contains("cluster-autoscaler-status"), "{text}");
        assert!(text.contains("Likely cause: no node has room for the pods"), "{text}");
    }
    // Readable but refused: said in the section, the rest collected.
    server.forbid("configmaps");
    let text = collected(request(IncidentKind::HubAccess, &["alice"], Duration::from_secs(5))).await.render();
    assert!(
        text.contains("get configmap cluster-autoscaler-status -o jsonpath={.data.status}\n(not collected: "),
        "{text}"
    );
}

#[tokio::test]
async fn broken_image_shows_image_pull_backoff_and_the_pull_error() {
    let expected = ["ImagePullBackOff", "failed to pull and unpack image"];
    shows(Trouble::BrokenImage, &["carol", "erin"], &expected, "diagnostics-broken-image.txt").await;
}

#[tokio::test]
async fn hub_oom_killed_shows_crash_loop_the_termination_and_the_previous_logs() {
    let expected = [
        "CrashLoopBackOff",
        "6 (2m50s ago)",
        "$ kubectl -n temple logs -l component=hub --tail=50 --prefix --previous",
        "Loading 14212 users",
    ];
    shows(Trouble::HubOomKilled, &["alice", "bob"], &expected, "diagnostics-hub-oom-killed.txt").await;
}

#[tokio::test]
async fn proxy_restarting_shows_restarts_and_the_crashed_proxy_log() {
    let expected = ["7 (95s ago)", "JavaScript heap out of memory"];
    shows(Trouble::ProxyRestarting, &["alice", "bob"], &expected, "diagnostics-proxy-restarting.txt").await;
}

#[tokio::test]
async fn denied_resources_are_named_and_the_rest_is_collected() {
    let server = ApiServer::default();
    k8s_fixtures::load(&server, Trouble::NodePoolFull, k8s_fixtures::now());
    server.forbid("nodes");
    let client = client_for(&server).await;
    let diagnostics = collect(
        &client,
        request(IncidentKind::HubAccess, &["alice"], Duration::from_secs(5)),
        Arc::new(Redactor::new()),
        k8s_fixtures::now(),
    )
    .await;
    let text = diagnostics.render();
    assert!(
        text.contains("$ kubectl get nodes\n(not collected: nodes is forbidden: User \"system:serviceaccount:hubwatch:hubwatch\" cannot list resource \"nodes\" in API group \"\" at the cluster scope (HTTP 403))"),
        "{text}"
    );
    assert!(text.contains("jupyter-alice"), "{text}");
}

#[tokio::test]
async fn an_api_server_that_is_down_or_slow_gives_sections_that_say_so_within_the_deadline() {
    let server = ApiServer::default();
    k8s_fixtures::load(&server, Trouble::NodePoolFull, k8s_fixtures::now());
    server.set_down(true);
    let client = client_for(&server).await;
    let down = collect(
        &client,
        request(IncidentKind::HubAccess, &["alice"], Duration::from_secs(2)),
        Arc::new(Redactor::new()),
        k8s_fixtures::now(),
    )
    .await;
    assert!(down.sections.iter().all(|s| s.output.is_err()), "{:?}", down.sections);
    let text = down.render();
    // kube-rs retries 503s with backoff; the deadline ends the retries and the section says so.
    assert!(text.contains("(not collected: the Kubernetes API did not answer within 2s)"), "{text}");

    server.set_down(false);
    server.set_delay(Some(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let slow = collect(
        &client,
        request(IncidentKind::HubAccess, &["alice"], Duration::from_millis(500)),
        Arc::new(Redactor::new()),
        k8s_fixtures::now(),
    )
    .await;
    // Five list calls at once, then each log selector in turn: a handful of deadlines, never the 30 s delay.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(slow.render().contains("the Kubernetes API did not answer within 500ms"), "{}", slow.render());
}

#[tokio::test]
async fn dask_gateway_incidents_show_the_gateway_its_clusters_and_their_users() {
    let server = ApiServer::default();
    let t = k8s_fixtures::now();
    k8s_fixtures::load(&server, Trouble::NodePoolFull, t);
    k8s_fixtures::load_dask(&server, t);
    let client = client_for(&server).await;
    let text = collect(
        &client,
        request(IncidentKind::DaskGateway, &["alice", "bob"], Duration::from_secs(5)),
        Arc::new(Redactor::new()),
        t,
    )
    .await
    .render();
    assert!(text.contains("$ kubectl -n temple get pods -o wide -l app.kubernetes.io/name=dask-gateway"), "{text}");
    assert!(text.contains("api-temple-dask-gateway-6b8f9c7d5-h2k9x"), "{text}");
    assert!(text.contains("8f14e45fceea167a5a36dedd4bea2543   alice   Pending"), "{text}");
    assert!(text.contains("dask-scheduler-8f14e45fceea167a5a36dedd4bea2543"), "{text}");
    assert!(!text.contains(CANARY), "{text}");
    assert_golden("diagnostics-dask-gateway.txt", &text);
}

#[tokio::test]
async fn a_crowded_namespace_is_listed_in_pages_and_a_flooding_log_read_in_bounded_bytes() {
    let server = ApiServer::default();
    let t = k8s_fixtures::now();
    k8s_fixtures::load(&server, Trouble::NodePoolFull, t);
    // 1,200 events: three pages of 500.
    for i in 0..1_200u64 {
        let message = format!("crowd event {i:04}");
        let age = 3_600 - i;
        server.put(
            "events",
            k8s_fixtures::event(
                t,
                &format!("crowd{i}"),
                "Pod",
                "jupyter-dave",
                "Normal",
                "Pulled",
                &message,
                age,
                age,
                1,
                "kubelet",
            ),
        );
    }
    // A hub that logs 4 KB lines: 50 of them are 200 KB, more than is read.
    let line = format!("[W 2026-11-24 09:59:00.000 JupyterHub app:1] {}", "x".repeat(4_000));
    server.set_log("hub-7d9f8b6c5-x2k4p", "hub", false, &format!("{line}\n").repeat(60));
    let client = client_for(&server).await;
    let text = collect(
        &client,
        request(IncidentKind::HubAccess, &["alice"], Duration::from_secs(5)),
        Arc::new(Redactor::new()),
        t,
    )
    .await
    .render();
    let requests = server.requests();
    for page in ["limit=500", "continue=offset-500&limit=500", "continue=offset-1000&limit=500"] {
        assert!(
            requests.iter().any(|r| r.starts_with("/api/v1/namespaces/temple/events?") && r.contains(page)),
            "{page}: {requests:?}"
        );
    }
    assert!(text.contains("crowd event 1199"), "the newest event, from the last page, is listed:\n{text}");
    assert!(
        requests.iter().any(|r| r.contains("/pods/hub-7d9f8b6c5-x2k4p/log?") && r.contains("limitBytes=131072")),
        "{requests:?}"
    );
    let hub_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("[pod/hub-7d9f8b6c5-x2k4p/hub] [W")).collect();
    assert!(!hub_lines.is_empty(), "{text}");
    assert!(
        hub_lines.iter().all(|l| l.len() == "[pod/hub-7d9f8b6c5-x2k4p/hub] ".len() + line.len()),
        "no line cut short"
    );
}

/// A probe user's server that fails because its home is full says so only in its own log: the diagnostics
/// show that log and name the cause.
#[tokio::test]
async fn a_probe_users_own_server_log_is_shown_and_a_full_home_named_as_the_likely_cause() {
    let server = ApiServer::default();
    let t = k8s_fixtures::now();
    k8s_fixtures::load(&server, Trouble::BrokenImage, t);
    server.put("pods", k8s_fixtures::running_user_pod("probe-1", t));
    server.set_log(
        "jupyter-probe-1",
        "notebook",
        false,
        "[I 2026-11-24 09:59:50.000 ServerApp] Writing Jupyter server cookie secret to /home/jovyan/.local/share/jupyter/runtime/jupyter_cookie_secret\n\
         [C 2026-11-24 09:59:50.100 ServerApp] Bad config encountered during initialization: [Errno 28] No space left on device: '/home/jovyan/.local/share/jupyter/runtime'\n",
    );
    server.set_log("jupyter-dave", "notebook", false, "[I 2026-11-24 09:00:00.000 ServerApp] dave is fine\n");
    let client = client_for(&server).await;
    let text = collect(
        &client,
        request(IncidentKind::HubAccess, &["probe-1"], Duration::from_secs(5)),
        Arc::new(Redactor::new()),
        t,
    )
    .await
    .render();
    assert!(text.contains("$ kubectl -n temple logs -l component=singleuser-server --tail=50 --prefix\n[pod/jupyter-probe-1/notebook] [I"), "{text}");
    assert!(!text.contains("dave is fine"), "only the affected users' servers: {text}");
    assert!(
        text.contains("Likely cause: a home directory (or another volume) is full: `[pod/jupyter-probe-1/notebook] [C 2026-11-24 09:59:50.100 ServerApp] Bad config encountered during initialization: [Errno 28] No space left on device"),
        "{text}"
    );
}
