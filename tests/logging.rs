//! What Tachyon logs with `tracing`: a failing or panicking handler is an error; a client that
//! leaves is not; a refused handshake is debug. Each connection has a span (`websocket`, with
//! its route, id and peer) that the handler's events fall inside.

mod support;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use support::{connect, expect_close, expect_text, handshake, server, within};
use tachyon::shutdown::Shutdown;
use tachyon::{Tachyon, WebSocket, websocket};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// One recorded event: its level, its fields as `name=value` text, and the spans it is in
/// (innermost first), each as its name and fields.
#[derive(Clone, Debug)]
struct Record {
    level: Level,
    fields: String,
    spans: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

/// Fields as `name=value ` text.
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields(String::new());
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let spans = context
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .map(|fields| fields.0.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = Record {
            level: *event.metadata().level(),
            fields: fields.0,
            spans,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// The process-wide recorder (tests in this file run in parallel; each uses its own path).
fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = Recorder::default();
        let subscriber = Registry::default().with(recorder.clone());
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        recorder
    })
}

/// The events that mention `path`.
fn events_for(path: &str) -> Vec<Record> {
    let needle = format!("path={path} ");
    recorder()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|record| record.fields.contains(&needle))
        .cloned()
        .collect()
}

/// The events inside a connection span of route `route`, and those that name it.
fn events_of_route(route: &str) -> Vec<Record> {
    let needle = format!("route={route} ");
    recorder()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|record| {
            record.fields.contains(&needle)
                || record
                    .spans
                    .iter()
                    .any(|(name, fields)| name == "websocket" && fields.contains(&needle))
        })
        .cloned()
        .collect()
}

/// Reads the server's close and the end of the stream (the client's reply is out then), and
/// waits until the app's connections have ended.
async fn closed_by_server(client: &mut support::Client, shutdown: &Shutdown) {
    use futures_util::StreamExt;
    assert!(matches!(
        within("the close", client.next()).await,
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
    ));
    assert!(within("the end", client.next()).await.is_none());
    assert!(
        shutdown.wait(support::WAIT).await,
        "the connection did not end"
    );
}

/// The event among `events` whose fields contain `text`.
fn event<'a>(events: &'a [Record], text: &str) -> &'a Record {
    events
        .iter()
        .find(|record| record.fields.contains(text))
        .unwrap_or_else(|| panic!("no event with `{text}`: {events:?}"))
}

/// Every event for `path`, once every connection of the app has ended: the last thing a
/// connection does is to give its shutdown registration back, after its handler's outcome is
/// logged, so nothing for it can come later (a second event, an ERROR after a DEBUG).
async fn events_once_ended(shutdown: &Shutdown, path: &str) -> Vec<Record> {
    assert!(
        shutdown.wait(support::WAIT).await,
        "the connections to {path} did not end"
    );
    events_for(path)
}

#[websocket("/log/fails")]
async fn fails(mut ws: WebSocket) -> Result<(), String> {
    ws.accept().await.map_err(|error| error.to_string())?;
    Err("the database is down".to_owned())
}

#[websocket("/log/panics")]
async fn panics(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    panic!("an unexpected bug");
}

#[websocket("/log/panics-early")]
async fn panics_early(_ws: WebSocket) -> tachyon::Result<()> {
    panic!("a bug before accepting");
}

#[websocket("/log/echo")]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let text = ws.receive_text().await?; // the client leaving ends this through `?`
        ws.send_text(text).await?;
    }
}

#[websocket("/log/fails-early")]
async fn fails_early(_ws: WebSocket) -> Result<(), String> {
    Err("no database before accepting".to_owned())
}

/// The disconnect, returned inside an opaque error type.
#[websocket("/log/boxed")]
async fn boxed(mut ws: WebSocket) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ws.accept().await?;
    loop {
        let text = ws.receive_text().await?;
        ws.send_text(text).await?;
    }
}

/// Cleanup that fails after the client left: a real failure.
#[websocket("/log/cleanup")]
async fn cleanup(mut ws: WebSocket) -> Result<(), String> {
    ws.accept().await.map_err(|error| error.to_string())?;
    while ws.receive_text().await.is_ok() {}
    Err("could not save the session".to_owned())
}

/// Waits for the client to leave.
#[websocket("/log/leaves")]
async fn leaves(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        ws.receive_text().await?;
    }
}

/// A handler's own event, inside the connection's span.
#[websocket("/log/traced/{room}")]
async fn traced(mut ws: WebSocket, room: String) -> tachyon::Result<()> {
    ws.accept().await?;
    tracing::info!(room, "the handler's own event");
    let text = ws.receive_text().await?;
    ws.send_text(text).await?;
    ws.close(4001, "done").await
}

/// `#[tracing::instrument]` under `#[websocket]`: its span is named `instrumented`.
#[websocket("/log/instrumented")]
#[tracing::instrument(skip(ws))]
async fn instrumented(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    tracing::info!("inside the instrumented handler");
    ws.close(1000, "").await
}

/// Refuses every handshake (403).
#[websocket("/log/refuses")]
async fn refuses(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.close(4003, "no").await
}

/// The app, and its shutdown handle (which counts its open connections).
fn app() -> (Tachyon, Shutdown) {
    recorder();
    let app = Tachyon::new()
        .websocket(traced)
        .websocket(leaves)
        .websocket(instrumented)
        .websocket(refuses)
        .websocket(fails)
        .websocket(panics)
        .websocket(panics_early)
        .websocket(echo)
        .websocket(fails_early)
        .websocket(boxed)
        .websocket(cleanup);
    let shutdown = app.shutdown_handle();
    (app, shutdown)
}

#[tokio::test]
async fn a_handler_failing_before_accepting_is_logged_as_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    handshake(&server, "/log/fails-early")
        .await
        .assert_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let events = events_once_ended(&shutdown, "/log/fails-early").await;
    assert_eq!(events[0].level, Level::ERROR, "{events:?}");
    assert!(
        events[0].fields.contains("no database before accepting"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_disconnect_inside_an_opaque_error_is_not_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    let ws = connect(&server, "/log/boxed").await;
    support::within("the close handshake", ws.close()).await;
    let events = events_once_ended(&shutdown, "/log/boxed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, Level::DEBUG, "{events:?}");
}

#[tokio::test]
async fn a_failure_after_the_client_left_is_still_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    let ws = connect(&server, "/log/cleanup").await;
    support::within("the close handshake", ws.close()).await;
    let events = events_once_ended(&shutdown, "/log/cleanup").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, Level::ERROR, "{events:?}");
    assert!(
        events[0].fields.contains("could not save the session"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_failing_handler_is_logged_as_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    let mut ws = connect(&server, "/log/fails").await;
    expect_close(&mut ws, 1011).await;
    let events = events_once_ended(&shutdown, "/log/fails").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, Level::ERROR);
    assert!(
        events[0].fields.contains("the database is down"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_logged_as_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    let mut ws = connect(&server, "/log/panics").await;
    expect_close(&mut ws, 1011).await;
    let events = events_once_ended(&shutdown, "/log/panics").await;
    assert_eq!(events[0].level, Level::ERROR, "{events:?}");
    assert!(events[0].fields.contains("an unexpected bug"), "{events:?}");

    handshake(&server, "/log/panics-early")
        .await
        .assert_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let events = events_once_ended(&shutdown, "/log/panics-early").await;
    assert_eq!(events[0].level, Level::ERROR, "{events:?}");
    assert!(
        events[0].fields.contains("a bug before accepting"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_disconnect_ending_a_handler_is_not_an_error() {
    let (app, shutdown) = app();
    let server = server(app);
    let mut ws = connect(&server, "/log/echo").await;
    within("sending", ws.send_text("hi")).await;
    expect_text(&mut ws, "hi").await;
    support::within("the close handshake", ws.close()).await;
    let events = events_once_ended(&shutdown, "/log/echo").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, Level::DEBUG, "{events:?}");
    // axum-test closes without a code.
    assert!(events[0].fields.contains("code=1005"), "{events:?}");
}

#[tokio::test]
async fn a_handlers_events_are_inside_its_connections_span() {
    let (app, shutdown) = app();
    // Tachyon's own server gives the handler the peer's address.
    let served = support::serve_tachyon(app).await;
    let mut client = support::raw_connect(&served, "/log/traced/lobby").await;
    support::send_text(&mut client, "hi").await;
    assert_eq!(support::next_text(&mut client).await, "hi");
    closed_by_server(&mut client, &shutdown).await;
    let events = events_of_route("/log/traced/{room}");
    let own = event(&events, "the handler's own event");
    assert_eq!(own.level, Level::INFO);
    let (name, fields) = own.spans.last().expect("a span");
    assert_eq!(name, "websocket", "{own:?}");
    assert!(fields.contains("route=/log/traced/{room} "), "{fields}");
    assert!(fields.contains("id=conn-"), "{fields}");
    assert!(fields.contains("peer=127.0.0.1:"), "{fields}");
    // The server closed with 4001: a debug event in the same span, and nothing above debug
    // but the handler's own event.
    let closed = event(&events, "WebSocket connection closed");
    assert_eq!(closed.level, Level::DEBUG, "{closed:?}");
    assert!(closed.fields.contains("code=4001"), "{closed:?}");
    assert!(closed.fields.contains("closed_by=\"server\""), "{closed:?}");
    assert!(
        events
            .iter()
            .all(|record| record.level >= Level::DEBUG || std::ptr::eq(record, own)),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_instrumented_handler_has_a_span_named_after_it_inside_the_connections() {
    let (app, shutdown) = app();
    let served = support::serve_tachyon(app).await;
    let mut client = support::raw_connect(&served, "/log/instrumented").await;
    closed_by_server(&mut client, &shutdown).await;
    let events = events_of_route("/log/instrumented");
    let inside = event(&events, "inside the instrumented handler");
    let names: Vec<&str> = inside.spans.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["instrumented", "websocket"], "{inside:?}");
}

#[tokio::test]
async fn a_client_closing_is_logged_at_debug_with_its_code() {
    let (app, shutdown) = app();
    let served = support::serve_tachyon(app).await;
    let mut client = support::raw_connect(&served, "/log/leaves").await;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    within(
        "closing",
        client.send(tokio_tungstenite::tungstenite::Message::Close(Some(
            CloseFrame {
                code: 4002.into(),
                reason: "leaving".into(),
            },
        ))),
    )
    .await
    .expect("close");
    assert!(
        shutdown.wait(support::WAIT).await,
        "the connection did not end"
    );
    let events = events_of_route("/log/leaves");
    let closed = events
        .iter()
        .find(|record| {
            record.fields.contains("WebSocket connection closed")
                && record.fields.contains("code=4002")
        })
        .unwrap_or_else(|| panic!("the close: {events:?}"));
    assert_eq!(closed.level, Level::DEBUG, "{closed:?}");
    assert!(closed.fields.contains("closed_by=\"client\""), "{closed:?}");
}

#[tokio::test]
async fn a_refused_handshake_is_logged_at_debug() {
    let (app, _shutdown) = app();
    let server = server(app);
    handshake(&server, "/log/refuses")
        .await
        .assert_status(axum::http::StatusCode::FORBIDDEN);
    let events = events_of_route("/log/refuses");
    let refused = event(&events, "WebSocket handshake refused");
    assert_eq!(refused.level, Level::DEBUG, "{refused:?}");
    assert!(refused.fields.contains("status=403"), "{refused:?}");
    assert!(
        events.iter().all(|record| record.level >= Level::DEBUG),
        "{events:?}"
    );
}
