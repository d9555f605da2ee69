//! What Tachyon logs with `tracing`: a failing or panicking handler is an error; a client that
//! leaves is not.

mod support;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use support::{connect, expect_close, expect_text, handshake, server, within};
use tachyon::shutdown::Shutdown;
use tachyon::{Tachyon, WebSocket, websocket};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// One recorded event: its level and its fields as `name=value` text.
#[derive(Clone, Debug)]
struct Record {
    level: Level,
    fields: String,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Record>>>);

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        struct Fields(String);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let record = Record {
            level: *event.metadata().level(),
            fields: fields.0,
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

/// The app, and its shutdown handle (which counts its open connections).
fn app() -> (Tachyon, Shutdown) {
    recorder();
    let app = Tachyon::new()
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
