//! [`Shutdown`]: graceful shutdown of the WebSocket side of a server.
//!
//! It knows every open connection of an app. Shutting down refuses new handshakes with `503`,
//! closes every connection with 1001 (Going Away) after the messages already queued for it,
//! waits for the handlers up to a deadline, then drops what is left.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::close::CloseCode;
use crate::connection::{ConnectionId, Shared};
use crate::error::{DisconnectKind, WebSocketDisconnect};

/// The close reason sent to every connection on shutdown.
const REASON: &str = "server shutting down";

/// Shuts down an app's WebSocket connections gracefully; clone it freely.
///
/// [`Tachyon::serve`](crate::Tachyon::serve) uses one on Ctrl-C or SIGTERM, and
/// [`Tachyon::serve_with_graceful_shutdown`](crate::Tachyon::serve_with_graceful_shutdown) on
/// any future. An app served by axum itself adds one as an extension and starts it from axum's
/// own graceful shutdown:
///
/// ```no_run
/// use std::time::Duration;
/// use axum::Extension;
/// use tachyon::{WebSocket, websocket};
/// use tachyon::shutdown::Shutdown;
///
/// #[websocket("/ws")]
/// async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     loop {
///         let text = ws.receive_text().await?; // on shutdown: a 1001 `ServerShutdown` disconnect
///         ws.send_text(text).await?;
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let shutdown = Shutdown::new();
/// let app = axum::Router::new()
///     .route(echo::PATH, echo::route())
///     .layer(Extension(shutdown.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(shutdown.clone().after(async {
///         let _ = tokio::signal::ctrl_c().await;
///     }))
///     .await?;
/// // axum waited for the HTTP requests; now the WebSocket handlers get 10 s to finish.
/// shutdown.wait(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    started: AtomicBool,
    connections: Mutex<HashMap<ConnectionId, Weak<Shared>>>,
    /// Signalled when the last connection ends.
    empty: Notify,
}

impl Shutdown {
    /// A shutdown handle with no connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the shutdown has started.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// Starts the shutdown: new handshakes get `503 Service Unavailable`, and every open
    /// connection is closed with 1001 after the messages already queued for it; its handler's
    /// `receive` returns a [`DisconnectKind::ServerShutdown`] disconnect. Returns at once.
    pub fn start(&self) {
        self.inner.started.store(true, Ordering::Release);
        // Copied out, so that no lock is held while closing.
        let open: Vec<Weak<Shared>> = self.lock().values().cloned().collect();
        for shared in open.iter().filter_map(Weak::upgrade) {
            close(&shared);
        }
    }

    /// A future that waits for `signal`, then [starts](Self::start) the shutdown: give it to
    /// axum's `with_graceful_shutdown`.
    pub async fn after<F>(self, signal: F)
    where
        F: Future + Send + 'static,
    {
        signal.await;
        self.start();
    }

    /// Waits until every connection has ended, at most `timeout`; then drops the connections
    /// left, with their handlers. Returns whether all ended in time.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let all_ended = async {
            loop {
                let notified = self.inner.empty.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.lock().is_empty() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(timeout, all_ended).await.is_ok() {
            return true;
        }
        let left: Vec<Weak<Shared>> = self.lock().values().cloned().collect();
        tracing::warn!(
            connections = left.len(),
            ?timeout,
            "WebSocket handlers still running at the shutdown deadline; dropping them"
        );
        for shared in left.iter().filter_map(Weak::upgrade) {
            shared.abort();
        }
        false
    }

    /// Starts the shutdown and waits for it, at most `timeout`.
    pub async fn shut_down(&self, timeout: Duration) -> bool {
        self.start();
        self.wait(timeout).await
    }

    /// Counts a new connection until the returned guard drops. A connection that opens after
    /// the shutdown started is closed at once.
    pub(crate) fn register(&self, shared: &Arc<Shared>) -> Registration {
        self.lock().insert(shared.id(), Arc::downgrade(shared));
        if self.is_started() {
            close(shared);
        }
        Registration {
            shutdown: self.clone(),
            id: shared.id(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConnectionId, Weak<Shared>>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn close(shared: &Shared) {
    let code = CloseCode::GOING_AWAY;
    let disconnect =
        WebSocketDisconnect::new(DisconnectKind::ServerShutdown, code.as_u16(), REASON);
    shared.close(code, REASON, disconnect);
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("started", &self.is_started())
            .field("connections", &self.connections())
            .finish()
    }
}

/// A connection counted by a [`Shutdown`]; dropping it uncounts the connection.
#[derive(Debug)]
pub(crate) struct Registration {
    shutdown: Shutdown,
    id: ConnectionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut connections = self.shutdown.lock();
        connections.remove(&self.id);
        let empty = connections.is_empty();
        drop(connections);
        if empty {
            self.shutdown.inner.empty.notify_waiters();
        }
    }
}
