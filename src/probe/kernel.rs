//! The kernel capability: start a kernel on the user's server, open its websocket (the legacy JSON
//! protocol), execute code and check the result, matched on `parent_header.msg_id` and complete only when
//! both `execute_reply` and the iopub `idle` have arrived. The probe keeps its own deadline: servers may
//! hold a handshake for 60 s, and pings would keep a naive read waiting forever.

use super::Deadline;
use super::answers::Text;
use super::round::HubProber;
use crate::config::KernelCell;
use crate::domain::wording::truncate;
use crate::domain::{Capability, ProbeOutcome, Secret, Stage, StepFailure};
use crate::http::{Auth, HttpClient, scrub};
use crate::sync::lock;
use backon::{ConstantBuilder, Retryable};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// Largest websocket message accepted; probe code prints a few bytes, kernel_info replies a few KB. The
/// same bound as a hub's answers ([`crate::http::BODY_LIMIT`]), for the same memory budget.
const MESSAGE_LIMIT: usize = crate::http::BODY_LIMIT;

pub type KernelSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Code run on a kernel of a user's server, as one capability's attempt.
pub(super) struct KernelWork<'a> {
    pub capability: Capability,
    pub timeout: Duration,
    pub cells: &'a [KernelCell],
    /// The stage the cells' execution is recorded and fails at.
    pub stage: Stage,
}

impl HubProber {
    /// The kernel capability on a running server; the kernel is deleted afterwards. None when cancelled.
    pub(super) async fn probe_kernel(
        &self,
        user: &str,
        token: &Secret,
        server_url: &Url,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<ProbeOutcome> {
        let settings = &self.hub.probes.kernel;
        let work = KernelWork {
            capability: Capability::Kernel,
            timeout: settings.timeout,
            cells: &settings.cells,
            stage: Stage::Execute,
        };
        self.on_kernel(user, token, server_url, work, cancel).await
    }

    /// Starts a kernel on the running server, runs `work`'s cells on it, and deletes it. None when cancelled.
    pub(super) async fn on_kernel(
        &self,
        user: &str,
        token: &Secret,
        server_url: &Url,
        work: KernelWork<'_>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<ProbeOutcome> {
        let kernel_name = self.hub.probes.kernel.kernel_name.as_deref();
        let round = self.round(user, work.capability, work.timeout);
        let (stages, deadline) = (&round.stages, round.deadline);
        let kernel_id: std::sync::Mutex<Option<String>> = Default::default();
        let executed = round
            .steps(cancel, async {
                let start = start_kernel(&self.http, server_url, token, kernel_name, deadline);
                let id = stages.run(Stage::StartKernel, start).await?;
                *lock(&kernel_id) = Some(id.clone());
                let mut socket =
                    stages.run(Stage::Connect, connect(&self.http, server_url, token, &id, deadline)).await?;
                let cells = run_cells(&mut socket, work.cells, deadline);
                let executed = stages
                    .run(work.stage, async {
                        cells.await.map_err(|failure| StepFailure { stage: work.stage, ..failure })
                    })
                    .await;
                let _ = timeout_at(deadline.at, socket.close(None)).await;
                executed
            })
            .await;
        let duration = round.elapsed();
        let deleted = match crate::sync::into_inner(kernel_id) {
            Some(id) => {
                let delete =
                    |deadline| async move { delete_kernel(&self.http, server_url, token, &id, deadline).await };
                round.clean_up(Stage::DeleteKernel, delete).await
            }
            None => Ok(()),
        };
        round.finish(executed, deleted, duration)
    }
}

/// `POST {server}api/kernels`; returns the kernel id.
pub async fn start_kernel(
    http: &HttpClient,
    server: &Url,
    token: &Secret,
    kernel_name: Option<&str>,
    deadline: Deadline,
) -> Result<String, StepFailure> {
    let stage = Stage::StartKernel;
    let body = match kernel_name {
        Some(name) => json!({"name": name}),
        None => json!({}),
    };
    let url = server.join("api/kernels").expect("fixed relative path");
    let response = http
        .call(Method::POST, url, Auth::Token(token), Some(&body), deadline.at)
        .await
        .map_err(|e| deadline.request_failure(stage, e))?;
    match response.status {
        StatusCode::CREATED | StatusCode::OK => {}
        s if s.is_redirection() => {
            return Err(StepFailure::hub(
                stage,
                format!("HTTP {s}: the hub redirected away from the server (it is not running)"),
            ));
        }
        _ => return Err(StepFailure::hub(stage, response.describe())),
    }
    #[derive(serde::Deserialize)]
    struct KernelModel {
        #[serde(default)]
        id: Text,
    }
    let model: KernelModel = response.json().map_err(|e| StepFailure::hub(stage, e))?;
    match model.id.as_deref() {
        Some(id) if super::answers::path_segment(id) => Ok(id.to_string()),
        Some(_) => {
            Err(StepFailure::hub(stage, "the server answered with a kernel id that is not one (not used in a URL)"))
        }
        None => Err(StepFailure::hub(stage, "the server answered without a kernel id")),
    }
}

/// Opens `{server}api/kernels/{id}/channels` with the token in the `Authorization` header, trusting what
/// `http` trusts.
pub async fn connect(
    http: &HttpClient,
    server: &Url,
    token: &Secret,
    kernel_id: &str,
    deadline: Deadline,
) -> Result<KernelSocket, StepFailure> {
    let stage = Stage::Connect;
    let mut url = server
        .join(&format!("api/kernels/{kernel_id}/channels"))
        .map_err(|e| StepFailure::hub(stage, format!("bad kernel id: {e}")))?;
    url.query_pairs_mut().append_pair("session_id", &uuid::Uuid::new_v4().simple().to_string());
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).expect("ws and wss are valid schemes");
    let mut request =
        url.as_str().into_client_request().map_err(|e| StepFailure::hub(stage, format!("bad websocket URL: {e}")))?;
    let mut header = hyper::header::HeaderValue::from_str(&format!("token {}", token.expose()))
        .map_err(|_| StepFailure::monitor(stage, "the probe user's token is not a valid header value"))?;
    header.set_sensitive(true);
    request.headers_mut().insert(hyper::header::AUTHORIZATION, header);
    let config = WebSocketConfig::default().max_message_size(Some(MESSAGE_LIMIT)).max_frame_size(Some(MESSAGE_LIMIT));
    let tls = tokio_tungstenite::Connector::Rustls(http.tls());
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(tls));
    match timeout_at(deadline.at, connecting).await {
        Err(_) => Err(StepFailure::hub(
            stage,
            format!(
                "the kernel's websocket handshake did not complete within the {} timeout",
                humantime::format_duration(deadline.budget)
            ),
        )),
        Ok(Err(tungstenite::Error::Http(response))) => {
            Err(StepFailure::hub(stage, format!("the websocket handshake was answered HTTP {}", response.status())))
        }
        Ok(Err(e)) => Err(StepFailure::hub(stage, format!("websocket: {}", scrub(&e.to_string())))),
        Ok(Ok((socket, _))) => Ok(socket),
    }
}

/// What came back for our request.
#[derive(Default, Debug)]
struct Replies {
    reply_status: Option<String>,
    error: Option<String>,
    result: Option<String>,
    stdout: String,
    idle: bool,
}

/// Runs `cells` in order on one kernel; the first that fails is the failure, named when there are several.
async fn run_cells(socket: &mut KernelSocket, cells: &[KernelCell], deadline: Deadline) -> Result<(), StepFailure> {
    for (index, cell) in cells.iter().enumerate() {
        execute(socket, cell, deadline).await.map_err(|failure| match cells.len() {
            1 => failure,
            total => {
                let code = truncate(&cell.code.split_whitespace().collect::<Vec<_>>().join(" "), 60);
                StepFailure { reason: format!("cell {} of {total} ({code}): {}", index + 1, failure.reason), ..failure }
            }
        })?;
    }
    Ok(())
}

/// Sends the cell's code as an `execute_request` and checks that its result (or printed output) is what the
/// cell expects.
pub async fn execute(socket: &mut KernelSocket, cell: &KernelCell, deadline: Deadline) -> Result<(), StepFailure> {
    let msg_id = uuid::Uuid::new_v4().simple().to_string();
    send_execute_request(socket, &cell.code, &msg_id, deadline).await?;
    let replies = await_replies(socket, &msg_id, deadline).await?;
    check_result(replies, cell)
}

async fn send_execute_request(
    socket: &mut KernelSocket,
    code: &str,
    msg_id: &str,
    deadline: Deadline,
) -> Result<(), StepFailure> {
    let request = json!({
        "header": {
            "msg_id": msg_id, "session": uuid::Uuid::new_v4().simple().to_string(), "username": "hubwatch",
            "msg_type": "execute_request", "version": "5.4",
            "date": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        },
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": false, "store_history": false, "user_expressions": {},
                    "allow_stdin": false, "stop_on_error": true},
    });
    match timeout_at(deadline.at, socket.send(Message::text(request.to_string()))).await {
        Err(_) => Err(deadline.timed_out(Stage::Execute)),
        Ok(Err(e)) => {
            Err(StepFailure::hub(Stage::Execute, format!("sending the execute request: {}", scrub(&e.to_string()))))
        }
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads the kernel's messages until both our `execute_reply` and the iopub `idle` have arrived.
async fn await_replies(socket: &mut KernelSocket, msg_id: &str, deadline: Deadline) -> Result<Replies, StepFailure> {
    let stage = Stage::Execute;
    let mut replies = Replies::default();
    while replies.reply_status.is_none() || !replies.idle {
        let message = match timeout_at(deadline.at, socket.next()).await {
            Err(_) => {
                let seen = if replies.reply_status.is_some() { "a reply but no idle status" } else { "no reply" };
                let budget = humantime::format_duration(deadline.budget);
                let reason = format!("the kernel did not finish executing within the {budget} timeout ({seen})");
                return Err(StepFailure::hub(stage, reason));
            }
            Ok(None) => return Err(StepFailure::hub(stage, "the server closed the kernel's websocket")),
            Ok(Some(Err(e))) => return Err(StepFailure::hub(stage, format!("websocket: {}", scrub(&e.to_string())))),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let why =
                    frame.map(|f| format!(" ({} {})", f.code, truncate(&scrub(&f.reason), 100))).unwrap_or_default();
                return Err(StepFailure::hub(stage, format!("the server closed the kernel's websocket{why}")));
            }
            // Pings are answered by tungstenite; binary frames belong to the v1 protocol, which is not offered.
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
        absorb(&frame, msg_id, &mut replies)?;
    }
    Ok(replies)
}

/// The execution's outcome: an error the code raised, a reply that was not ok, or a result the cell does not
/// expect.
fn check_result(replies: Replies, cell: &KernelCell) -> Result<(), StepFailure> {
    let stage = Stage::Execute;
    if let Some(error) = replies.error {
        return Err(StepFailure::hub(stage, format!("the code raised {error}")));
    }
    if replies.reply_status.as_deref() != Some("ok") {
        return Err(StepFailure::hub(
            stage,
            format!("execute_reply status {:?}", replies.reply_status.unwrap_or_default()),
        ));
    }
    let got = replies.result.as_deref().map(str::trim).filter(|r| !r.is_empty()).unwrap_or(replies.stdout.trim());
    if !cell.accepts(got) {
        return Err(StepFailure::hub(
            stage,
            format!("expected {} from {:?}, got {:?}", cell.describe(), cell.code, truncate(&scrub(got), 200)),
        ));
    }
    Ok(())
}

/// The fields of a kernel message the probe reads (Jupyter messaging protocol); the rest is skipped.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Frame {
    header: Header,
    parent_header: Header,
    content: Content,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Header {
    msg_type: Text,
    msg_id: Text,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Content {
    execution_state: Text,
    status: Text,
    data: Data,
    name: Text,
    text: Text,
    ename: Text,
    evalue: Text,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Data {
    #[serde(rename = "text/plain")]
    text_plain: Text,
}

/// Takes in one kernel message; a restart or death of the kernel fails the execution at once.
fn absorb(frame: &Frame, msg_id: &str, replies: &mut Replies) -> Result<(), StepFailure> {
    let msg_type = frame.header.msg_type.as_deref().unwrap_or("");
    let content = &frame.content;
    if msg_type == "status" {
        // A restart is announced with an empty parent header, so it is checked before filtering.
        match content.execution_state.as_deref() {
            Some("restarting") => {
                return Err(StepFailure::hub(
                    Stage::Execute,
                    "the kernel died and is restarting (it crashed while executing)",
                ));
            }
            Some("dead") => return Err(StepFailure::hub(Stage::Execute, "the kernel died")),
            _ => {}
        }
    }
    if frame.parent_header.msg_id.as_deref() != Some(msg_id) {
        return Ok(());
    }
    match msg_type {
        "status" if content.execution_state.as_deref() == Some("idle") => replies.idle = true,
        "execute_reply" => {
            replies.reply_status = Some(content.status.as_deref().unwrap_or("unknown").to_string());
        }
        "execute_result" => replies.result = content.data.text_plain.0.clone(),
        "stream" if content.name.as_deref() == Some("stdout") && replies.stdout.len() < 64 * 1024 => {
            replies.stdout.push_str(content.text.as_deref().unwrap_or(""));
        }
        "error" => {
            let ename = content.ename.as_deref().unwrap_or("an error");
            let evalue = content.evalue.as_deref().unwrap_or("");
            replies.error = Some(truncate(&scrub(&format!("{ename}: {evalue}")), 300));
        }
        _ => {}
    }
    Ok(())
}

/// `DELETE {server}api/kernels/{id}`; a kernel that is restarting answers 500 for a while, so that is retried.
pub async fn delete_kernel(
    http: &HttpClient,
    server: &Url,
    token: &Secret,
    kernel_id: &str,
    deadline: Deadline,
) -> Result<(), StepFailure> {
    let stage = Stage::DeleteKernel;
    let url = server
        .join(&format!("api/kernels/{kernel_id}"))
        .map_err(|e| StepFailure::hub(stage, format!("bad kernel id: {e}")))?;
    // Err(true): worth another try (the server answered 5xx); Err(false): final.
    let attempt = || async {
        let response = http
            .call(Method::DELETE, url.clone(), Auth::Token(token), None, deadline.at)
            .await
            .map_err(|e| (deadline.request_failure(stage, e), false))?;
        match response.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            s => Err((
                StepFailure::hub(stage, format!("deleting the kernel: {}", response.describe())),
                s.is_server_error(),
            )),
        }
    };
    attempt
        .retry(ConstantBuilder::default().with_delay(Duration::from_secs(1)).with_max_times(5))
        .sleep(tokio::time::sleep)
        .when(|(_, retry)| *retry)
        .await
        .map_err(|(failure, _)| failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg_type: &str, parent: &str, content: serde_json::Value) -> Frame {
        parse(json!({"header": {"msg_type": msg_type}, "parent_header": {"msg_id": parent}, "content": content}))
    }

    fn parse(frame: serde_json::Value) -> Frame {
        serde_json::from_value(frame).unwrap()
    }

    #[test]
    fn only_our_messages_count_and_both_reply_and_idle_are_needed() {
        let mut replies = Replies::default();
        absorb(&frame("status", "other", json!({"execution_state": "idle"})), "mine", &mut replies).unwrap();
        assert!(!replies.idle);
        absorb(&frame("execute_result", "mine", json!({"data": {"text/plain": "20"}})), "mine", &mut replies).unwrap();
        absorb(&frame("execute_reply", "mine", json!({"status": "ok"})), "mine", &mut replies).unwrap();
        assert!(!replies.idle);
        absorb(&frame("status", "mine", json!({"execution_state": "idle"})), "mine", &mut replies).unwrap();
        assert!(replies.idle);
        assert_eq!(replies.result.as_deref(), Some("20"));
    }

    #[test]
    fn a_restart_with_an_empty_parent_fails_the_execution() {
        let mut replies = Replies::default();
        let restarting = parse(
            json!({"header": {"msg_type": "status"}, "parent_header": {}, "content": {"execution_state": "restarting"}}),
        );
        let failure = absorb(&restarting, "mine", &mut replies).unwrap_err();
        assert_eq!(failure.stage, Stage::Execute);
        assert!(failure.reason.contains("restarting"));
    }

    #[test]
    fn errors_are_kept_with_name_and_value() {
        let mut replies = Replies::default();
        absorb(
            &frame("error", "mine", json!({"ename": "ZeroDivisionError", "evalue": "division by zero"})),
            "mine",
            &mut replies,
        )
        .unwrap();
        assert_eq!(replies.error.as_deref(), Some("ZeroDivisionError: division by zero"));
    }

    #[test]
    fn odd_fields_are_skipped_not_fatal() {
        let odd =
            parse(json!({"header": {"msg_type": "execute_result", "msg_id": 7}, "parent_header": {"msg_id": "mine"},
            "content": {"data": {"text/plain": "20", "image/png": [1, 2, {"x": [3]}]}, "execution_state": {"a": 1}}}));
        let mut replies = Replies::default();
        absorb(&odd, "mine", &mut replies).unwrap();
        assert_eq!(replies.result.as_deref(), Some("20"));
    }
}
