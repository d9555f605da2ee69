//! Serving an app: the accept loop behind [`Tachyon::serve`](crate::Tachyon::serve).
//!
//! It is axum's `serve` with two differences that matter on the internet: a client must send
//! its whole request head within a timeout (axum's serve waits forever for half a head), and
//! HTTP/2 allows WebSocket handshakes (extended `CONNECT`, RFC 8441).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::connection::direct::{DirectSocket, SharedTcp};

/// Serves `router` on `listener` until `signal`, then lets the HTTP requests in flight finish,
/// for at most `drain_timeout` (the WebSocket connections are the caller's to shut down).
/// `handshake_timeout` bounds the wait for a request head.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    router: axum::Router,
    signal: F,
    handshake_timeout: Duration,
    drain_timeout: Duration,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin (as axum).
                    tracing::error!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        // Shared with the connection's WebSocket, if it upgrades: rooms then write broadcasts
        // straight into it (`connection/direct.rs`).
        let socket = Arc::new(stream);
        let service = TowerToHyperService::new(WithPeer {
            router: router.clone(),
            peer,
            socket: DirectSocket(Arc::clone(&socket)),
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(SharedTcp(socket)), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running at the shutdown deadline; dropping them");
    }
    Ok(())
}

/// The router, with the peer's address as `ConnectInfo<SocketAddr>` and the connection's
/// socket for a WebSocket upgrade.
#[derive(Clone)]
struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
    socket: DirectSocket,
}

impl Service<hyper::Request<Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = <axum::Router as Service<Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        <axum::Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.socket.clone());
        self.router.call(request)
    }
}
