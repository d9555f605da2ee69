//! The request side of a `#[websocket]` route: the generated code starts a [`Connection`] from
//! the request, extracts the handler's arguments, and runs the handler, whose decision answers
//! the handshake. After `accept`, the handler and its connection's driver run together in the
//! upgrade task.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::{Instrument, Span};
use tungstenite::handshake::derive_accept_key;

use crate::connection::deflate::{Agreed, Offer};
use crate::connection::direct::{Direct, DirectSocket, Io};
use crate::connection::driver::{Driver, Run, Socket};
use crate::connection::outcome::Outcome;
use crate::connection::read_ahead::ReadAhead;
use crate::connection::{self, ConnectionId, Shared};
use crate::handler::Failure;
use crate::handshake::{Accept, Decision, RequestHead, original_uri, upgrade_required};
use crate::metrics::{self, ConnectionMetrics};
use crate::origin;
use crate::params::Params;
use crate::sender::Sender;
use crate::settings::{Admission, Config, Settings};
use crate::shutdown::{Registration, Shutdown};
use crate::socket::WebSocket;

/// The answer to one handshake, watched from the request reaching the route to its response:
/// a refusal is logged at debug level, and with the `metrics` feature the handshake is counted
/// and timed. The code `#[websocket]` generates wraps the whole route in it.
#[doc(hidden)]
#[derive(Debug)]
pub struct Handshake {
    route: Option<MatchedPath>,
    metrics: metrics::Handshake,
}

impl Handshake {
    /// The request reached the route.
    pub fn begin(request: &Request) -> Self {
        Self {
            route: request.extensions().get::<MatchedPath>().cloned(),
            metrics: metrics::Handshake::start(),
        }
    }

    /// The route answers with `response`, which is handed back.
    pub fn answered(self, response: Response) -> Response {
        let route = route_label(self.route.as_ref());
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS && !status.is_success() {
            tracing::debug!(
                route = %route,
                status = status.as_u16(),
                "WebSocket handshake refused"
            );
        }
        self.metrics.answered(route, status);
        response
    }
}

/// The `route` of logs and metrics: the pattern axum matched (`/chat/{room}`), never the path.
fn route_label(route: Option<&MatchedPath>) -> &str {
    route.map_or("(unmatched)", MatchedPath::as_str)
}

/// A handshake request on its way to a handler. The code `#[websocket]` generates drives it:
/// `start`, then `path_param` and `extract` for each argument, then `run`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Connection {
    parts: Parts,
    upgrade: Upgrade,
    path_params: Params,
    /// The query string's parameters, parsed on first use.
    query: OnceLock<Params>,
    settings: Settings,
    shutdown: Option<Shutdown>,
    /// Its places under the connection limits, held for the connection's life.
    admission: Admission,
    /// The route's pattern, for logs and metrics.
    route: Option<MatchedPath>,
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send instead, made once per refused request (axum's \
              rejections are as large)"
)]
impl Connection {
    /// Checks that the request is a WebSocket handshake this route admits, and reads the path
    /// parameters. `handler` is the handler's own settings (its attribute's options), applied
    /// over those of the layers around the route. Nothing of the handler, not even its
    /// extractors, runs for a request refused here.
    ///
    /// # Errors
    /// The response to send instead: `426` for a plain HTTP request, axum's rejection for a
    /// malformed handshake, `403` for a page of another site, `503` when the server is shutting
    /// down or the route is at its connection limit.
    pub async fn start<S: Send + Sync>(
        request: Request,
        state: &S,
        handler: &Settings,
    ) -> Result<Self, Response> {
        let (mut parts, _body) = request.into_parts();
        // The route takes any method, for HTTP/2's `CONNECT`; the rest are not handshakes.
        if parts.method != Method::GET && parts.method != Method::CONNECT {
            return Err(method_not_allowed(original_uri(&parts).path()));
        }
        let shutdown = parts.extensions.get::<Shutdown>().cloned();
        if shutdown.as_ref().is_some_and(Shutdown::is_started) {
            return Err(shutting_down());
        }
        let settings = match parts.extensions.get::<Settings>() {
            Some(layers) => layers.clone().merge(handler),
            None => handler.clone(),
        };
        // axum checks that the key is there; RFC 6455 also wants it to be 16 bytes of base64.
        if parts.method == Method::GET
            && parts
                .headers
                .get(header::SEC_WEBSOCKET_KEY)
                .is_some_and(|key| !is_websocket_key(key.as_bytes()))
        {
            let body =
                "invalid `Sec-WebSocket-Key`: it must be 16 random bytes in base64 (RFC 6455)";
            return Err((StatusCode::BAD_REQUEST, body).into_response());
        }
        // axum's extractor checks the handshake and answers a bad one as axum would; the
        // upgrade itself is done here, to read the connection through `ReadAhead`, so its
        // handle (which the extractor takes) is kept first.
        let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
        match WebSocketUpgrade::from_request_parts(&mut parts, state).await {
            Ok(upgrade) => drop(upgrade),
            Err(_) if !parts.headers.contains_key(header::UPGRADE) => {
                return Err(upgrade_required(original_uri(&parts).path()));
            }
            Err(rejection) => return Err(rejection.into_response()),
        }
        // The extractor refuses a request without one: this is only in case that changes.
        let Some(on_upgrade) = on_upgrade else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        // As axum: HTTP/1 answers with the key's signature, HTTP/2 (extended `CONNECT`) with
        // `200` alone. Signed now, into a value of its own, so as not to keep a slice of hyper's
        // read buffer alive.
        let accept_key = if parts.version <= Version::HTTP_11 {
            parts
                .headers
                .get(header::SEC_WEBSOCKET_KEY)
                .and_then(|key| HeaderValue::try_from(derive_accept_key(key.as_bytes())).ok())
        } else {
            None
        };
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .map(|value| value.to_str().unwrap_or("(not text)"));
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| parts.uri.authority().map(|authority| authority.as_str()));
        if let Err(why) = origin::check(origin, host, settings.origin_policy()) {
            return Err((StatusCode::FORBIDDEN, why).into_response());
        }
        let Some(admission) = settings.admit() else {
            return Err(at_capacity());
        };
        let path_params = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(raw) => raw
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            Err(RawPathParamsRejection::MissingPathParams(_)) => Params::default(),
            Err(rejection) => return Err(rejection.into_response()),
        };
        let deflate = Offer::from_headers(&parts.headers);
        // Taken out of the request, so that only the connection holds it (and drops it when it
        // ends); over HTTP/2 it is the whole connection's socket, never one stream's.
        let direct = parts
            .extensions
            .remove::<DirectSocket>()
            .filter(|_| parts.version <= Version::HTTP_11)
            .map(|DirectSocket(socket)| socket);
        let route = parts.extensions.get::<MatchedPath>().cloned();
        Ok(Self {
            parts,
            upgrade: Upgrade {
                on_upgrade,
                accept_key,
                deflate,
                direct,
            },
            path_params,
            query: OnceLock::new(),
            settings,
            shutdown,
            admission,
            route,
        })
    }

    /// Parses path parameter `name` as a `T` (written `type_name` in the handler).
    ///
    /// # Errors
    /// `400` naming the parameter when the value does not parse; `500` when the route has no
    /// such parameter (the handler was mounted on a path that is not its own).
    pub fn path_param<T>(&self, name: &str, type_name: &str) -> Result<T, Response>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(raw) = self.path_params.get(name) else {
            tracing::error!(
                path = %self.parts.uri.path(),
                parameter = name,
                "WebSocket route has no path parameter for a handler argument; mount the handler \
                 on its own `PATH`"
            );
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        raw.parse().map_err(|error: T::Err| {
            let body = format!(
                "Invalid path parameter `{name}`: `{raw}` is not a valid `{type_name}` ({error})"
            );
            (StatusCode::BAD_REQUEST, body).into_response()
        })
    }

    /// Parses query parameter `name` (declared in the route) as a `T`, which is required.
    ///
    /// # Errors
    /// `400` naming the parameter when it is missing or does not parse.
    pub fn query_param<T>(&self, name: &str, type_name: &str) -> Result<T, Response>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional_query_param(name, type_name)? {
            Some(value) => Ok(value),
            None => {
                let body = format!(
                    "Missing query parameter `{name}`: this endpoint needs `?{name}=...` (a \
                     `{type_name}`)"
                );
                Err((StatusCode::BAD_REQUEST, body).into_response())
            }
        }
    }

    /// Parses query parameter `name` (declared in the route) as a `T`, if present.
    ///
    /// # Errors
    /// `400` naming the parameter when it does not parse.
    pub fn optional_query_param<T>(
        &self,
        name: &str,
        type_name: &str,
    ) -> Result<Option<T>, Response>
    where
        T: FromStr,
        T::Err: Display,
    {
        let query = self.query.get_or_init(|| {
            let uri = original_uri(&self.parts);
            uri.query().map(Params::from_query).unwrap_or_default()
        });
        let Some(raw) = query.get(name) else {
            return Ok(None);
        };
        raw.parse().map(Some).map_err(|error: T::Err| {
            let body = format!(
                "Invalid query parameter `{name}`: `{raw}` is not a valid `{type_name}` ({error})"
            );
            (StatusCode::BAD_REQUEST, body).into_response()
        })
    }

    /// Runs an axum extractor on the request.
    ///
    /// # Errors
    /// The extractor's rejection, as a response.
    pub async fn extract<T, S>(&mut self, state: &S) -> Result<T, Response>
    where
        T: FromRequestParts<S>,
        S: Send + Sync,
    {
        T::from_request_parts(&mut self.parts, state)
            .await
            .map_err(IntoResponse::into_response)
    }

    /// Runs the handler, whose result `into_result` reads (the generated code passes
    /// [`HandlerReturn::into_result`](crate::HandlerReturn::into_result) of its return type),
    /// and answers the handshake as it decides.
    pub async fn run<F, Fut, I>(self, handler: F, into_result: I) -> Response
    where
        F: FnOnce(WebSocket) -> Fut,
        Fut: Future + Send + 'static,
        I: FnOnce(Fut::Output) -> Result<(), Failure> + Send + 'static,
    {
        let Self {
            parts,
            upgrade,
            path_params,
            settings,
            shutdown,
            admission,
            route,
            ..
        } = self;
        let mut parts = parts;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let mut request = RequestHead::new(&mut parts, path_params);
        drop(parts);
        let uri = request.uri.clone();
        let id = request.id;
        let route = route_label(route.as_ref()).to_owned();
        // The connection's span, from the handshake to the close: the handler's own events (and
        // a `#[tracing::instrument]` handler's span) fall inside it.
        let span = tracing::info_span!(
            "websocket",
            route = %route,
            id = %id,
            peer = tracing::field::Empty,
        );
        if let Some(peer) = peer {
            span.record("peer", tracing::field::display(peer));
        }
        let config = settings.resolve();
        let explain = config.explain_failures;
        request.readable_rejections = config.readable_rejections;
        let (decision_tx, mut decision_rx) = oneshot::channel();
        let (socket_tx, socket_rx) = oneshot::channel();
        let socket = WebSocket::new(request, decision_tx, socket_rx);
        let handler = span.in_scope(|| handler(socket));
        let mut handler = Box::pin(
            AssertUnwindSafe(handler.map(into_result))
                .catch_unwind()
                .instrument(span.clone()),
        );

        let decision = tokio::select! {
            biased;
            decision = &mut decision_rx => decision.ok(),
            outcome = &mut handler => {
                // The handler finished; a decision may have been sent just before.
                let outcome = Outcome::new(outcome);
                return match decision_rx.try_recv() {
                    Ok(Decision::Reject(response)) => {
                        span.in_scope(|| outcome.log(&uri, None));
                        response
                    }
                    // It asked to accept, then gave up waiting: upgrade and close at once.
                    Ok(Decision::Accept(accept)) => Upgraded {
                        id,
                        config,
                        shutdown,
                        uri,
                        admission,
                        route,
                        span,
                    }
                    .respond(upgrade, accept, None, std::future::ready(outcome)),
                    Err(_) => span.in_scope(|| outcome.before_accept(&uri, explain)),
                };
            }
        };

        match decision {
            Some(Decision::Accept(accept)) => Upgraded {
                id,
                config,
                shutdown,
                uri,
                admission,
                route,
                span,
            }
            .respond(upgrade, accept, Some(socket_tx), handler.map(Outcome::new)),
            Some(Decision::Reject(response)) => {
                // The client gets its answer now; the handler may still run (to log, say).
                tokio::spawn(
                    async move { Outcome::new(handler.await).log(&uri, None) }.instrument(span),
                );
                response
            }
            None => {
                let outcome = Outcome::new(handler.await);
                span.in_scope(|| outcome.before_accept(&uri, explain))
            }
        }
    }
}

/// What an accepted connection runs with.
struct Upgraded {
    id: ConnectionId,
    config: Config,
    shutdown: Option<Shutdown>,
    uri: Uri,
    admission: Admission,
    /// The route's pattern (the label of its metrics).
    route: String,
    /// The connection's span: the upgrade task runs in it.
    span: Span,
}

impl Upgraded {
    /// Answers the handshake with `101`; the upgrade task then runs [`start`](Self::start)'s
    /// future.
    fn respond<H>(
        self,
        upgrade: Upgrade,
        accept: Accept,
        handler_socket: Option<oneshot::Sender<Sender>>,
        handler: H,
    ) -> Response
    where
        H: Future<Output = Outcome> + Send + 'static,
    {
        let config = self.config;
        let span = self.span.clone();
        // Boxed: what the upgrade task captures stays allocated as long as it runs.
        let connection = Box::new(self);
        upgrade.respond(accept, &config, span, move |socket, deflate, direct| {
            connection.start(socket, deflate, direct, handler_socket, handler)
        })
    }

    /// The future of the upgrade task: the handler's remaining future (`handler`) and the
    /// connection's driver, until both are done. `handler_socket`: where the handler waits for
    /// its connection (`None` when it already ended). Not an `async fn`, whose future would
    /// keep copies of its arguments beside the driver for the connection's whole life.
    fn start<H>(
        self: Box<Self>,
        socket: Socket,
        deflate: Option<Agreed>,
        direct: Option<Direct>,
        handler_socket: Option<oneshot::Sender<Sender>>,
        handler: H,
    ) -> Run<H, (connection::Live, Option<Registration>, Admission)>
    where
        H: Future<Output = Outcome>,
    {
        let Self {
            id,
            config,
            shutdown,
            uri,
            admission,
            route,
            span: _,
        } = *self;
        let metrics = ConnectionMetrics::new(&route);
        let shared = Shared::new(&config, id, direct, deflate, metrics);
        let live = connection::Live::new(&shared);
        let registration = shutdown.map(|shutdown| shutdown.register(&shared));
        let driver = Driver::new(socket, Arc::clone(&shared), &config, deflate);
        let delivered = handler_socket.is_some_and(|handler_socket| {
            handler_socket
                .send(Sender::new(Arc::clone(&shared)))
                .is_ok()
        });
        if !delivered {
            // The handler ended, or dropped its socket while accepting: nobody holds it.
            shared.release_socket();
        }
        // Dropped in this order: the connection is counted closed (and logged) before it gives
        // its shutdown registration back, so a shutdown that waited for it sees it all.
        connection::run(handler, driver, uri, (live, registration, admission))
    }
}

/// The upgrade of an accepted handshake, done here rather than by axum's `WebSocketUpgrade`,
/// which hides the connection's IO: the connection is read through [`ReadAhead`].
#[derive(Debug)]
struct Upgrade {
    /// Resolves to the connection once the response has gone out.
    on_upgrade: OnUpgrade,
    /// The `Sec-WebSocket-Accept` to answer with; `None` over HTTP/2, which answers `200`.
    accept_key: Option<HeaderValue>,
    /// The client's offer of permessage-deflate, if it made one.
    deflate: Option<Offer>,
    /// The TCP socket, for broadcasters to write into (`Tachyon::serve` over HTTP/1.1 only).
    direct: Option<Arc<TcpStream>>,
}

impl Upgrade {
    /// The response that accepts the handshake, built as axum's `WebSocketUpgrade::on_upgrade`
    /// builds it; `callback` runs with the socket in a task of its own once the upgrade is done.
    fn respond<C, Fut>(self, accept: Accept, config: &Config, span: Span, callback: C) -> Response
    where
        C: FnOnce(Socket, Option<Agreed>, Option<Direct>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self {
            on_upgrade,
            accept_key,
            deflate,
            direct,
        } = self;
        let deflate = deflate
            .zip(config.deflate.as_ref())
            .map(|(offer, settings)| offer.accept(settings));
        let agreed = deflate.as_ref().map(|(agreed, _)| *agreed);
        // Broadcasters write into the upgraded IO under a lock unless they reach the TCP socket
        // itself, the connection is an HTTP/2 stream, or every frame goes through the
        // connection's own compressor (see `direct.rs`).
        let lock = direct.is_none()
            && accept_key.is_some()
            && !agreed.is_some_and(|agreed| agreed.server_takeover);
        tokio::spawn(
            async move {
                let upgraded = match on_upgrade.await {
                    Ok(upgraded) => upgraded,
                    Err(error) => {
                        tracing::debug!(
                            %error,
                            "WebSocket upgrade failed after the handshake was accepted"
                        );
                        return;
                    }
                };
                let (io, direct) = match direct {
                    Some(socket) => (Io::Owned(TokioIo::new(upgraded)), Some(Direct::Tcp(socket))),
                    None => Io::new(upgraded, lock),
                };
                callback(ReadAhead::new(io), agreed, direct).await;
            }
            .instrument(span),
        );

        let mut response = match accept_key {
            Some(accept_key) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
                response
            }
            // HTTP/2 (RFC 8441, RFC 9113 section 8.5): a `2xx` with an empty body.
            None => Response::new(Body::empty()),
        };
        let (subprotocol, headers) = accept.into_parts();
        if let Some(value) = subprotocol.and_then(|protocol| HeaderValue::try_from(protocol).ok()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        for (name, value) in headers {
            // Extensions are the server's to agree to: a handler's header would promise one
            // the connection does not speak.
            if name != header::SEC_WEBSOCKET_EXTENSIONS {
                response.headers_mut().append(name, value);
            }
        }
        if let Some((_, answer)) = deflate {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
        }
        response
    }
}

/// Whether `key` is the base64 of 16 bytes: 22 characters of the alphabet, the last of which
/// carries only 2 bits, then `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let base64 = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/';
    key.len() == 24
        && key[..22].iter().all(base64)
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
        && key.ends_with(b"==")
}

/// `405 Method Not Allowed`, for a method that cannot open a WebSocket.
fn method_not_allowed(path: &str) -> Response {
    let body = format!(
        "`{path}` is a WebSocket endpoint: open it with a WebSocket client (a `GET` with \
         `Upgrade: websocket`)"
    );
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static("GET"))],
        body,
    )
        .into_response()
}

/// `503 Service Unavailable`, for a handshake beyond a connection limit.
fn at_capacity() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this WebSocket endpoint is at its connection limit: try again later",
    )
        .into_response()
}

/// `503 Service Unavailable`, for a handshake that arrives during shutdown.
fn shutting_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down: reconnect to another instance or later",
    )
        .into_response()
}
