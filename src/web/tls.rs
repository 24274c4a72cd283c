//! TLS for the pages (`web.tls`): a listener that completes each TLS handshake in the background (under a
//! deadline, so a client that never finishes it holds nothing up) and hands axum the connections that did.
//! The certificate and key are read again when their files change (a renewed certificate needs no restart).

use crate::config::TlsFiles;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once. Past it, connections wait in the kernel's backlog (and, when that is full,
/// are refused by it): a flood of clients that never finish a handshake costs a bounded amount of memory.
const HANDSHAKES_AT_ONCE: usize = 128;
/// How often the certificate files are looked at for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("web.tls: cannot read {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("web.tls: the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server configuration from the PEM files.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |file: &std::path::Path, reason: String| TlsError::Read { file: file.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| read(&files.cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(read(&files.cert_file, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| read(&files.key_file, e.to_string()))?;
    let config = ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let at = |file: &std::path::Path| std::fs::metadata(file).and_then(|m| m.modified()).ok();
    Some((at(&files.cert_file)?, at(&files.key_file)?))
}

/// How many handshakes may be under way, and for how long each.
struct Limits {
    at_once: usize,
    timeout: Duration,
    /// The most that were under way at once (tests read it).
    peak: std::sync::atomic::AtomicUsize,
}

/// Connections whose TLS handshake completed.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, files: TlsFiles) -> Result<Self, TlsError> {
        let config = load(&files)?;
        let local =
            tcp.local_addr().map_err(|e| TlsError::Read { file: "the listener".into(), reason: e.to_string() })?;
        let (sender, incoming) = mpsc::channel(64);
        let limits = Limits { at_once: HANDSHAKES_AT_ONCE, timeout: HANDSHAKE_TIMEOUT, peak: Default::default() };
        let acceptor = tokio::spawn(accept(tcp, files, config, sender, Arc::new(limits)));
        Ok(TlsListener { incoming, local, acceptor })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Accepts connections and shakes hands with each in the background; re-reads the certificate when its
/// files change (a bad new one is logged and the old one kept).
async fn accept(
    tcp: TcpListener,
    files: TlsFiles,
    mut config: Arc<ServerConfig>,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    limits: Arc<Limits>,
) {
    let mut handshakes = JoinSet::new();
    let (mut stamp, mut looked) = (modified(&files), tokio::time::Instant::now());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept(), if handshakes.len() < limits.at_once => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        if looked.elapsed() >= RELOAD_EVERY {
            looked = tokio::time::Instant::now();
            let now = modified(&files);
            if now != stamp {
                stamp = now;
                match load(&files) {
                    Ok(fresh) => {
                        config = fresh;
                        tracing::info!("web.tls: the certificate changed and was loaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "web.tls: cannot load the changed certificate; keeping the old one")
                    }
                }
            }
        }
        let (acceptor, done, timeout) = (TlsAcceptor::from(config.clone()), done.clone(), limits.timeout);
        handshakes.spawn(async move {
            if let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                let _ = done.send((tls, peer)).await;
            }
        });
        limits.peak.fetch_max(handshakes.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The acceptor is gone (shutting down): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A self-signed certificate for 127.0.0.1 (openssl, as tests/it/support/tls.rs makes them).
    fn certificate(dir: &std::path::Path) -> TlsFiles {
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key_file)
            .arg("-out")
            .arg(&cert_file)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success());
        TlsFiles { cert_file, key_file }
    }

    /// Clients that open a connection and never start the handshake hold at most `at_once` slots; the rest
    /// wait in the backlog, and a real client gets through once the idle ones time out.
    #[tokio::test]
    async fn handshakes_under_way_are_bounded_and_idle_ones_give_way() {
        crate::http::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let files = certificate(dir.path());
        let config = load(&files).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = tcp.local_addr().unwrap();
        let (sender, mut incoming) = mpsc::channel(4);
        // Real time (sockets), but no assertion on it: a slow machine only makes the test take longer.
        let limits = Arc::new(Limits { at_once: 2, timeout: Duration::from_secs(2), peak: Default::default() });
        let acceptor = tokio::spawn(accept(tcp, files.clone(), config, sender, limits.clone()));
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(address).await.unwrap());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&files.cert_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = TcpStream::connect(address).await.unwrap();
        let handshake = tokio::spawn(async move { connector.connect(name, stream).await.map(|_| ()) });
        assert_eq!(handshake.await.unwrap().map_err(|e| e.to_string()), Ok(()));
        let (_, peer) = incoming.recv().await.expect("the real client's connection came through");
        assert_eq!(peer.ip(), address.ip());
        assert_eq!(limits.peak.load(Ordering::Relaxed), 2, "never more than two handshakes at once");
        acceptor.abort();
        drop(idle);
    }
}
