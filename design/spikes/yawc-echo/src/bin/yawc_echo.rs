//! An axum 0.8 echo server whose WebSocket layer is yawc 0.5, with permessage-deflate on.
//!
//! Same shape as the workspace's `examples/autobahn_echo.rs`: `--addr HOST:PORT` (default
//! 127.0.0.1:9001; port 0 picks a free one), every text and binary message comes back as it came,
//! message limits of 64 MiB (Autobahn 9.* sends up to 16 MiB). Prints `listening ADDR` once bound.
//!
//! - `--no-deflate`: the server never negotiates permessage-deflate.
//! - `--max-message BYTES`: the message (and inflated message) size limit, default 64 MiB.
//! - `--buffer-capacity BYTES`: yawc's read and write buffer capacity, default 1 KiB (yawc's own
//!   default is 8 KiB).
//! - `--backpressure-boundary BYTES`: yawc's write-buffer boundary (tokio-util's default is
//!   128 KiB; the write buffer goes back to 1 KiB only after growing past it).
//! - `--handshake own` (default): the handler answers the upgrade itself, as Tachyon does (its own
//!   101, its own RFC 7692 negotiation, below), and hands the upgraded stream to
//!   `yawc::WebSocket::from_stream_with_extensions` with the agreed header.
//! - `--handshake yawc`: `yawc::WebSocket::upgrade_with_options` answers and negotiates instead
//!   (yawc's own merge of the offer and the server's options).
//!
//! Deflate settings (when on): server and client no context takeover (imposed, as RFC 7692 lets
//! a server), one `DeflatePool` for the process, compression level fast (1), a 64-byte
//! compression threshold, 1 KiB read and write buffers (both changeable, below).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use yawc::{DeflatePool, Frame, OpCode, Options, Role, WebSocket};

const LIMIT: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct Config {
    options: Options,
    deflate: bool,
    own_handshake: bool,
}

fn options(deflate: bool, limit: usize, buffers: usize, boundary: Option<usize>) -> Options {
    let mut base = Options::default().with_limits(limit, limit).with_utf8();
    if let Some(boundary) = boundary {
        base = base.with_backpressure_boundary(boundary);
    }
    if !deflate {
        return base
            .with_read_buffer_capacity(buffers)
            .with_write_buffer_capacity(buffers);
    }
    // The compression preset first: it replaces the whole `DeflateOptions`.
    base.with_low_latency_compression()
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(DeflatePool::new(8))
        .with_compression_threshold(64)
        .with_read_buffer_capacity(buffers)
        .with_write_buffer_capacity(buffers)
}

/// Sends every text and binary message back as it came. yawc answers pings and closes itself;
/// the loop ends when the connection does.
///
/// Errors need the application's help to end in a close frame rather than a dropped TCP
/// connection. Errors found by yawc's frame layer (reserved bits, opcodes, control frames, a frame
/// or an inflated message over the limit: 1002, 1009) only *queue* a close, which goes out on the
/// next poll. Errors found by its message layer (invalid UTF-8, bad fragments) queue nothing: the
/// application has to send 1007 or 1002 itself. So after an error the loop sends those two, then
/// polls once more (bounded) before dropping the connection.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    use yawc::WebSocketError as E;
    use yawc::close::CloseCode;
    loop {
        let frame = match ws.next_frame().await {
            Ok(frame) => frame,
            Err(E::ConnectionClosed) => return,
            Err(error) => {
                let own_close = match error {
                    E::InvalidUTF8 => Some(CloseCode::Invalid),
                    E::InvalidFragment | E::FragmentTimeout => Some(CloseCode::Protocol),
                    _ => None,
                };
                let bound = Duration::from_secs(2);
                if let Some(code) = own_close {
                    let close = Frame::close(code, error.to_string());
                    let _ = tokio::time::timeout(bound, ws.send(close)).await;
                }
                let _ = tokio::time::timeout(bound, ws.next_frame()).await;
                return;
            }
        };
        let reply = match frame.opcode() {
            OpCode::Text => Frame::text(frame.into_payload()),
            OpCode::Binary => Frame::binary(frame.into_payload()),
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

async fn upgrade(State(config): State<Config>, mut request: Request) -> Response {
    if !config.own_handshake {
        return match WebSocket::upgrade_with_options(&mut request, config.options.clone()) {
            Ok((response, upgrade)) => {
                tokio::spawn(async move {
                    if let Ok(ws) = upgrade.await {
                        echo(ws).await;
                    }
                });
                response.map(|_| Body::empty())
            }
            Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
        };
    }

    let headers = request.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key").into_response();
    };
    if !is_upgrade || !version_ok {
        return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade").into_response();
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let agreed = if config.deflate {
        negotiate(headers)
    } else {
        None
    };

    let on_upgrade = hyper::upgrade::on(&mut request);
    let options = config.options.clone();
    let agreed_for_task = agreed.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        match WebSocket::from_stream_with_extensions(
            io,
            Role::Server,
            agreed_for_task.as_deref(),
            options,
        ) {
            Ok(ws) => echo(ws).await,
            Err(error) => eprintln!("from_stream_with_extensions: {error}"),
        }
    });

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    if let Some(agreed) = agreed {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(&agreed).expect("ASCII"),
        );
    }
    response
}

/// RFC 7692 negotiation as a server that always imposes no context takeover both ways: the
/// first acceptable `permessage-deflate` offer over all `Sec-WebSocket-Extensions` lines wins.
/// An offer with an unknown or repeated parameter or a bad value is skipped. The answer echoes
/// `server_max_window_bits` when offered (yawc compresses with max(bits, 9), whose distances fit
/// an 8-bit window) and never sends `client_max_window_bits` (yawc inflates with 15 bits).
fn negotiate(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<String> {
    let mut params = offer.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct) = (false, false);
    let (mut server_bits, mut client_bits): (Option<u8>, Option<Option<u8>>) = (None, None);
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        match (name, value) {
            ("server_no_context_takeover", None) if !server_nct => server_nct = true,
            ("client_no_context_takeover", None) if !client_nct => client_nct = true,
            ("server_max_window_bits", Some(value)) if server_bits.is_none() => {
                server_bits = Some(window_bits(value)?);
            }
            ("client_max_window_bits", value) if client_bits.is_none() => {
                client_bits = Some(match value {
                    Some(value) => Some(window_bits(value)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(answer)
}

fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let (mut deflate, mut own_handshake) = (true, true);
    let mut max_message = LIMIT;
    let mut boundary = None;
    let mut buffers = 1024;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?,
            "--no-deflate" => deflate = false,
            "--max-message" => {
                max_message = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--max-message needs a byte count")?;
            }
            "--buffer-capacity" => {
                buffers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--buffer-capacity needs a byte count")?;
            }
            "--backpressure-boundary" => {
                boundary = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--backpressure-boundary needs a byte count")?,
                );
            }
            "--handshake" => match args.next().as_deref() {
                Some("own") => own_handshake = true,
                Some("yawc") => own_handshake = false,
                _ => return Err("--handshake own|yawc".into()),
            },
            other => {
                return Err(format!(
                    "unknown argument `{other}`; usage: yawc_echo [--addr HOST:PORT] [--no-deflate] [--max-message BYTES] [--buffer-capacity BYTES] [--backpressure-boundary BYTES] [--handshake own|yawc]"
                )
                .into());
            }
        }
    }
    let addr: SocketAddr = addr.parse()?;
    let config = Config {
        options: options(deflate, max_message, buffers, boundary),
        deflate,
        own_handshake,
    };
    let app = axum::Router::new()
        .route("/", get(upgrade))
        .route("/ws", get(upgrade))
        .with_state(config);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::accept_offer;

    #[test]
    fn offers() {
        let nct = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(accept_offer("permessage-deflate").as_deref(), Some(nct));
        assert_eq!(
            accept_offer("permessage-deflate; client_max_window_bits").as_deref(),
            Some(nct)
        );
        assert_eq!(
            accept_offer("permessage-deflate; server_max_window_bits=9").unwrap(),
            format!("{nct}; server_max_window_bits=9")
        );
        assert_eq!(
            accept_offer("permessage-deflate; server_max_window_bits"),
            None
        );
        assert_eq!(
            accept_offer("permessage-deflate; server_max_window_bits=7"),
            None
        );
        assert_eq!(accept_offer("permessage-deflate; foo"), None);
        assert_eq!(accept_offer("x-webkit-deflate-frame"), None);
    }
}
