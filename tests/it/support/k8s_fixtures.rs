//! Realistic cluster states for the Kubernetes stand-in, shaped as kube-apiserver returns them (z2jh labels
//! and annotations, KubeSpawner pod names, the scheduler's and kubelet's event wording): node pool out of
//! capacity (user pods Pending, FailedScheduling / NotTriggerScaleUp), a broken user image, the hub
//! OOMKilled at start-up, the proxy restarting. Canary secrets are planted in logs, env and messages.

use super::apiserver::ApiServer;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NAMESPACE: &str = "temple";
/// Planted in logs, env and annotations; must never appear in anything hubwatch outputs.
pub const CANARY: &str = "canary5f3e9a1b7c2d4e6f8091a2b3c4d5e6f7";

/// 2026-11-24T10:00:00Z: the fixtures' "now", so golden text has stable ages.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_514_400)
}

pub fn ago(at: SystemTime, seconds: u64) -> String {
    humantime::format_rfc3339_seconds(at - Duration::from_secs(seconds)).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    NodePoolFull,
    BrokenImage,
    HubOomKilled,
    ProxyRestarting,
}

fn running_container(name: &str, image: &str, started: &str, restarts: u32, last: Option<Value>) -> Value {
    let mut status = json!({
        "name": name, "image": image, "imageID": format!("{image}@sha256:4f1d"), "ready": true,
        "restartCount": restarts, "started": true,
        "state": {"running": {"startedAt": started}}, "lastState": {},
        "containerID": "containerd://9b1c",
    });
    if let Some(last) = last {
        status["lastState"] = last;
    }
    status
}

fn oom_killed(started: &str, finished: &str) -> Value {
    json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": started, "finishedAt": finished,
                          "containerID": "containerd://77aa"}})
}

fn pod(name: &str, labels: Value, annotations: Value, created: &str, spec: Value, status: Value) -> Value {
    json!({
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
            "creationTimestamp": created, "labels": labels, "annotations": annotations,
        },
        "spec": spec,
        "status": status,
    })
}

fn hub_pod(t: SystemTime, trouble: Trouble) -> Value {
    let spec = json!({
        "containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                        "env": [{"name": "CONFIGPROXY_AUTH_TOKEN", "value": CANARY}],
                        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}}],
        "nodeName": "pool-a-1", "serviceAccountName": "hub",
    });
    let status = if trouble == Trouble::HubOomKilled {
        json!({
            "phase": "Running", "podIP": "10.8.0.12", "podIPs": [{"ip": "10.8.0.12"}], "startTime": ago(t, 86_400),
            "conditions": [
                {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"},
                {"type": "ContainersReady", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.1.0", "imageID": "", "ready": false,
                "restartCount": 6, "started": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 2m40s restarting failed container=hub pod=hub-7d9f8b6c5-x2k4p_temple(uid)"}},
                "lastState": oom_killed(&ago(t, 200), &ago(t, 170)),
            }],
        })
    } else {
        json!({
            "phase": "Running", "podIP": "10.8.0.12", "podIPs": [{"ip": "10.8.0.12"}], "startTime": ago(t, 86_400),
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                           {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [running_container("hub", "quay.io/jupyterhub/k8s-hub:4.1.0", &ago(t, 86_000), 0, None)],
        })
    };
    pod(
        "hub-7d9f8b6c5-x2k4p",
        json!({"app": "jupyterhub", "component": "hub", "release": "temple"}),
        json!({"checksum/config-map": "5e2c"}),
        &ago(t, 86_400),
        spec,
        status,
    )
}

fn proxy_pod(t: SystemTime, trouble: Trouble) -> Value {
    let (restarts, last) =
        if trouble == Trouble::ProxyRestarting { (7, Some(oom_killed(&ago(t, 400), &ago(t, 95)))) } else { (0, None) };
    pod(
        "proxy-5c7d9f7b8-qwz9t",
        json!({"app": "jupyterhub", "component": "proxy", "release": "temple"}),
        json!({}),
        &ago(t, 86_400),
        json!({"containers": [{"name": "chp", "image": "quay.io/jupyterhub/configurable-http-proxy:4.6.2",
                               "env": [{"name": "CONFIGPROXY_AUTH_TOKEN", "value": CANARY}]}],
               "nodeName": "pool-a-2"}),
        json!({
            "phase": "Running", "podIP": "10.8.1.7", "podIPs": [{"ip": "10.8.1.7"}], "startTime": ago(t, 86_400),
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [running_container(
                "chp", "quay.io/jupyterhub/configurable-http-proxy:4.6.2", &ago(t, 94), restarts, last)],
        }),
    )
}

fn user_pod(t: SystemTime, user: &str, age: u64, status: Value, node: Option<&str>) -> Value {
    let mut spec = json!({
        "containers": [{"name": "notebook", "image": "quay.io/temple/notebook:2026.11",
                        "env": [{"name": "JUPYTERHUB_API_TOKEN", "value": CANARY}],
                        "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}}}],
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    pod(
        &format!("jupyter-{user}"),
        json!({"app": "jupyterhub", "component": "singleuser-server", "hub.jupyter.org/servername": "",
               "hub.jupyter.org/username": user}),
        json!({"hub.jupyter.org/username": user}),
        &ago(t, age),
        spec,
        status,
    )
}

fn pending_unschedulable(t: SystemTime, age: u64) -> Value {
    json!({
        "phase": "Pending", "qosClass": "Burstable",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient memory.",
                        "lastTransitionTime": ago(t, age)}],
    })
}

fn image_pull_backoff(t: SystemTime, age: u64) -> Value {
    json!({
        "phase": "Pending", "podIP": "10.8.2.31", "podIPs": [{"ip": "10.8.2.31"}], "startTime": ago(t, age),
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"},
                       {"type": "ContainersReady", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{
            "name": "notebook", "image": "quay.io/temple/notebook:2026.11", "imageID": "", "ready": false,
            "restartCount": 0, "started": false,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": "Back-off pulling image \"quay.io/temple/notebook:2026.11\""}},
            "lastState": {},
        }],
    })
}

fn running_user(t: SystemTime, age: u64) -> Value {
    json!({
        "phase": "Running", "podIP": "10.8.2.40", "podIPs": [{"ip": "10.8.2.40"}], "startTime": ago(t, age),
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [running_container("notebook", "quay.io/temple/notebook:2026.11", &ago(t, age - 20), 0, None)],
    })
}

#[allow(clippy::too_many_arguments)]
pub fn event(
    t: SystemTime,
    name: &str,
    kind: &str,
    object: &str,
    type_: &str,
    reason: &str,
    message: &str,
    first: u64,
    last: u64,
    count: u32,
    component: &str,
) -> Value {
    json!({
        "metadata": {"name": format!("{object}.{name}"), "namespace": NAMESPACE, "creationTimestamp": ago(t, first)},
        "involvedObject": {"kind": kind, "namespace": NAMESPACE, "name": object, "apiVersion": "v1"},
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component},
        "firstTimestamp": ago(t, first), "lastTimestamp": ago(t, last), "count": count,
        "reportingComponent": component, "reportingInstance": "",
    })
}

fn node(t: SystemTime, name: &str, memory_pressure: bool) -> Value {
    json!({
        "metadata": {"name": name, "creationTimestamp": ago(t, 40 * 86_400),
                     "labels": {"kubernetes.io/hostname": name, "cloud.google.com/gke-nodepool": "user-pool",
                                "hub.jupyter.org/node-purpose": "user"}},
        "spec": {"podCIDR": "10.8.0.0/24"},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": if memory_pressure { "True" } else { "False" },
                 "reason": if memory_pressure { "KubeletHasInsufficientMemory" } else { "KubeletHasSufficientMemory" },
                 "message": if memory_pressure { "kubelet has insufficient memory available" } else { "kubelet has sufficient memory available" }},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
            ],
            "nodeInfo": {"kubeletVersion": "v1.31.4-gke.1256000", "osImage": "Container-Optimized OS",
                         "kernelVersion": "6.1.100", "containerRuntimeVersion": "containerd://1.7.24",
                         "architecture": "amd64", "operatingSystem": "linux", "machineID": "m", "systemUUID": "s",
                         "bootID": "b", "kubeProxyVersion": ""},
        },
    })
}

fn pvc(t: SystemTime, name: &str, size: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": ago(t, 30 * 86_400)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                 "storageClassName": "standard-rwo", "volumeName": format!("pvc-{name}-0a1b"), "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
    })
}

const HUB_LOG: &str = "[I 2026-11-24 09:58:01.120 JupyterHub log:192] 200 GET /hub/api/users/alice/server/progress (alice@10.8.2.1) 45012.31ms
[W 2026-11-24 09:58:30.004 JupyterHub base:1245] User alice is slow to start (timeout=300)
[I 2026-11-24 09:59:02.501 JupyterHub log:192] 302 GET /hub/oauth_login?next=%2Fhub%2F -> /hub/login?token=CANARY (@10.8.0.1) 1.02ms
[D 2026-11-24 09:59:10.000 JupyterHub proxy:880] Proxying request with Authorization: token CANARY
[E 2026-11-24 09:59:40.777 JupyterHub spawner:2410] Pod jupyter-bob did not start in 300 seconds!
[W 2026-11-24 09:59:41.000 JupyterHub log:192] 404 DELETE /hub/api/authorizations/token/53c10e1d9fe7412dada16f0ddf534d22 (::1) 2.10ms
[D 2026-11-24 09:59:41.100 JupyterHub app:2410] env: {\"log\": \"{\\\"cookie_secret\\\": \\\"PLANTEDcookieSecretValue01\\\"}\"}
[E 2026-11-24 09:59:41.200 JupyterHub spawner:2410] pull secret {\"auths\":{\"quay.io\":{\"auth\":\"dGVtcGxlOlBMQU5URUQtcmVnaXN0cnk=\"}}}
[D 2026-11-24 09:59:41.300 JupyterHub app:2410] db_url: postgresql://jupyterhub:PLANTEDdbPassword@db.temple.svc:5432/jupyterhub
[D 2026-11-24 09:59:41.400 JupyterHub base:700] Setting cookie jupyterhub-hub-login=2|1:0|10:1795514400|20:jupyterhub-hub-login|40:UExBTlRFRC1jb29raWUtdmFsdWU=|9f3e
[W 2026-11-24 09:59:41.500 JupyterHub app:2410] AWS_ACCESS_KEY_ID=AKIAPLANTEDEXAMPLE01 aws_secret_access_key=PLANTEDwJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLE
[D 2026-11-24 09:59:41.600 JupyterHub app:2410] git credentials ghp_PLANTED0123456789abcdefghijABCDEFGH github_pat_11PLANTED0123456789_abcdefghijklmnopqrstuvwxyz
[D 2026-11-24 09:59:41.700 JupyterHub oauth:120] id_token eyJhbGciOiJSUzI1NiJ9.eyJQTEFOVEVEIjoiand0In0.UExBTlRFRC1zaWduYXR1cmU
[W 2026-11-24 09:59:41.800 JupyterHub app:2410] webhook https://hooks.slack.com/services/T0PLANTED/B0PLANTED/PLANTEDslackWebhook01
";

/// The secrets of every kind the hub log above carries (besides [`CANARY`]): diagnostics must show none.
pub const PLANTED: [&str; 12] = [
    "53c10e1d9fe7412dada16f0ddf534d22",
    "PLANTEDcookieSecretValue01",
    "dGVtcGxlOlBMQU5URUQtcmVnaXN0cnk",
    "PLANTEDdbPassword",
    "UExBTlRFRC1jb29raWUtdmFsdWU",
    "AKIAPLANTEDEXAMPLE01",
    "PLANTEDwJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLE",
    "ghp_PLANTED",
    "github_pat_11PLANTED",
    "eyJQTEFOVEVEIjoiand0In0",
    "PLANTEDslackWebhook01",
    "UExBTlRFRC1zaWduYXR1cmU",
];

const HUB_PREVIOUS_LOG: &str = "[I 2026-11-24 09:57:01.000 JupyterHub app:3349] Running JupyterHub version 5.2.1
[I 2026-11-24 09:57:02.000 JupyterHub app:2859] Loading 14212 users from the database
[D 2026-11-24 09:57:03.000 JupyterHub app:2410] Loaded config: {\"apiToken\": \"CANARY\", \"db_url\": \"sqlite:///jupyterhub.sqlite\"}
";

const PROXY_LOG: &str = "09:58:30.101 [ConfigProxy] info: Adding route /user/carol -> http://10.8.2.31:8888
09:58:31.000 [ConfigProxy] error: 503 GET /user/carol/api/kernels connect ECONNREFUSED 10.8.2.31:8888
";

const PROXY_PREVIOUS_LOG: &str = "09:56:00.000 [ConfigProxy] info: Proxying http://*:8000 to http://hub:8081
09:56:01.000 [ConfigProxy] info: Proxy API at http://*:8001/api/routes, CONFIGPROXY_AUTH_TOKEN=CANARY
<--- Last few GCs --->
FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory
";

/// Loads `trouble` into `server`, as seen at `t`.
/// Only the hub's and the proxy's pods, healthy (for tests that follow their logs).
pub fn load_control_pods(server: &ApiServer, t: SystemTime) {
    server.put("pods", hub_pod(t, Trouble::NodePoolFull));
    server.put("pods", proxy_pod(t, Trouble::NodePoolFull));
}

/// The hub's and the proxy's pod names, as [`load`] puts them.
pub const HUB_POD: &str = "hub-7d9f8b6c5-x2k4p";
pub const PROXY_POD: &str = "proxy-5c7d9f7b8-qwz9t";

pub fn load(server: &ApiServer, trouble: Trouble, t: SystemTime) {
    server.put("pods", hub_pod(t, trouble));
    server.put("pods", proxy_pod(t, trouble));
    server.set_log("hub-7d9f8b6c5-x2k4p", "hub", false, &HUB_LOG.replace("CANARY", CANARY));
    server.set_log("proxy-5c7d9f7b8-qwz9t", "chp", false, &PROXY_LOG.replace("CANARY", CANARY));
    server.put(
        "events",
        event(
            t,
            "1",
            "Pod",
            "hub-7d9f8b6c5-x2k4p",
            "Normal",
            "Pulled",
            "Container image \"quay.io/jupyterhub/k8s-hub:4.1.0\" already present on machine",
            86_400,
            86_400,
            1,
            "kubelet",
        ),
    );
    for n in ["pool-a-1", "pool-a-2"] {
        server.put("nodes", node(t, n, false));
    }
    server.put("nodes", node(t, "user-pool-7f2c", trouble == Trouble::NodePoolFull));
    server.put("persistentvolumeclaims", pvc(t, "hub-db-dir", "1Gi"));
    server.put("persistentvolumeclaims", pvc(t, "claim-alice", "10Gi"));
    server.put("resourcequotas", json!({
        "metadata": {"name": "user-quota", "namespace": NAMESPACE, "creationTimestamp": ago(t, 90 * 86_400)},
        "spec": {"hard": {"pods": "200", "requests.memory": "400Gi"}},
        "status": {"hard": {"pods": "200", "requests.memory": "400Gi"}, "used": {"pods": "57", "requests.memory": "114Gi"}},
    }));
    server.put("pods", user_pod(t, "dave", 3_600, running_user(t, 3_600), Some("user-pool-7f2c")));
    match trouble {
        Trouble::NodePoolFull => {
            for (user, age) in [("alice", 420), ("bob", 380)] {
                server.put("pods", user_pod(t, user, age, pending_unschedulable(t, age), None));
                server.put("events", event(t, "2", "Pod", &format!("jupyter-{user}"), "Warning", "FailedScheduling",
                    "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
                    age, 30, 7, "default-scheduler"));
                server.put(
                    "events",
                    event(
                        t,
                        "3",
                        "Pod",
                        &format!("jupyter-{user}"),
                        "Normal",
                        "NotTriggerScaleUp",
                        "pod didn't trigger scale-up: 1 max node group size reached",
                        age - 10,
                        40,
                        5,
                        "cluster-autoscaler",
                    ),
                );
            }
        }
        Trouble::BrokenImage => {
            for (user, age) in [("carol", 500), ("erin", 260)] {
                server.put("pods", user_pod(t, user, age, image_pull_backoff(t, age), Some("user-pool-7f2c")));
                server.put("events", event(t, "4", "Pod", &format!("jupyter-{user}"), "Warning", "Failed",
                    "Failed to pull image \"quay.io/temple/notebook:2026.11\": rpc error: code = NotFound desc = failed to pull and unpack image \"quay.io/temple/notebook:2026.11\": not found",
                    age - 5, 60, 4, "kubelet"));
                server.put(
                    "events",
                    event(
                        t,
                        "5",
                        "Pod",
                        &format!("jupyter-{user}"),
                        "Normal",
                        "BackOff",
                        "Back-off pulling image \"quay.io/temple/notebook:2026.11\"",
                        age - 8,
                        12,
                        9,
                        "kubelet",
                    ),
                );
            }
        }
        Trouble::HubOomKilled => {
            server.set_log("hub-7d9f8b6c5-x2k4p", "hub", true, &HUB_PREVIOUS_LOG.replace("CANARY", CANARY));
            server.put(
                "events",
                event(
                    t,
                    "6",
                    "Pod",
                    "hub-7d9f8b6c5-x2k4p",
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container hub in pod hub-7d9f8b6c5-x2k4p_temple(uid-hub)",
                    900,
                    20,
                    31,
                    "kubelet",
                ),
            );
        }
        Trouble::ProxyRestarting => {
            server.set_log("proxy-5c7d9f7b8-qwz9t", "chp", true, &PROXY_PREVIOUS_LOG.replace("CANARY", CANARY));
            server.put("events", event(t, "7", "Pod", "proxy-5c7d9f7b8-qwz9t", "Warning", "Unhealthy",
                "Readiness probe failed: Get \"http://10.8.1.7:8000/_chp_healthz\": dial tcp 10.8.1.7:8000: connect: connection refused",
                400, 96, 12, "kubelet"));
        }
    }
}

/// Dask Gateway on the Kubernetes backend: its api and controller pods (labels of the dask-gateway chart),
/// a DaskCluster per user (`spec.username`), and the cluster's scheduler pod, Pending like the user pods.
pub fn load_dask(server: &ApiServer, t: SystemTime) {
    let gateway_pod = |name: &str, component: &str, container: &str| {
        pod(
            name,
            json!({"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/instance": "temple",
                   "app.kubernetes.io/component": component}),
            json!({}),
            &ago(t, 86_400),
            json!({"containers": [{"name": container, "image": "ghcr.io/dask/dask-gateway-server:2025.4.0",
                                   "env": [{"name": "JUPYTERHUB_API_TOKEN", "value": CANARY}]}],
                   "nodeName": "pool-a-1"}),
            json!({"phase": "Running", "podIP": "10.8.0.30", "podIPs": [{"ip": "10.8.0.30"}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [running_container(container, "ghcr.io/dask/dask-gateway-server:2025.4.0",
                                                           &ago(t, 86_000), 0, None)]}),
        )
    };
    server.put("pods", gateway_pod("api-temple-dask-gateway-6b8f9c7d5-h2k9x", "gateway", "gateway"));
    server.put("pods", gateway_pod("controller-temple-dask-gateway-5d7c8b9f6-p4m2n", "controller", "controller"));
    server.set_log("api-temple-dask-gateway-6b8f9c7d5-h2k9x", "gateway", false,
        &format!("[I 2026-11-24 09:59:00.100 DaskGateway] Created cluster temple.8f14e45fceea167a5a36dedd4bea2543 for user alice\n\
                  [W 2026-11-24 09:59:30.200 DaskGateway] Cluster temple.8f14e45fceea167a5a36dedd4bea2543 failed to start: timed out, Authorization: jupyterhub {CANARY}\n"));
    for (cluster, user) in [("8f14e45fceea167a5a36dedd4bea2543", "alice"), ("c9f0f895fb98ab9159f51fd0297e236d", "bob")]
    {
        server.put("daskclusters", json!({
            "metadata": {"name": cluster, "namespace": NAMESPACE, "creationTimestamp": ago(t, 300),
                         "labels": {"gateway.dask.org/instance": "temple-dask-gateway", "gateway.dask.org/cluster": cluster}},
            "spec": {"username": user, "options": {}, "config": {}},
            "status": {"phase": "Pending"},
        }));
        server.put(
            "pods",
            pod(
                &format!("dask-scheduler-{cluster}"),
                json!({"gateway.dask.org/instance": "temple-dask-gateway", "gateway.dask.org/cluster": cluster,
                   "app.kubernetes.io/component": "dask-scheduler"}),
                json!({}),
                &ago(t, 290),
                json!({"containers": [{"name": "dask-scheduler", "image": "ghcr.io/dask/dask-gateway:2025.4.0"}]}),
                pending_unschedulable(t, 290),
            ),
        );
    }
}

/// A user's pod running and ready (a stuck pod that recovered).
pub fn running_user_pod(user: &str, t: SystemTime) -> Value {
    user_pod(t, user, 600, running_user(t, 600), Some("user-pool-7f2c"))
}

/// The hub's Deployment (z2jh labels), with `image` and a config checksum on its pod template.
pub fn hub_deployment(image: &str, checksum: &str, generation: i64) -> Value {
    json!({
        "metadata": {"name": "hub", "namespace": NAMESPACE, "generation": generation,
                     "creationTimestamp": "2026-01-10T08:00:00Z",
                     "labels": {"app": "jupyterhub", "component": "hub", "release": "temple"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "jupyterhub", "component": "hub", "release": "temple"}},
            "template": {
                "metadata": {"labels": {"app": "jupyterhub", "component": "hub", "release": "temple"},
                             "annotations": {"checksum/config-map": checksum}},
                "spec": {"containers": [{"name": "hub", "image": image}]},
            },
        },
        "status": rolled_out(generation),
    })
}

/// A Deployment's status once its rollout is complete (as the controller writes it).
pub fn rolled_out(generation: i64) -> Value {
    json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": generation,
           "conditions": [
               {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
               {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
}

/// A Deployment's status mid-rollout (z2jh's Recreate strategy: the new pod exists, not yet available).
pub fn rolling_out(generation: i64) -> Value {
    json!({"replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1, "observedGeneration": generation,
           "conditions": [
               {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
               {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]})
}

/// A hub found by discovery in `namespace`: its Deployment (URL and probe users in annotations), the
/// `proxy-public` Service, the `hubwatch` Secret holding hubwatch's token, and z2jh's `hub` Secret (which
/// hubwatch must never read: it holds every service's token).
pub fn load_discoverable_hub(server: &ApiServer, namespace: &str, url: &str, users: &str, token: Option<&str>) {
    server.put("deployments", json!({
        "metadata": {"name": "hub", "namespace": namespace, "generation": 1, "creationTimestamp": "2026-01-10T08:00:00Z",
                     "labels": {"app": "jupyterhub", "component": "hub", "release": namespace},
                     "annotations": {"hubwatch.jupyter.org/url": url, "hubwatch.jupyter.org/users": users}},
        "spec": {"selector": {"matchLabels": {"component": "hub"}},
                 "template": {"metadata": {"labels": {"component": "hub"}},
                              "spec": {"containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.1.0"}]}}},
        "status": rolled_out(1),
    }));
    server.put(
        "services",
        json!({
            "metadata": {"name": "proxy-public", "namespace": namespace},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.10", "ports": [{"name": "http", "port": 80}]},
            "status": {"loadBalancer": {}},
        }),
    );
    use base64_shim::encode;
    if let Some(token) = token {
        server.put(
            "secrets",
            json!({
                "metadata": {"name": "hubwatch", "namespace": namespace},
                "type": "Opaque",
                "data": {"token": encode(token.as_bytes())},
            }),
        );
    }
    server.put("secrets", json!({
        "metadata": {"name": "hub", "namespace": namespace},
        "type": "Opaque",
        "data": {"hub.services.hubwatch.apiToken": encode(CANARY.as_bytes()), "hub.config.CryptKeeper.keys": encode(CANARY.as_bytes())},
    }));
}

/// Secrets' `data` is base64 on the wire.
mod base64_shim {
    pub fn encode(bytes: &[u8]) -> String {
        const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Copies what the lab's processes write to its log, as it is written, into the stand-in's pod logs: the
/// proxy's lines to its pod, the hub's (and its servers') to the hub's.
pub async fn mirror_lab_log(path: std::path::PathBuf, api: ApiServer, stop: tokio_util::sync::CancellationToken) {
    let mut read = std::fs::metadata(&path).map(|m| m.len() as usize).unwrap_or(0);
    let mut partial = String::new();
    while !stop.is_cancelled() {
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.len() > read {
            partial.push_str(&String::from_utf8_lossy(&bytes[read..]));
            read = bytes.len();
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                let line = line.trim_end();
                match line.contains("[ConfigProxy]") {
                    true => api.write_log(PROXY_POD, "chp", line),
                    false => api.write_log(HUB_POD, "hub", line),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
