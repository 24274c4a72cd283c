//! A stand-in served on a random loopback port.

/// Serves `app` on 127.0.0.1 at a free port, for the rest of the test; its address.
pub async fn on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
