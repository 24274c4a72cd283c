//! Probes against a stand-in hub that misbehaves: each fails with the right capability, stage and reason
//! within its timeout, and clean-up still happens. Real sockets, so real (short) time. A hostile hub cannot
//! steer hubwatch's credentials elsewhere (a server URL or a form action on another origin reaches a
//! bystander server that records nothing) nor into other paths (kernel ids, cluster names).

use crate::support::stub_hub::{
    GatewayBehaviour, Home, KernelSocket, Mint, Progress, Provider, SERVICE_TOKEN, Stub, bystander, identity_provider,
};
use hubwatch::config::Config;
use hubwatch::domain::{Capability, FailureCause, ProbeOutcome, ProbeResult, Stage};
use hubwatch::http::HttpClient;
use hubwatch::probe::{HubProber, OnServer};
use hubwatch::redact::Redactor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(2);
/// A server round with the kernel probe on its server.
const KERNEL: OnServer = OnServer { kernel: true, home: false, dask: false };

fn prober(hub_url: &str) -> HubProber {
    prober_with(hub_url, "")
}

/// A prober of the stub with `extra` hub keys (a login method, a gateway).
fn prober_with(hub_url: &str, extra: &str) -> HubProber {
    let yaml = format!(
        "hubs:\n  - name: stub\n    url: {hub_url}\n    token: {{env: T}}\n    users: [probe-1, probe-2]\n{extra}    probes:\n      login: {{timeout: 2s}}\n      server: {{timeout: 2s}}\n      kernel: {{timeout: 2s}}\n      dask_gateway: {{timeout: 3s}}\nscheduler: {{cleanup_timeout: 2s}}\n"
    );
    let config = Config::parse(&yaml, Path::new("stub.yaml"), &|_| Some(SERVICE_TOKEN.to_string())).unwrap();
    let redactor = Arc::new(Redactor::knowing(config.secrets()));
    HubProber::new(config.hubs[0].clone(), HttpClient::new().unwrap(), config.scheduler.cleanup_timeout, redactor)
}

fn with_gateway(hub_url: &str) -> HubProber {
    prober_with(hub_url, &format!("    dask_gateway: {{url: \"{hub_url}services/dask-gateway\"}}\n"))
}

fn failure(outcome: &ProbeOutcome) -> (Stage, String, FailureCause) {
    match &outcome.result {
        ProbeResult::Failed(f) => (f.stage, f.reason.clone(), f.cause),
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn stub_with(configure: impl FnOnce(&mut crate::support::stub_hub::Behaviour)) -> (Stub, String) {
    let stub = Stub::default();
    configure(&mut stub.behaviour.lock().unwrap());
    let url = stub.clone().start().await;
    (stub, url)
}

#[tokio::test]
async fn a_healthy_stub_passes_login_server_and_kernel() {
    let (stub, url) = stub_with(|_| {}).await;
    let prober = prober(&url);
    let login = prober.probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    assert_eq!(login.result, ProbeResult::Ok, "{login:?}");
    let outcomes = prober.probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.result == ProbeResult::Ok), "{outcomes:?}");
    let record = stub.record.lock().unwrap();
    assert_eq!((record.kernels_started, record.kernels_deleted, record.server_running), (1, 1, false));
}

#[tokio::test]
async fn a_huge_body_fails_the_login_without_reading_it_all() {
    let (_, url) = stub_with(|b| b.mint = Mint::HugeBody).await;
    let outcome = prober(&url).probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, cause) = failure(&outcome);
    assert_eq!((stage, cause), (Stage::MintToken, FailureCause::Hub));
    assert!(reason.contains("larger than 131072 bytes"), "{reason}");
}

#[tokio::test]
async fn garbage_json_is_a_failure_with_a_reason() {
    let (_, url) = stub_with(|b| b.mint = Mint::Garbage).await;
    let outcome = prober(&url).probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::MintToken);
    assert!(reason.contains("not JSON"), "{reason}");
}

#[tokio::test]
async fn a_hub_that_never_answers_fails_within_the_timeout() {
    let (_, url) = stub_with(|b| b.mint = Mint::Hang).await;
    let started = Instant::now();
    let outcome = prober(&url).probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::MintToken);
    assert!(reason.contains("no answer within the 2s timeout"), "{reason}");
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_service_token_is_a_monitor_fault_that_says_what_to_fix() {
    let (_, url) = stub_with(|b| b.mint = Mint::ServiceTokenRevoked).await;
    let prober = prober(&url);
    let outcome = prober.probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, cause) = failure(&outcome);
    assert_eq!((stage, cause), (Stage::MintToken, FailureCause::Monitor));
    assert!(reason.contains("refused hubwatch's service token"), "{reason}");
    assert!(!outcome.result.is_user_affecting());
    // Everything after login is blocked, not failed.
    let outcomes = prober.probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert!(outcomes.iter().all(|o| o.result == ProbeResult::Blocked { by: Capability::Login }), "{outcomes:?}");

    let (_, url) = stub_with(|b| b.mint = Mint::MissingScope).await;
    let outcome = self::prober(&url).probe_login("probe-2", &CancellationToken::new()).await.unwrap();
    let (_, reason, cause) = failure(&outcome);
    assert_eq!(cause, FailureCause::Monitor);
    assert!(reason.contains("tokens!user=probe-2"), "{reason}");
}

#[tokio::test]
async fn an_unreachable_hub_says_it_cannot_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let outcome = prober(&url).probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, cause) = failure(&outcome);
    assert_eq!((stage, cause), (Stage::MintToken, FailureCause::Hub));
    assert!(reason.contains("cannot connect"), "{reason}");
}

#[tokio::test]
async fn an_endless_progress_stream_ends_at_the_timeout_with_the_last_message() {
    let (stub, url) = stub_with(|b| b.progress = Progress::Endless).await;
    let started = Instant::now();
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_secs(2), "took {:?}", started.elapsed());
    let (stage, reason, _) = failure(&outcomes[0]);
    assert_eq!(stage, Stage::Progress);
    assert!(reason.contains("not ready within the 2s timeout; last progress: still spawning"), "{reason}");
    assert_eq!(outcomes[1].result, ProbeResult::Blocked { by: Capability::Server });
    let record = stub.record.lock().unwrap();
    assert!(!record.server_running && record.server_stops >= 1, "the pending server is stopped");
}

#[tokio::test]
async fn an_endless_line_is_refused_at_the_event_limit() {
    let (_, url) = stub_with(|b| b.progress = Progress::EndlessLine).await;
    let outcomes = prober(&url).probe_server("probe-1", OnServer::default(), &CancellationToken::new()).await;
    let (stage, reason, _) = failure(&outcomes[0]);
    assert_eq!(stage, Stage::Progress);
    assert!(reason.contains("larger than"), "{reason}");
}

#[tokio::test]
async fn garbage_progress_and_empty_failure_reasons_are_explained() {
    let (_, url) = stub_with(|b| b.progress = Progress::Garbage).await;
    let outcomes = prober(&url).probe_server("probe-1", OnServer::default(), &CancellationToken::new()).await;
    assert!(failure(&outcomes[0]).1.contains("not JSON"));

    let (_, url) = stub_with(|b| b.progress = Progress::FailedEmpty).await;
    let outcomes = prober(&url).probe_server("probe-1", OnServer::default(), &CancellationToken::new()).await;
    assert!(failure(&outcomes[0]).1.contains("Spawn failed with no reason given"), "{:?}", outcomes[0]);
}

#[tokio::test]
async fn a_held_websocket_handshake_fails_at_connect_and_the_kernel_is_deleted() {
    let (stub, url) = stub_with(|b| b.kernel_socket = KernelSocket::HangHandshake).await;
    let started = Instant::now();
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(outcomes[0].result, ProbeResult::Ok);
    let (stage, reason, _) = failure(&outcomes[1]);
    assert_eq!(stage, Stage::Connect);
    assert!(reason.contains("handshake did not complete within the 2s timeout"), "{reason}");
    let record = stub.record.lock().unwrap();
    assert_eq!((record.kernels_started, record.kernels_deleted, record.server_running), (1, 1, false));
}

#[tokio::test]
async fn pings_do_not_keep_the_execute_waiting_past_the_deadline() {
    let (_, url) = stub_with(|b| b.kernel_socket = KernelSocket::OnlyPings).await;
    let started = Instant::now();
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_secs(2), "took {:?}", started.elapsed());
    let (stage, reason, _) = failure(&outcomes[1]);
    assert_eq!(stage, Stage::Execute);
    assert!(reason.contains("did not finish executing within the 2s timeout (no reply)"), "{reason}");
}

#[tokio::test]
async fn a_wrong_result_is_a_kernel_failure() {
    let (_, url) = stub_with(|b| b.kernel_socket = KernelSocket::WrongResult).await;
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    let (stage, reason, _) = failure(&outcomes[1]);
    assert_eq!(stage, Stage::Execute);
    assert_eq!(reason, "expected \"20\" from \"5 * 4\", got \"21\"");
}

#[tokio::test]
async fn a_cancelled_round_reports_nothing_but_still_stops_the_server() {
    let (stub, url) = stub_with(|b| b.progress = Progress::Endless).await;
    let cancel = CancellationToken::new();
    // Cancelled mid-spawn: once the endless progress stream is being read.
    let reading = || stub.record.lock().unwrap().requests.iter().any(|r| r.ends_with("/server/progress"));
    let cancelling = async {
        crate::support::daemon::wait_for("the progress stream read", Duration::from_secs(20), async || reading()).await;
        cancel.cancel();
    };
    let prober = prober(&url);
    let (outcomes, ()) = tokio::join!(prober.probe_server("probe-1", KERNEL, &cancel), cancelling);
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert!(!stub.record.lock().unwrap().server_running);
}

#[tokio::test]
async fn a_server_url_on_another_host_gets_no_token() {
    let (other, seen) = bystander().await;
    let (stub, url) = stub_with(|b| b.server_url = Some(format!("//{other}/user/probe-1/"))).await;
    let started = Instant::now();
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_secs(2), "took {:?}", started.elapsed());
    let (stage, reason, cause) = failure(&outcomes[0]);
    assert_eq!((stage, cause), (Stage::Progress, FailureCause::Hub));
    assert!(reason.contains("points to http://127.0.0.1, not the hub (http://127.0.0.1:"), "{reason}");
    assert_eq!(outcomes[1].result, ProbeResult::Blocked { by: Capability::Server });
    assert!(seen.lock().unwrap().is_empty(), "a request went to another host: {:?}", seen.lock().unwrap());
    assert!(!stub.record.lock().unwrap().server_running, "the server is still stopped");
}

#[tokio::test]
async fn a_login_form_posting_elsewhere_gets_no_password() {
    let (other, seen) = bystander().await;
    let (_, url) = stub_with(|b| b.form_action = Some(format!("http://{other}/hub/login"))).await;
    let prober = prober_with(&url, "    login: {method: form, password: {env: T}}\n");
    let outcome = prober.probe_login("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::LoginPage);
    assert!(reason.contains("the login form's action is not used: it points to http://127.0.0.1"), "{reason}");
    assert!(seen.lock().unwrap().is_empty(), "a request went to another host: {:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_kernel_id_or_cluster_name_that_is_a_path_goes_into_no_url() {
    let climb = "../../../hub/api/users/probe-1";
    let (stub, url) = stub_with(|b| b.kernel_id = Some(climb.into())).await;
    let outcomes = prober(&url).probe_server("probe-1", KERNEL, &CancellationToken::new()).await;
    let (stage, reason, _) = failure(&outcomes[1]);
    assert_eq!(stage, Stage::StartKernel);
    assert!(reason.contains("a kernel id that is not one"), "{reason}");

    let (gateway, url) = stub_with(|b| b.gateway = GatewayBehaviour::ClusterName(climb.into())).await;
    let outcome = with_gateway(&url).probe_dask_gateway("probe-1", &CancellationToken::new()).await.unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::CreateCluster);
    assert!(reason.contains("without a usable cluster name"), "{reason}");

    let (leftovers, url) =
        stub_with(|b| b.gateway = GatewayBehaviour::Leftovers(vec!["temple.0a1b".into(), climb.into()])).await;
    let failure = with_gateway(&url).clean_up_leftovers("probe-1").await.unwrap_err();
    assert!(failure.reason.contains("listed 1 cluster names that are not names"), "{failure:?}");
    for record in [&stub, &gateway, &leftovers] {
        let requests = record.record.lock().unwrap().requests.clone();
        let climbed = |r: &String| r.contains("..") || r == "DELETE /hub/api/users/probe-1";
        assert!(!requests.iter().any(climbed), "{requests:?}");
    }
    let requests = leftovers.record.lock().unwrap().requests.clone();
    assert!(requests.iter().any(|r| r == "DELETE /services/dask-gateway/api/v1/clusters/temple.0a1b"), "{requests:?}");
}

#[tokio::test]
async fn a_failing_gateway_is_asked_again_after_a_pause_and_its_own_words_are_the_reason() {
    let (stub, url) = stub_with(|b| b.gateway = GatewayBehaviour::Errors).await;
    let started = Instant::now();
    let outcome = with_gateway(&url).probe_dask_gateway("probe-1", &CancellationToken::new()).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3) + Duration::from_secs(3), "took {elapsed:?}");
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::WaitRunning);
    assert!(reason.contains("HTTP 500 Internal Server Error: backend unavailable"), "{reason}");
    let polls = stub.record.lock().unwrap().requests.iter().filter(|r| r.contains("?wait")).count();
    // One look per 500 ms pause over a 3 s probe: a handful, not the thousands of a busy loop.
    assert!((2..=8).contains(&polls), "{polls} looks in {elapsed:?}");
}

#[tokio::test]
async fn a_home_that_saves_passes_and_the_file_is_gone_after() {
    let (stub, url) = stub_with(|_| {}).await;
    let outcomes = prober(&url).probe_server("probe-1", OnServer::ALL, &CancellationToken::new()).await;
    let capabilities: Vec<(Capability, &ProbeResult)> = outcomes.iter().map(|o| (o.capability, &o.result)).collect();
    assert_eq!(
        capabilities,
        [
            (Capability::Server, &ProbeResult::Ok),
            (Capability::Kernel, &ProbeResult::Ok),
            (Capability::Home, &ProbeResult::Ok)
        ]
    );
    let record = stub.record.lock().unwrap();
    assert!(record.files.is_empty(), "the probe's file was deleted: {:?}", record.files);
    let home: Vec<&String> = record.requests.iter().filter(|r| r.contains("/api/contents/")).collect();
    assert_eq!(home.len(), 3, "write, read back, delete: {home:?}");
    assert!(home[0].starts_with("PUT /user/probe-1/api/contents/hubwatch-probe-"), "{home:?}");
}

#[tokio::test]
async fn a_full_or_read_only_home_fails_in_the_servers_words_and_the_rest_passes() {
    for (home, words) in
        [(Home::Full, "[Errno 28] No space left on device"), (Home::ReadOnly, "[Errno 30] Read-only file system")]
    {
        let (stub, url) = stub_with(|b| b.home = home).await;
        let outcomes = prober(&url).probe_server("probe-1", OnServer::ALL, &CancellationToken::new()).await;
        assert_eq!((outcomes[0].capability, &outcomes[0].result), (Capability::Server, &ProbeResult::Ok));
        assert_eq!((outcomes[1].capability, &outcomes[1].result), (Capability::Kernel, &ProbeResult::Ok));
        assert_eq!(outcomes[2].capability, Capability::Home);
        let (stage, reason, cause) = failure(&outcomes[2]);
        assert_eq!((stage, cause), (Stage::WriteFile, FailureCause::Hub));
        assert!(reason.starts_with("could not save hubwatch-probe-"), "{reason}");
        assert!(reason.contains("HTTP 500 Internal Server Error: Unexpected error while saving file"), "{reason}");
        assert!(reason.contains(words), "{reason}");
        assert!(
            stub.record.lock().unwrap().requests.iter().any(|r| r.starts_with("DELETE /user/probe-1/api/contents/")),
            "cleaned up"
        );
    }
}

#[tokio::test]
async fn home_is_blocked_when_the_server_does_not_start() {
    let (_, url) = stub_with(|b| b.progress = Progress::FailedEmpty).await;
    let outcomes = prober(&url).probe_server("probe-1", OnServer::ALL, &CancellationToken::new()).await;
    assert_eq!(outcomes[2].capability, Capability::Home);
    assert_eq!(outcomes[2].result, ProbeResult::Blocked { by: Capability::Server });
}

#[tokio::test]
async fn an_identity_provider_that_refuses_fails_login_in_its_own_words_and_sees_no_credential() {
    let cases = [
        (Provider::SignIn, None),
        (
            Provider::RedirectsWithError,
            Some("refused the login: redirect_uri_mismatch: The redirect_uri MUST match the registered callback URL"),
        ),
        (Provider::ErrorPage, Some("refused the login: HTTP 400 Bad Request: Error 400: invalid_client")),
        (Provider::Down, Some("refused the login: HTTP 503 Service Unavailable")),
    ];
    for (answer, expected) in cases {
        let (authorize, seen) = identity_provider(answer).await;
        let origin = url::Url::parse(&authorize).unwrap().origin().ascii_serialization();
        let (_, url) = stub_with(|b| b.oauth_authorize = Some(authorize)).await;
        let login = format!("    login: {{method: oauth, identity_providers: [\"{origin}\"]}}\n");
        let outcome = prober_with(&url, &login).probe_login("probe-1", &CancellationToken::new()).await.unwrap();
        let stages: Vec<Stage> = outcome.stages.iter().map(|s| s.stage).collect();
        assert!(stages.ends_with(&[Stage::OAuthLogin, Stage::Authorize]), "{answer:?}: {stages:?}");
        match expected {
            None => assert_eq!(outcome.result, ProbeResult::Ok, "{answer:?}"),
            Some(words) => {
                let (stage, reason, cause) = failure(&outcome);
                assert_eq!((stage, cause), (Stage::Authorize, FailureCause::Hub), "{answer:?}");
                assert!(
                    reason.contains("the identity provider 127.0.0.1 ") && reason.contains(words),
                    "{answer:?}: {reason}"
                );
            }
        }
        for headers in seen.lock().unwrap().iter() {
            assert!(!headers.contains_key("authorization") && !headers.contains_key("cookie"), "{headers:?}");
        }
    }
    let (_, url) = stub_with(|_| {}).await;
    let outcome = prober_with(&url, "    login: {method: oauth}\n")
        .probe_login("probe-1", &CancellationToken::new())
        .await
        .unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::OAuthLogin);
    assert!(reason.contains("/hub/oauth_login did not redirect to the identity provider: HTTP 404"), "{reason}");

    // A hostile hub sends the check to a loopback (or metadata) address: not without identity_providers.
    let (authorize, seen) = identity_provider(Provider::SignIn).await;
    let (_, url) = stub_with(|b| b.oauth_authorize = Some(authorize)).await;
    let outcome = prober_with(&url, "    login: {method: oauth}\n")
        .probe_login("probe-1", &CancellationToken::new())
        .await
        .unwrap();
    let (stage, reason, _) = failure(&outcome);
    assert_eq!(stage, Stage::Authorize);
    assert!(reason.contains("which is not https") && reason.contains("hubwatch does not go there"), "{reason}");
    assert!(seen.lock().unwrap().is_empty(), "the provider was never asked");
}

#[tokio::test]
async fn binderhub_failures_are_named_at_their_phase_in_its_words() {
    use crate::support::binderhub::{BinderHub, Script, TOKEN};
    let binder = BinderHub::default();
    let binder_url = binder.clone().start().await;
    let yaml = format!(
        "hubs:\n  - name: stub\n    url: http://127.0.0.1:9/\n    token: {{env: T}}\n    users: [probe-1, probe-2]\n    \
         binderhub: {{url: \"{binder_url}\", repo: gh/binder-examples/requirements, ref: 0123abc, token: {{env: BINDER_TOKEN}}, \
         build: {{ref: main, every: 1d}}}}\n    probes: {{binderhub: {{timeout: 5s}}}}\nscheduler: {{cleanup_timeout: 2s}}\n"
    );
    let config = Config::parse(&yaml, Path::new("binder.yaml"), &|name| match name {
        "BINDER_TOKEN" => Some(TOKEN.to_string()),
        _ => Some(SERVICE_TOKEN.to_string()),
    })
    .unwrap();
    let redactor = Arc::new(Redactor::knowing(config.secrets()));
    let prober = HubProber::new(config.hubs[0].clone(), HttpClient::new().unwrap(), TIMEOUT, redactor);
    let cancel = CancellationToken::new();
    let cases = [
        (
            Script::RateLimited,
            Stage::Resolve,
            "Error resolving ref for gh:binder-examples/requirements/0123abc: GitHub rate limit exceeded. Try again in 5 minutes.",
        ),
        (
            Script::PushRefused,
            Stage::Push,
            "Failed to push image registry.example.org/binder/r2d-abc:0123abc: denied: requested access to the resource is denied",
        ),
        (Script::LaunchExhausted, Stage::Launch, "Failed to launch image registry.example.org/binder/r2d-abc:0123abc"),
    ];
    for (script, stage, reason) in cases {
        binder.set_script(script);
        let outcome = prober.probe_binder("probe-1", false, &cancel).await.unwrap();
        assert_eq!(outcome.capability, Capability::Binder);
        assert_eq!(failure(&outcome), (stage, reason.to_string(), FailureCause::Hub), "{script:?}");
        let ProbeResult::Failed(f) = &outcome.result else { unreachable!() };
        assert!(f.detail.as_deref().unwrap_or_default().starts_with("binderhub: "), "BinderHub's messages: {f:?}");
    }
    let ProbeResult::Failed(exhausted) = prober.probe_binder("probe-1", false, &cancel).await.unwrap().result else {
        panic!("a failure")
    };
    assert!(exhausted.detail.unwrap().contains("Launch attempt 4 failed, retrying..."), "the retries are kept");

    binder.set_unhealthy(Some("Docker registry"));
    let outcome = prober.probe_binder("probe-1", true, &cancel).await.unwrap();
    assert_eq!(
        failure(&outcome),
        (Stage::BinderHealth, "BinderHub is unhealthy: Docker registry failing".into(), FailureCause::Hub)
    );
    binder.set_unhealthy(None);
    prober.probe_binder("probe-1", true, &cancel).await.unwrap();
    let requested = binder.requested();
    assert_eq!(
        requested.first().map(String::as_str),
        Some("gh/binder-examples/requirements/0123abc"),
        "the pinned ref"
    );
    assert_eq!(
        requested.last().map(String::as_str),
        Some("gh/binder-examples/requirements/main"),
        "a build round's ref"
    );
}
