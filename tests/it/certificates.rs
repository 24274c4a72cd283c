//! TLS certificate expiry: hubwatch reads the certificate an https hub serves (here a TLS server on loopback
//! with a certificate made by openssl for the test, valid two days) and exports its `notAfter`; the chart's
//! alerts on that gauge are tested with promtool (charts/hubwatch/tests-promtool).

use crate::support::tls::certificate;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Serves TLS with `cert`/`key` on loopback (each connection: handshake, then nothing); returns the port.
async fn serve(cert: &std::path::Path, key: &std::path::Path) -> u16 {
    let acceptor = crate::support::serve::tls_acceptor(cert, key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    port
}

/// `notAfter` as openssl reads it.
fn openssl_end_date(cert: &std::path::Path) -> SystemTime {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let date = text.trim().strip_prefix("notAfter=").unwrap_or_else(|| panic!("{text}"));
    humantime::parse_rfc3339(&date.replace(' ', "T")).unwrap()
}

#[tokio::test]
async fn the_expiry_of_the_certificate_a_hub_serves_is_read_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = certificate(dir.path(), "hub");
    let port = serve(&cert, &key).await;
    let url = url::Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let expires = hubwatch::signals::certificates::expiry(&url).await.unwrap();
    assert_eq!(expires, openssl_end_date(&cert));
    let left = expires.duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(86_400) && left <= Duration::from_secs(2 * 86_400), "two days: {left:?}");

    let metrics = Arc::new(hubwatch::metrics::Metrics::new());
    let yaml = format!(
        "hubs: [{{name: tls, url: \"{url}\", token: {{env: T}}, users: [a, b]}}, {{name: closed, url: \"https://127.0.0.1:9/\", token: {{env: T}}, users: [c, d]}}]\n"
    );
    let config = hubwatch::config::Config::parse(&yaml, std::path::Path::new("c.yaml"), &|_| Some("t".into())).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let watching =
        tokio::spawn(hubwatch::signals::certificates::watch(Arc::new(config.clone()), metrics.clone(), stop.clone()));
    let exported = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
    crate::support::daemon::wait_for("the gauge", Duration::from_secs(20), async || {
        metrics
            .render()
            .contains(&format!("hubwatch_tls_certificate_expiry_timestamp_seconds{{hub=\"tls\"}} {exported}"))
    })
    .await;
    crate::support::daemon::wait_for("the failure count", Duration::from_secs(20), async || {
        metrics.render().contains("hubwatch_tls_certificate_check_failures_total{hub=\"closed\"} 1")
    })
    .await;
    stop.cancel();
    watching.await.unwrap();
}

/// A hub served over https is probed — login, its server's progress stream, the kernel's websocket — trusting
/// what the system trusts: here the test's authority given as `SSL_CERT_FILE`, as an operator adds a private
/// one. Without it every probe is refused at the certificate, in rustls's words.
#[tokio::test]
async fn a_hub_over_https_is_probed_trusting_the_systems_certificates_and_only_them() {
    use crate::support::stub_hub::{SERVICE_TOKEN, Stub};
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path(), "hub");
    let url = Stub::default().start_tls(&cert, &key).await;
    let config = dir.path().join("hubwatch.yaml");
    let yaml = format!("hubs:\n  - name: tls\n    url: {url}\n    token: {{env: T}}\n    users: [probe-1, probe-2]\n");
    std::fs::write(&config, yaml).unwrap();
    let check = async |trusted: Option<&std::path::Path>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubwatch"));
        command.args(["check", "--output", "json", "--config"]).arg(&config).env("T", SERVICE_TOKEN);
        command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        if let Some(ca) = trusted {
            command.env("SSL_CERT_FILE", ca);
        }
        let out = command.output().await.unwrap();
        let rows: Vec<serde_json::Value> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (rows, String::from_utf8_lossy(&out.stderr).to_string())
    };

    let (rows, stderr) = check(Some(&ca)).await;
    let results: Vec<(String, String)> =
        rows.iter().map(|r| (r["capability"].as_str().unwrap().into(), r["result"].as_str().unwrap().into())).collect();
    for capability in ["login", "server", "kernel", "home"] {
        let of_it: Vec<_> = results.iter().filter(|(c, _)| c == capability).collect();
        assert_eq!(of_it.len(), 2, "{capability}: a row per probe user: {rows:?} {stderr}");
        assert!(of_it.iter().all(|(_, result)| result == "ok"), "{capability} over https: {rows:?} {stderr}");
    }

    let (rows, stderr) = check(None).await;
    let login: Vec<_> = rows.iter().filter(|r| r["capability"] == "login").collect();
    assert_eq!(login.len(), 2, "{rows:?} {stderr}");
    for row in login {
        assert_eq!(row["result"], "failed", "{row}");
        let reason = row["reason"].as_str().unwrap();
        assert!(reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"), "{reason}");
    }
}
