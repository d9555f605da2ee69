//! Registering handlers: [`Router`] groups them under a prefix, [`Tachyon`] is the application.
//!
//! Both turn into a plain `axum::Router`, so axum's HTTP routes, state and tower layers work
//! beside the WebSocket routes.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;

use axum::routing::MethodRouter;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::handler::WebSocketHandler;

/// A group of WebSocket handlers under a common prefix, like FastAPI's `APIRouter`.
///
/// ```
/// use tachyon::{websocket, Router, Tachyon, WebSocket};
///
/// #[websocket("/notifications")]
/// async fn notifications(mut ws: WebSocket) -> tachyon::Result<()> {
///     ws.accept().await?;
///     ws.send_json(&serde_json::json!({"type": "connected"})).await
/// }
///
/// let api = Router::with_prefix("/api/v1").websocket(notifications);
/// let app = Tachyon::new().include_router(api);
/// assert_eq!(app.routes().collect::<Vec<_>>(), ["/api/v1/notifications"]);
/// ```
#[derive(Debug)]
#[must_use]
pub struct Router<S = ()> {
    prefix: String,
    routes: Vec<(String, MethodRouter<S>)>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            routes: Vec::new(),
        }
    }
}

impl<S> Router<S>
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
        }
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
    pub fn include_router(mut self, router: Router<S>) -> Self {
        for (path, route) in router.routes {
            self.add(join_paths(&router.prefix, &path), route);
        }
        self
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
/// use tachyon::{websocket, Tachyon, WebSocket};
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
    websockets: Router<S>,
    http: axum::Router<S>,
    state: S,
}

impl Tachyon<()> {
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
            websockets: Router::new(),
            http: axum::Router::new(),
            state,
        }
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
    pub fn include_router(mut self, router: Router<S>) -> Self {
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

    /// The application as an `axum::Router`, ready to serve or to extend with axum.
    pub fn into_router(self) -> axum::Router {
        let websockets = self
            .websockets
            .routes
            .into_iter()
            .fold(axum::Router::new(), |router, (path, route)| {
                router.route(&path, route)
            });
        websockets.merge(self.http).with_state(self.state)
    }

    /// Serves the application on `addr` until the process ends. Handlers can take the peer's
    /// address as `ConnectInfo<SocketAddr>`.
    ///
    /// # Errors
    /// If `addr` cannot be bound, or the server fails.
    pub async fn serve(self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        let app = self
            .into_router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).into_future().await
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
