//! Registering handlers: [`WebSocketRouter`] groups them under a prefix, [`Tachyon`] is the application.
//!
//! Both turn into a plain `axum::Router`, so axum's HTTP routes, state and tower layers work
//! beside the WebSocket routes.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Extension;
use axum::routing::MethodRouter;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::handler::WebSocketHandler;
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// A group of WebSocket handlers under a common prefix, like FastAPI's `APIRouter`.
///
/// ```
/// use tachyon::{Tachyon, WebSocket, WebSocketRouter, websocket};
///
/// #[websocket("/notifications")]
/// async fn notifications(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     ws.send_json(&serde_json::json!({"type": "connected"})).await
/// }
///
/// let api = WebSocketRouter::with_prefix("/api/v1").websocket(notifications);
/// let app = Tachyon::new().include_router(api);
/// assert_eq!(app.routes().collect::<Vec<_>>(), ["/api/v1/notifications"]);
/// ```
#[derive(Debug)]
#[must_use]
pub struct WebSocketRouter<S = ()> {
    prefix: String,
    routes: Vec<(String, MethodRouter<S>)>,
    settings: Option<Settings>,
}

impl<S> Default for WebSocketRouter<S> {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            routes: Vec::new(),
            settings: None,
        }
    }
}

impl<S> WebSocketRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// A router without a prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// A router whose routes all start with `prefix` (`"/api/v1"`, in axum's path syntax; slashes
    /// at either end do not matter, and an empty prefix adds nothing).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            routes: Vec::new(),
            settings: None,
        }
    }

    /// Connection settings for every route of this router (and of the routers it includes),
    /// over the app's; a handler's own attribute options override them in turn.
    ///
    /// ```
    /// use tachyon::{Settings, WebSocketRouter};
    ///
    /// let uploads: WebSocketRouter = WebSocketRouter::with_prefix("/uploads")
    ///     .settings(Settings::new().max_message_size(16 * 1024 * 1024));
    /// ```
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(match self.settings {
            Some(current) => current.merge(&settings),
            None => settings,
        });
        self
    }

    /// Registers a `#[websocket]` handler at its path, below this router's prefix.
    ///
    /// # Panics
    /// If the path is already registered on this router.
    #[track_caller]
    pub fn websocket<H: WebSocketHandler<S, Args>, Args>(mut self, _handler: H) -> Self {
        self.add(H::PATH.to_owned(), H::method_router());
        self
    }

    /// Adds every route of `router`, below both prefixes.
    ///
    /// # Panics
    /// If one of its paths is already registered on this router.
    #[track_caller]
    pub fn include_router(mut self, router: WebSocketRouter<S>) -> Self {
        for (path, route) in router.into_routes() {
            self.add(path, route);
        }
        self
    }

    /// The routes with their full paths below this router's prefix, each carrying this
    /// router's settings.
    fn into_routes(self) -> impl Iterator<Item = (String, MethodRouter<S>)> {
        let Self {
            prefix,
            routes,
            settings,
        } = self;
        routes.into_iter().map(move |(path, route)| {
            let route = match &settings {
                Some(settings) => route.layer(settings.clone()),
                None => route,
            };
            (join_paths(&prefix, &path), route)
        })
    }

    /// The registered paths, below this router's prefix.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(path, _)| path.as_str())
    }

    #[track_caller]
    fn add(&mut self, path: String, route: MethodRouter<S>) {
        assert!(
            !self.routes().any(|existing| existing == path),
            "tachyon: the WebSocket route `{path}` is registered twice; each path can have one \
             handler"
        );
        self.routes.push((path, route));
    }
}

/// The application: WebSocket handlers, routers and, if you like, axum HTTP routes.
///
/// ```no_run
/// use tachyon::{Tachyon, WebSocket, websocket};
///
/// #[websocket("/ws")]
/// async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     loop {
///         let text = ws.receive_text().await?;
///         ws.send_text(format!("Echo: {text}")).await?;
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// Tachyon::new().websocket(echo).serve("127.0.0.1:8000").await
/// # }
/// ```
///
/// With shared state, start from [`Tachyon::with_state`]; handlers take it as `State<T>`.
/// `Tachyon` converts into an `axum::Router` (`let router: axum::Router = app.into();`) for
/// anything axum does: nesting, layers, its own `serve`.
#[derive(Debug)]
#[must_use]
pub struct Tachyon<S = ()> {
    websockets: WebSocketRouter<S>,
    http: axum::Router<S>,
    state: S,
    settings: Settings,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    handshake_timeout: Duration,
}

impl Tachyon<()> {
    /// The default of [`handshake_timeout`](Self::handshake_timeout): 10 s.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default of [`shutdown_timeout`](Self::shutdown_timeout): 10 s.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

    /// An application without shared state.
    pub fn new() -> Self {
        Self::with_state(())
    }
}

impl Default for Tachyon<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Tachyon<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// An application whose handlers (and HTTP routes) can extract `State<S>`.
    pub fn with_state(state: S) -> Self {
        Self {
            websockets: WebSocketRouter::new(),
            http: axum::Router::new(),
            state,
            settings: Settings::new(),
            shutdown: Shutdown::new(),
            shutdown_timeout: Tachyon::DEFAULT_SHUTDOWN_TIMEOUT,
            handshake_timeout: Tachyon::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Connection settings for every WebSocket route of the app; routers and handlers can
    /// override them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tachyon::{Settings, Tachyon};
    ///
    /// let app = Tachyon::new().settings(
    ///     Settings::new()
    ///         .keepalive_interval(Duration::from_secs(30))
    ///         .idle_timeout(Duration::from_secs(600)),
    /// );
    /// ```
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = self.settings.merge(&settings);
        self
    }

    /// How long a client may take to send its whole request head, once connected, before
    /// [`serve`](Self::serve) closes the connection. Default 10 s: a client that sends half a
    /// head and then nothing costs a connection for only that long.
    ///
    /// An app served by axum's or hyper's own server gets the same from hyper-util's builder:
    ///
    /// ```
    /// use std::time::Duration;
    /// use hyper_util::rt::{TokioExecutor, TokioTimer};
    ///
    /// let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    /// builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
    /// builder.http2().enable_connect_protocol(); // WebSockets over HTTP/2
    /// // then `builder.serve_connection_with_upgrades(io, service)` for each accepted connection
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a graceful shutdown waits for the handlers before dropping them. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The app's [`Shutdown`]: it counts the open connections and can start the shutdown
    /// from anywhere (the `serve` methods start it on their signal).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Registers a `#[websocket]` handler at its path.
    ///
    /// # Panics
    /// If the path is already registered.
    #[track_caller]
    pub fn websocket<H: WebSocketHandler<S, Args>, Args>(mut self, handler: H) -> Self {
        self.websockets = self.websockets.websocket(handler);
        self
    }

    /// Adds every route of `router`, below its prefix.
    ///
    /// # Panics
    /// If one of its paths is already registered.
    #[track_caller]
    pub fn include_router(mut self, router: WebSocketRouter<S>) -> Self {
        self.websockets = self.websockets.include_router(router);
        self
    }

    /// Merges an axum router: HTTP routes (and the layers on them) served beside the WebSocket
    /// routes.
    ///
    /// # Panics
    /// When the app becomes an `axum::Router`, as `axum::Router::merge` does, if `router` has a
    /// `GET` route on the path of a WebSocket route.
    pub fn merge(mut self, router: axum::Router<S>) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// The registered WebSocket paths, in the order they were registered.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.websockets.routes()
    }

    /// The application as an `axum::Router`, ready to serve or to extend with axum. The app's
    /// [`Settings`] and [`Shutdown`] travel with it as request extensions.
    pub fn into_router(self) -> axum::Router {
        let websockets = self
            .websockets
            .into_routes()
            .fold(axum::Router::new(), |router, (path, route)| {
                router.route(&path, route)
            });
        websockets
            .merge(self.http)
            .layer(self.settings)
            .layer(Extension(self.shutdown))
            .with_state(self.state)
    }

    /// Serves the application on `addr` until Ctrl-C or SIGTERM, then shuts down gracefully
    /// (see [`serve_with_graceful_shutdown`](Self::serve_with_graceful_shutdown)). Handlers can
    /// take the peer's address as `ConnectInfo<SocketAddr>`. HTTP/1.1 and HTTP/2 (with
    /// WebSockets over HTTP/2, RFC 8441) are served; a client that does not send its request
    /// head within [`handshake_timeout`](Self::handshake_timeout) is disconnected.
    ///
    /// # Errors
    /// If `addr` cannot be bound, or the server fails.
    pub async fn serve(self, addr: impl ToSocketAddrs) -> io::Result<()> {
        self.serve_with_graceful_shutdown(addr, terminate()).await
    }

    /// Serves the application on `addr` until `signal` completes, then shuts down gracefully:
    /// new handshakes get `503`, every open connection receives what is queued for it and then
    /// a 1001 close frame, and the handlers get [`shutdown_timeout`](Self::shutdown_timeout) to
    /// end before they are dropped.
    ///
    /// # Errors
    /// If `addr` cannot be bound, or the server fails.
    pub async fn serve_with_graceful_shutdown<F>(
        self,
        addr: impl ToSocketAddrs,
        signal: F,
    ) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        self.serve_listener(listener, signal).await
    }

    /// As [`serve_with_graceful_shutdown`](Self::serve_with_graceful_shutdown), on a listener
    /// bound already (say to port 0, to learn the port first).
    ///
    /// # Errors
    /// If the server fails.
    pub async fn serve_listener<F>(self, listener: TcpListener, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let (timeout, handshake_timeout) = (self.shutdown_timeout, self.handshake_timeout);
        let signal = shutdown.clone().after(signal);
        crate::serve::serve(
            listener,
            self.into_router(),
            signal,
            handshake_timeout,
            timeout,
        )
        .await?;
        shutdown.wait(timeout).await;
        Ok(())
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn terminate() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

impl<S> From<Tachyon<S>> for axum::Router
where
    S: Clone + Send + Sync + 'static,
{
    fn from(app: Tachyon<S>) -> Self {
        app.into_router()
    }
}

/// Joins a router prefix and a route path with exactly one `/` between them, whatever slashes
/// either was written with. An empty prefix leaves the path as it is (with a leading `/`).
fn join_paths(prefix: &str, path: &str) -> String {
    let mut joined = String::with_capacity(prefix.len() + path.len() + 1);
    for segment in prefix.split('/').filter(|segment| !segment.is_empty()) {
        joined.push('/');
        joined.push_str(segment);
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        if joined.is_empty() {
            joined.push('/');
        }
    } else {
        joined.push('/');
        joined.push_str(path);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::join_paths;

    #[test]
    fn prefixes_join_with_one_slash() {
        for (prefix, path) in [
            ("/api/v1", "/notifications"),
            ("/api/v1/", "/notifications"),
            ("api/v1", "notifications"),
            ("/api/v1//", "//notifications"),
            ("//api//v1", "/notifications"),
        ] {
            assert_eq!(
                join_paths(prefix, path),
                "/api/v1/notifications",
                "{prefix} + {path}"
            );
        }
    }

    #[test]
    fn an_empty_prefix_merges() {
        assert_eq!(join_paths("", "/ws"), "/ws");
        assert_eq!(join_paths("/", "/ws/{id}"), "/ws/{id}");
        assert_eq!(join_paths("", "/"), "/");
    }

    #[test]
    fn the_root_path_under_a_prefix_is_the_prefix() {
        assert_eq!(join_paths("/api", "/"), "/api");
    }

    #[test]
    fn a_trailing_slash_on_the_path_is_kept() {
        assert_eq!(join_paths("/api", "/ws/"), "/api/ws/");
    }
}
