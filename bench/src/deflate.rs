//! The deflate echo scenario (issue #16 point 6): a 16 KiB JSON document echoed by the Tachyon
//! server with permessage-deflate (RFC 7692) off and on, and what each costs: the server's CPU
//! time per message and the bytes on the wire per message, each way.
//!
//! tokio-tungstenite cannot negotiate permessage-deflate, so this module has a client of its
//! own on [`crate::wire`]: it offers what Chrome offers ([`OFFER`]), reads the server's answer,
//! compresses what it sends with flate2 (raw deflate, a sync flush whose `00 00 ff ff` tail is
//! cut, RSV1 set) and inflates what comes back compressed, and counts the bytes it writes and
//! reads after the handshake. It compresses every message on its own, which RFC 7692 allows
//! whatever was negotiated, so the same document compresses to the same bytes every time: it is
//! compressed once per connection and the client's CPU goes to inflating and checking the
//! echoes, not to compressing.
//!
//! Both sides are the harness's Tachyon server with the same client and the same offer: `/ws`,
//! whose deflate is off (the "raw" column), and `/ws-deflate`, whose is on (the "tachyon"
//! column).

use std::io;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::report::{self, Row};
use crate::scenario::{Goal, Metric, Scenario, Settings, server_cpu_ns};
use crate::server::Server;
use crate::wire::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// What Chrome offers on every connection.
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The size the JSON document is made up to, at most.
pub(crate) const DOCUMENT_SIZE: usize = 16 * 1024;
/// The end of a sync flush, which RFC 7692 cuts from each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The largest message the client takes, inflated.
const MAX_MESSAGE: usize = 1 << 20;
/// The longest one step (a send, an echo, a close) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the echo, each one message at a time.
const CONNECTIONS: usize = 10;
/// Echoes each connection makes before the clock starts.
const WARM_UP_ECHOES: usize = 20;
/// A bound on each connection's echoes that a timed run never reaches in practice.
const MAX_ECHOES: u64 = 100_000_000;

/// The values of one run, in the order of [`Scenario::EchoDeflate`]'s metrics.
const RATE: usize = 0;
const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 2;
const WIRE_UP: usize = 3;
const WIRE_DOWN: usize = 4;

/// The compared rows: deflate off ("raw" column) against on, metric by metric.
pub(crate) const ROWS: &[Metric] = &[
    Metric {
        name: "echo-deflate 16k json (off vs on)",
        unit: "msg/s",
        decimals: 0,
        goal: Goal::None,
    },
    Metric {
        name: "echo-deflate server cpu (off vs on)",
        unit: "us/msg",
        decimals: 2,
        goal: Goal::None,
    },
    Metric {
        name: "echo-deflate client cpu (off vs on)",
        unit: "us/msg",
        decimals: 2,
        goal: Goal::None,
    },
    Metric {
        name: "echo-deflate wire client->server (off vs on)",
        unit: "B/msg",
        decimals: 0,
        goal: Goal::None,
    },
    Metric {
        name: "echo-deflate wire server->client (off vs on)",
        unit: "B/msg",
        decimals: 0,
        goal: Goal::None,
    },
];

/// Runs the scenario `rounds` times on each side of the harness's Tachyon server.
pub(crate) async fn compare(
    tachyon: &Server,
    settings: &Settings,
    rounds: usize,
) -> io::Result<Vec<Row>> {
    let base = tachyon.base();
    let sides = [
        ("off", format!("{base}/ws"), false),
        ("on", format!("{base}/ws-deflate"), true),
    ];
    let document = json_document(DOCUMENT_SIZE);
    let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (name, url, deflate) = &sides[side];
            let values = run(url, tachyon.pid(), &document, settings, Some(*deflate)).await?;
            crate::progress(Scenario::EchoDeflate, round, rounds, name, &values);
            runs[side].push(values);
        }
    }
    Ok(report::compared(ROWS, &runs))
}

/// One run against `url` (the server's process is `pid`, if known): [`CONNECTIONS`]
/// connections each echo `document` as fast as the server answers, for the settings' duration.
/// With `expect_deflate`, a connection whose negotiation says otherwise is an error.
pub(crate) async fn run(
    url: &str,
    pid: Option<u32>,
    document: &str,
    settings: &Settings,
    expect_deflate: Option<bool>,
) -> io::Result<Vec<f64>> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut client = Client::connect(url, Some(OFFER))
            .await
            .map_err(context("connect"))?;
        if let Some(expected) = expect_deflate
            && expected != client.deflate.is_some()
        {
            return Err(io::Error::other(format!(
                "echo-deflate: {url} negotiated {}",
                client.extensions()
            )));
        }
        let prepared = client.prepare(document.as_bytes())?;
        for _ in 0..WARM_UP_ECHOES {
            client
                .echo(&prepared, document.as_bytes())
                .await
                .map_err(context("warm-up echo"))?;
        }
        clients.push((client, prepared));
    }
    let bytes_before: (u64, u64) = clients.iter().fold((0, 0), |(up, down), (client, _)| {
        (up + client.bytes_written, down + client.bytes_read())
    });
    let server_before = pid.and_then(server_cpu_ns);
    let client_before = server_cpu_ns(std::process::id());
    let start = Instant::now();
    let deadline = start + settings.duration;
    let mut tasks = JoinSet::new();
    for (mut client, prepared) in clients {
        let document = document.to_owned();
        tasks.spawn(async move {
            let mut echoes = 0_u64;
            while echoes < MAX_ECHOES && Instant::now() < deadline {
                client
                    .echo(&prepared, document.as_bytes())
                    .await
                    .map_err(context("echo"))?;
                echoes += 1;
            }
            io::Result::Ok((echoes, Instant::now(), client))
        });
    }
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let (mut messages, mut end) = (0, start);
    while let Some(joined) = tasks.join_next().await {
        let (echoes, finished, client) = joined.map_err(io::Error::other)??;
        messages += echoes;
        end = end.max(finished);
        clients.push(client);
    }
    let server_after = pid.and_then(server_cpu_ns);
    let client_after = server_cpu_ns(std::process::id());
    let bytes_after: (u64, u64) = clients.iter().fold((0, 0), |(up, down), client| {
        (up + client.bytes_written, down + client.bytes_read())
    });
    for client in clients {
        client.close().await.map_err(context("close"))?;
    }
    let per_message = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) if messages > 0 => {
            (after - before) as f64 / 1e3 / messages as f64
        }
        _ => f64::NAN,
    };
    let mut values = vec![f64::NAN; ROWS.len()];
    values[RATE] = messages as f64 / (end - start).as_secs_f64();
    values[SERVER_CPU] = per_message(server_before, server_after);
    values[CLIENT_CPU] = per_message(client_before, client_after);
    values[WIRE_UP] = (bytes_after.0 - bytes_before.0) as f64 / messages.max(1) as f64;
    values[WIRE_DOWN] = (bytes_after.1 - bytes_before.1) as f64 / messages.max(1) as f64;
    Ok(values)
}

/// Says which step of the scenario an error comes from.
fn context(step: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |error| io::Error::new(error.kind(), format!("echo-deflate: {step}: {error}"))
}

/// A JSON document of at most `size` bytes, the same every time: an array of chat messages
/// (an id, a room, an author, a text of a few words, a time, reactions), the kind of traffic
/// that deflate is for. Keys repeat, values vary (a fixed pseudo-random sequence).
pub(crate) fn json_document(size: usize) -> String {
    const NAMES: [&str; 12] = [
        "Ada Lovelace",
        "Alan Turing",
        "Grace Hopper",
        "Edsger Dijkstra",
        "Barbara Liskov",
        "Donald Knuth",
        "Frances Allen",
        "Ken Thompson",
        "Margaret Hamilton",
        "Dennis Ritchie",
        "Radia Perlman",
        "John McCarthy",
    ];
    const ROOMS: [&str; 4] = ["general", "random", "release-planning", "support"];
    const WORDS: [&str; 40] = [
        "the", "build", "is", "green", "again", "after", "we", "merged", "fix", "for", "flaky",
        "socket", "test", "can", "someone", "review", "my", "pull", "request", "today", "deploy",
        "to", "staging", "at", "noon", "latency", "dropped", "by", "half", "thanks", "everyone",
        "lunch", "meeting", "moved", "tomorrow", "please", "update", "the", "docs", "ship",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) % bound as u64) as usize
    };
    let mut document = String::from("[");
    let mut item = String::new();
    for id in 0.. {
        item.clear();
        let author = next(NAMES.len());
        let words: Vec<&str> = (0..4 + next(12))
            .map(|_| WORDS[next(WORDS.len())])
            .collect();
        let seconds = 1_700_000_000 + id * 37 + next(30);
        item.push_str(&format!(
            "{}{{\"id\":{},\"type\":\"message\",\"room\":\"{}\",\"author\":{{\"id\":{},\
             \"name\":\"{}\",\"online\":{}}},\"text\":\"{}\",\"sent_at\":{},\"edited\":{},\
             \"reactions\":{{\"thumbs_up\":{},\"heart\":{},\"laugh\":{}}}}}",
            if id == 0 { "" } else { "," },
            10_000 + id,
            ROOMS[next(ROOMS.len())],
            100 + author,
            NAMES[author],
            next(3) > 0,
            words.join(" "),
            seconds,
            next(10) == 0,
            next(8),
            next(4),
            next(3),
        ));
        if document.len() + item.len() + 1 > size {
            break;
        }
        document.push_str(&item);
    }
    document.push(']');
    document
}

/// What the server agreed to, from its `Sec-WebSocket-Extensions`.
#[derive(Clone, Copy, Debug, Default)]
struct Negotiated {
    server_no_context_takeover: bool,
    /// The largest window the client may compress with, if the server bounded it.
    client_max_window_bits: Option<u8>,
}

/// Parses the server's answer to [`OFFER`]: `None` without the header; an error for an
/// extension or a parameter the offer did not allow.
fn negotiated(response: &str) -> io::Result<Option<Negotiated>> {
    let Some(answer) = wire::header(response, "sec-websocket-extensions") else {
        return Ok(None);
    };
    let wrong = |what: &str| io::Error::other(format!("echo-deflate: `{answer}`: {what}"));
    if answer.contains(',') {
        return Err(wrong("more than one extension"));
    }
    let mut params = answer.split(';').map(str::trim);
    if params.next() != Some("permessage-deflate") {
        return Err(wrong("not permessage-deflate"));
    }
    let mut negotiated = Negotiated::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let bits = || {
            value
                .and_then(|bits| bits.parse::<u8>().ok())
                .filter(|bits| (8..=15).contains(bits))
                .ok_or_else(|| wrong("window bits not in 8..=15"))
        };
        match name {
            "server_no_context_takeover" => negotiated.server_no_context_takeover = true,
            // The client compresses each message on its own anyway.
            "client_no_context_takeover" => {}
            // Any window inflates with a 15-bit one.
            "server_max_window_bits" => {
                bits()?;
            }
            "client_max_window_bits" => negotiated.client_max_window_bits = Some(bits()?),
            _ => return Err(wrong("a parameter the offer did not allow")),
        }
    }
    Ok(Some(negotiated))
}

/// A message ready to be framed: its payload, compressed or not.
#[derive(Debug)]
pub(crate) struct Prepared {
    compressed: bool,
    payload: Vec<u8>,
}

/// A WebSocket client that negotiates permessage-deflate, one message at a time.
#[derive(Debug)]
pub(crate) struct Client {
    reader: wire::Reader<TcpStream>,
    response: String,
    deflate: Option<Negotiated>,
    /// Kept from message to message only when the server keeps its context.
    inflater: Decompress,
    masks: wire::Masks,
    frame: Vec<u8>,
    message: Vec<u8>,
    inflated: Vec<u8>,
    /// Bytes written after the handshake.
    bytes_written: u64,
}

impl Client {
    /// Connects to `url` and upgrades with `offer` as the extensions offered.
    pub(crate) async fn connect(url: &str, offer: Option<&str>) -> io::Result<Self> {
        let connected = wire::connect(url, offer).await?;
        let deflate = negotiated(&connected.response)?;
        Ok(Self {
            reader: wire::Reader::new(connected.stream, connected.leftover, 64 * 1024),
            response: connected.response,
            deflate,
            inflater: Decompress::new(false),
            masks: wire::Masks::new(u64::from(std::process::id())),
            frame: Vec::new(),
            message: Vec::new(),
            inflated: Vec::new(),
            bytes_written: 0,
        })
    }

    /// The server's `Sec-WebSocket-Extensions`, or `no extension`.
    pub(crate) fn extensions(&self) -> String {
        wire::header(&self.response, "sec-websocket-extensions")
            .map_or_else(|| "no extension".to_owned(), str::to_owned)
    }

    /// Bytes read after the handshake.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.reader.bytes_read
    }

    /// `text` as this connection sends it: compressed (on its own) if deflate was negotiated.
    pub(crate) fn prepare(&self, text: &[u8]) -> io::Result<Prepared> {
        let Some(negotiated) = self.deflate else {
            return Ok(Prepared {
                compressed: false,
                payload: text.to_vec(),
            });
        };
        // Compressed alone, a message refers back at most its own length.
        if let Some(bits) = negotiated.client_max_window_bits
            && text.len() > 1 << bits
        {
            return Err(io::Error::other(format!(
                "echo-deflate: the server allows a {bits}-bit window, and flate2's pure-Rust \
                 backend always uses 15 bits"
            )));
        }
        let mut compress = Compress::new(Compression::default(), false);
        let mut payload = Vec::with_capacity(text.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if payload.capacity() - payload.len() < 64 {
                payload.reserve(payload.capacity());
            }
            let before = compress.total_in();
            compress
                .compress_vec(&text[consumed..], &mut payload, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            consumed += (compress.total_in() - before) as usize;
            // A flush is complete once it leaves room in the output.
            if consumed == text.len() && payload.len() < payload.capacity() {
                break;
            }
        }
        if !payload.ends_with(&TAIL) {
            return Err(io::Error::other(
                "echo-deflate: a sync flush without its tail",
            ));
        }
        payload.truncate(payload.len() - TAIL.len());
        Ok(Prepared {
            compressed: true,
            payload,
        })
    }

    async fn write_frame(&mut self, opcode: u8, rsv1: bool, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        wire::encode(
            &mut self.frame,
            opcode,
            rsv1,
            payload,
            Some(self.masks.next()),
        );
        let writing = self.reader.get_mut().write_all(&self.frame);
        timeout(STEP_TIMEOUT, writing)
            .await
            .map_err(|_| io::Error::other("echo-deflate: a write took too long"))??;
        self.bytes_written += self.frame.len() as u64;
        Ok(())
    }

    /// Sends `prepared` as a text message and waits for the echo, which must be `text`.
    pub(crate) async fn echo(&mut self, prepared: &Prepared, text: &[u8]) -> io::Result<()> {
        self.write_frame(OP_TEXT, prepared.compressed, &prepared.payload)
            .await?;
        let received = timeout(STEP_TIMEOUT, self.receive())
            .await
            .map_err(|_| io::Error::other("echo-deflate: no echo"))??;
        if received != text {
            return Err(io::Error::other(format!(
                "echo-deflate: a wrong echo ({} bytes for {})",
                received.len(),
                text.len()
            )));
        }
        Ok(())
    }

    /// The next data message, inflated if it came compressed; pings are answered.
    async fn receive(&mut self) -> io::Result<&[u8]> {
        self.message.clear();
        let mut compressed = None;
        loop {
            let Some((header, payload)) = self.reader.frame().await? else {
                return Err(io::Error::other(
                    "echo-deflate: the server closed the stream",
                ));
            };
            match header.opcode {
                OP_PING => {
                    let payload = payload.to_vec();
                    self.write_frame(OP_PONG, false, &payload).await?;
                    continue;
                }
                OP_PONG => continue,
                OP_CLOSE => return Err(io::Error::other("echo-deflate: the server closed")),
                OP_TEXT | OP_BINARY if compressed.is_none() => {
                    if header.rsv1 && self.deflate.is_none() {
                        return Err(io::Error::other("echo-deflate: RSV1 without deflate"));
                    }
                    compressed = Some(header.rsv1);
                }
                OP_CONTINUATION if compressed.is_some() => {}
                other => {
                    return Err(io::Error::other(format!(
                        "echo-deflate: an unexpected frame (opcode {other})"
                    )));
                }
            }
            if self.message.len() + payload.len() > MAX_MESSAGE {
                return Err(io::Error::other("echo-deflate: a message over 1 MiB"));
            }
            self.message.extend_from_slice(payload);
            if header.fin {
                break;
            }
        }
        if compressed != Some(true) {
            return Ok(&self.message);
        }
        let reset = self
            .deflate
            .is_some_and(|negotiated| negotiated.server_no_context_takeover);
        inflate(&mut self.inflater, reset, &self.message, &mut self.inflated)?;
        Ok(&self.inflated)
    }

    /// Sends a close frame, waits for the server's and for the end of the stream.
    pub(crate) async fn close(mut self) -> io::Result<()> {
        self.write_frame(OP_CLOSE, false, &1000_u16.to_be_bytes())
            .await?;
        let closing = async {
            while let Some((header, _)) = self.reader.frame().await? {
                if header.opcode == OP_CLOSE {
                    // The server closes the stream after its close frame.
                    while self.reader.frame().await?.is_some() {}
                    return Ok(());
                }
            }
            Err(io::Error::other(
                "echo-deflate: no close frame from the server",
            ))
        };
        timeout(STEP_TIMEOUT, closing)
            .await
            .map_err(|_| io::Error::other("echo-deflate: the close took too long"))?
    }
}

/// Inflates one message (`input` and the [`TAIL`] RFC 7692 cut) into `out`, at most
/// [`MAX_MESSAGE`] bytes; with `reset`, from a fresh context.
fn inflate(
    inflater: &mut Decompress,
    reset: bool,
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if reset {
        inflater.reset(false);
    }
    out.clear();
    for chunk in [input, &TAIL[..]] {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_MESSAGE {
                    return Err(io::Error::other(
                        "echo-deflate: a message over 1 MiB inflated",
                    ));
                }
                out.reserve(out.capacity().max(16 * 1024));
            }
            let (before_in, before_out) = (inflater.total_in(), out.len());
            let status = inflater
                .decompress_vec(&chunk[consumed..], out, FlushDecompress::Sync)
                .map_err(io::Error::other)?;
            consumed += (inflater.total_in() - before_in) as usize;
            if status == Status::StreamEnd {
                return Ok(());
            }
            let stuck = inflater.total_in() == before_in && out.len() == before_out;
            if (consumed == chunk.len() && out.len() < out.capacity()) || stuck {
                break;
            }
        }
    }
    Ok(())
}
