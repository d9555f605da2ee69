//! The handshake, decided by the handler.
//!
//! axum answers a WebSocket request with `101` first and runs the socket code afterwards. Tachyon
//! turns this around: the handler starts while the request is still open, and the HTTP answer
//! waits for what it does. `accept` gives the `101` (and the handler continues in axum's upgrade
//! task, owning the socket: no extra task, no channel per message); `deny` or `close` give
//! their response; a handler that returns first gives `403`, one that fails gives `500`.
//! When the handler ends after `accept`, Tachyon sends the close frame its outcome calls for.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::ws::{self, CloseFrame, WebSocketUpgrade};
use axum::extract::{FromRequestParts, OriginalUri, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::close::{CloseCode, truncate_reason};
use crate::error::WebSocketDisconnect;
use crate::handler::Failure;
use crate::params::Params;
use crate::socket::WebSocket;

/// How long Tachyon waits for the client's reply to a close frame before dropping the
/// connection.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options for [`WebSocket::accept_with`]: a subprotocol and extra response headers.
///
/// ```
/// use tachyon::Accept;
/// use axum::http::{HeaderName, HeaderValue};
///
/// let accept = Accept::new()
///     .subprotocol("chat.v2")
///     .header(HeaderName::from_static("x-server"), HeaderValue::from_static("tachyon"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Accept {
    subprotocol: Option<String>,
    headers: HeaderMap,
}

impl Accept {
    /// A plain accept: no subprotocol, no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Selects `protocol`, which must be one the client offered
    /// ([`WebSocket::requested_subprotocols`]).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Adds a header to the `101 Switching Protocols` response.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    pub(crate) fn chosen_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }
}

/// What the handler decided about the handshake.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept(Accept),
    Reject(Response),
}

/// What the handshake request said, kept for the handler.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) path_params: Params,
    pub(crate) query_params: Params,
}

impl RequestHead {
    fn new(parts: Parts, path_params: Params) -> Self {
        let uri = original_uri(&parts);
        let query_params = uri.query().map(Params::from_query).unwrap_or_default();
        Self {
            uri,
            headers: parts.headers,
            path_params,
            query_params,
        }
    }

    pub(crate) fn requested_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|protocol| !protocol.is_empty())
    }
}

/// The connection as the handler left it, handed back when its `WebSocket` is dropped.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Still open: Tachyon sends the close frame.
    Open(ws::WebSocket),
    /// The handler sent a close frame: Tachyon waits for the reply.
    Closing(ws::WebSocket),
    /// The client is gone.
    Disconnected(WebSocketDisconnect),
}

impl Ended {
    /// Ends the connection with `code` (unless it is already closing or gone) and completes the
    /// close handshake, giving up after [`CLOSE_TIMEOUT`] on a client that stopped reading or
    /// never answers.
    async fn finish(self, code: CloseCode, reason: &str) {
        let (mut socket, frame) = match self {
            Self::Open(socket) => {
                let frame = CloseFrame {
                    code: code.as_u16(),
                    reason: truncate_reason(reason).into(),
                };
                (socket, Some(frame))
            }
            Self::Closing(socket) => (socket, None),
            Self::Disconnected(_) => return,
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if let Some(frame) = frame {
                if socket.send(ws::Message::Close(Some(frame))).await.is_err() {
                    return;
                }
            }
            // Wait for the client's close reply (or the end of the connection), so the client
            // sees a clean close rather than a reset.
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, ws::Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Closes normally from a detached socket (one that outlived its handler).
    pub(crate) fn close_detached(self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.finish(CloseCode::NORMAL, ""));
        }
    }
}

/// The `403` sent when a handler closes before accepting.
pub(crate) fn rejected_by_close(code: CloseCode, reason: &str) -> Response {
    let mut body = format!("WebSocket connection rejected by the server (close code {code}");
    if !reason.is_empty() {
        body.push_str(": ");
        body.push_str(reason);
    }
    body.push(')');
    (StatusCode::FORBIDDEN, body).into_response()
}

/// A handshake request on its way to a handler. The code `#[websocket]` generates drives it:
/// `start`, then `path_param` and `extract` for each argument, then `run`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Connection {
    parts: Parts,
    upgrade: WebSocketUpgrade,
    path_params: Params,
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send instead, made once per refused request (axum's \
              rejections are as large)"
)]
impl Connection {
    /// Checks that the request is a WebSocket handshake and reads the path parameters.
    ///
    /// # Errors
    /// The response to send instead: `426` for a plain HTTP request, axum's rejection for a
    /// malformed handshake.
    pub async fn start<S: Send + Sync>(request: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, _body) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, state).await {
            Ok(upgrade) => upgrade,
            Err(_) if !parts.headers.contains_key(header::UPGRADE) => {
                return Err(upgrade_required(original_uri(&parts).path()));
            }
            Err(rejection) => return Err(rejection.into_response()),
        };
        let path_params = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(raw) => raw
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            Err(RawPathParamsRejection::MissingPathParams(_)) => Params::default(),
            Err(rejection) => return Err(rejection.into_response()),
        };
        Ok(Self {
            parts,
            upgrade,
            path_params,
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

    /// Runs the handler, whose result the generated code has already read through
    /// [`HandlerReturn`](crate::HandlerReturn), and answers the handshake as it decides.
    pub async fn run<F, Fut>(self, handler: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let Self {
            parts,
            upgrade,
            path_params,
        } = self;
        let request = RequestHead::new(parts, path_params);
        let uri = request.uri.clone();
        let (decision_tx, mut decision_rx) = oneshot::channel();
        let (socket_tx, socket_rx) = oneshot::channel();
        let (ended_tx, mut ended_rx) = oneshot::channel();
        let socket = WebSocket::new(request, decision_tx, socket_rx, ended_tx);
        let mut handler = Box::pin(AssertUnwindSafe(handler(socket)).catch_unwind());

        let decision = tokio::select! {
            biased;
            decision = &mut decision_rx => decision.ok(),
            outcome = &mut handler => {
                // The handler finished; a decision may have been sent just before.
                let outcome = Outcome::new(outcome);
                return match decision_rx.try_recv() {
                    Ok(Decision::Reject(response)) => {
                        outcome.log(&uri, None);
                        response
                    }
                    // It asked to accept, then gave up waiting: upgrade and close at once.
                    Ok(Decision::Accept(accept)) => respond_upgrade(upgrade, accept, move |socket| {
                        outcome.finish(uri, Some(Ended::Open(socket)))
                    }),
                    Err(_) => outcome.before_accept(&uri),
                };
            }
        };

        match decision {
            Some(Decision::Accept(accept)) => {
                respond_upgrade(upgrade, accept, move |socket| async move {
                    // If the handler dropped its socket mid-accept, the connection comes back.
                    let orphan = socket_tx.send(socket).err();
                    let outcome = Outcome::new(handler.await);
                    // A socket that outlives the handler closes itself when dropped, not here.
                    ended_rx.close();
                    let ended = match orphan {
                        Some(socket) => Some(Ended::Open(socket)),
                        None => ended_rx.try_recv().ok(),
                    };
                    outcome.finish(uri, ended).await;
                })
            }
            Some(Decision::Reject(response)) => {
                // The client gets its answer now; the handler may still run (to log, say).
                tokio::spawn(async move { Outcome::new(handler.await).log(&uri, None) });
                response
            }
            None => Outcome::new(handler.await).before_accept(&uri),
        }
    }
}

fn respond_upgrade<C, Fut>(upgrade: WebSocketUpgrade, accept: Accept, callback: C) -> Response
where
    C: FnOnce(ws::WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Accept {
        subprotocol,
        headers,
    } = accept;
    let mut upgrade = upgrade.on_failed_upgrade(|error| {
        tracing::debug!(%error, "WebSocket upgrade failed after the handshake was accepted");
    });
    if let Some(value) = subprotocol.and_then(|protocol| HeaderValue::try_from(protocol).ok()) {
        upgrade.set_selected_protocol(value);
    }
    let mut response = upgrade.on_upgrade(callback);
    response.headers_mut().extend(headers);
    response
}

/// The request's URI as the client sent it: `axum::Router::nest` strips its prefix from
/// `parts.uri`, and keeps the original in an extension.
fn original_uri(parts: &Parts) -> Uri {
    parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |original| original.0.clone())
}

/// `426 Upgrade Required`, for a plain HTTP request to a WebSocket route.
fn upgrade_required(path: &str) -> Response {
    let body = format!(
        "`{path}` is a WebSocket endpoint: connect with a WebSocket client (this request has no \
         `Upgrade: websocket` header)"
    );
    (
        StatusCode::UPGRADE_REQUIRED,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
        ],
        body,
    )
        .into_response()
}

/// How a handler ended.
#[derive(Debug)]
enum Outcome {
    Completed,
    Failed(Failure),
    Panicked(String),
}

impl Outcome {
    fn new(result: std::thread::Result<Result<(), Failure>>) -> Self {
        match result {
            Ok(Ok(())) => Self::Completed,
            Ok(Err(failure)) => Self::Failed(failure),
            Err(payload) => Self::Panicked(panic_message(payload.as_ref()).to_owned()),
        }
    }

    /// Logs a failure: as an error, unless the client leaving is what ended the handler.
    fn log(&self, uri: &Uri, gone: Option<&WebSocketDisconnect>) {
        match self {
            Self::Completed => {}
            // The client leaving, returned as is (possibly inside an opaque error type such as
            // `anyhow::Error`, recognised by its text): not a failure of the handler.
            Self::Failed(failure)
                if failure.is_disconnect()
                    || gone.is_some_and(|gone| failure.to_string() == gone.to_string()) =>
            {
                let code = gone.map(|disconnect| disconnect.code);
                tracing::debug!(
                    path = %uri.path(),
                    code,
                    ending = %failure,
                    "WebSocket client disconnected"
                );
            }
            Self::Failed(failure) => {
                tracing::error!(path = %uri.path(), error = %failure, "WebSocket handler failed");
            }
            Self::Panicked(message) => {
                tracing::error!(path = %uri.path(), panic = %message, "WebSocket handler panicked");
            }
        }
    }

    /// The answer to a handshake the handler never decided.
    fn before_accept(self, uri: &Uri) -> Response {
        self.log(uri, None);
        match self {
            Self::Completed => (
                StatusCode::FORBIDDEN,
                "WebSocket connection rejected: the handler returned without accepting it",
            )
                .into_response(),
            Self::Failed(_) | Self::Panicked(_) => {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }

    /// Ends an accepted connection as the outcome calls for: 1000 after success, 1011 with the
    /// error text after a failure or a panic.
    async fn finish(self, uri: Uri, ended: Option<Ended>) {
        let gone = match &ended {
            Some(Ended::Disconnected(disconnect)) => Some(disconnect),
            _ => None,
        };
        self.log(&uri, gone);
        let Some(ended) = ended else {
            // The socket outlived the handler (moved into another task); it closes when dropped.
            return;
        };
        match &self {
            Self::Completed => ended.finish(CloseCode::NORMAL, "").await,
            Self::Failed(failure) => {
                let reason = failure.to_string();
                ended.finish(CloseCode::INTERNAL_ERROR, &reason).await;
            }
            Self::Panicked(_) => {
                ended
                    .finish(CloseCode::INTERNAL_ERROR, "internal error")
                    .await;
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a panic without a message"
    }
}
