//! The spike's load client and harness: starts each server as a child process on 127.0.0.1 (a
//! port the system picks), drives it, reads its CPU time (`/proc/PID/stat`, utime + stime), bytes
//! written (`/proc/PID/io`, wchar) and resident memory (`/proc/PID/status`, VmRSS), and prints one
//! line per measurement. wchar counts write(2)/writev(2) only: yawc's writes (writev) show, raw
//! axum's (tungstenite through std's `send(2)`) do not, so compare bytes between yawc runs only. Servers are started fresh for every measurement, in an order that rotates
//! from round to round; every step has a deadline, every loop a bound.
//!
//! `bench [--rounds N] [--secs S] [--idle N] [--only SCENARIO,...]`, scenarios:
//! - `echo-32`: 100 connections × 32-byte text, tungstenite client (no deflate offered);
//! - `echo-16k`: 10 connections × 16 KiB binary, tungstenite client;
//! - `echo-32-deflate`: 100 × 32-byte text, yawc client offering permessage-deflate;
//! - `json-16k`: 10 × 16 KiB JSON text, yawc client offering permessage-deflate (negotiated only
//!   by the yawc server with deflate on);
//! - `idle`: resident memory growth per idle connection with N open (default 10,000), each having
//!   echoed one message; `idle-json`: only the variants that echoed a 16 KiB JSON message.
//!
//! Servers: `raw-axum` (axum_echo), `yawc` (yawc_echo: deflate on, 1 KiB buffers),
//! `yawc-no-deflate` (`--no-deflate`), `yawc-8k-buffers` (`--buffer-capacity 8192`, yawc's own
//! default), `yawc-boundary-1k` (`--backpressure-boundary 1024`).
//!
//! The server binaries (`axum_echo`, `yawc_echo`) are looked up beside this one.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const WARM_UP_ECHOES: usize = 20;
const WARM_UP_CONNECTIONS: usize = 50;
const CONNECT_BATCH: usize = 100;
const MAX_ITERATIONS: u64 = 100_000_000;
const IDLE_TIME_LIMIT: Duration = Duration::from_secs(180);

fn err(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

async fn step<T, E: std::fmt::Display>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> io::Result<T> {
    match timeout(STEP_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(err(format!("{what}: {error}"))),
        Err(_) => Err(err(format!("{what}: no answer in {STEP_TIMEOUT:?}"))),
    }
}

// --- Servers -------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum ServerKind {
    /// Raw axum `WebSocketUpgrade`.
    Raw,
    /// yawc, deflate on in the server config (own handshake, DeflatePool, threshold, 1 KiB bufs).
    Yawc,
    /// yawc with `--no-deflate`.
    YawcPlain,
    /// yawc, deflate on, with `--backpressure-boundary 1024`.
    YawcSmallBoundary,
    /// yawc, deflate on, with yawc's default 8 KiB buffers (`--buffer-capacity 8192`).
    Yawc8k,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw-axum",
            Self::Yawc => "yawc",
            Self::YawcPlain => "yawc-no-deflate",
            Self::YawcSmallBoundary => "yawc-boundary-1k",
            Self::Yawc8k => "yawc-8k-buffers",
        }
    }
}

struct Server {
    child: Child,
    pid: u32,
    url: String,
}

impl Server {
    async fn start(kind: ServerKind) -> io::Result<Self> {
        let dir: PathBuf = std::env::current_exe()?
            .parent()
            .ok_or_else(|| err("no exe dir"))?
            .to_owned();
        let mut command = match kind {
            ServerKind::Raw => Command::new(dir.join("axum_echo")),
            ServerKind::Yawc => Command::new(dir.join("yawc_echo")),
            ServerKind::YawcPlain => {
                let mut c = Command::new(dir.join("yawc_echo"));
                c.arg("--no-deflate");
                c
            }
            ServerKind::YawcSmallBoundary => {
                let mut c = Command::new(dir.join("yawc_echo"));
                c.args(["--backpressure-boundary", "1024"]);
                c
            }
            ServerKind::Yawc8k => {
                let mut c = Command::new(dir.join("yawc_echo"));
                c.args(["--buffer-capacity", "8192"]);
                c
            }
        };
        command
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child.id().ok_or_else(|| err("server exited"))?;
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        let mut line = String::new();
        step("server start", BufReader::new(stdout).read_line(&mut line)).await?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| err(format!("server said {line:?}")))?;
        Ok(Self {
            child,
            pid,
            url: format!("ws://{addr}/ws"),
        })
    }

    async fn stop(mut self) -> io::Result<()> {
        self.child.start_kill()?;
        step("server stop", self.child.wait()).await?;
        Ok(())
    }
}

/// utime + stime of process `pid`, in microseconds (clock ticks of 10 ms).
fn cpu_us(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = &stat[stat.rfind(')').ok_or_else(|| err("bad stat"))? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm field, the state is index 0 (field 3).
    let utime: u64 = fields[11].parse().map_err(|_| err("utime"))?;
    let stime: u64 = fields[12].parse().map_err(|_| err("stime"))?;
    Ok((utime + stime) * 10_000)
}

/// Bytes the process passed to write-like system calls (sockets included).
fn wchar(pid: u32) -> io::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| err("no wchar"))
}

fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| err("no VmRSS"))
}

/// RSS once two reads 250 ms apart differ by at most 0.5% (or after 2 s), as the workspace bench.
async fn settled_rss_kib(pid: u32) -> io::Result<u64> {
    let mut last = rss_kib(pid)?;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) <= last / 200 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// --- Clients -------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum ClientKind {
    /// tokio-tungstenite 0.30: never offers deflate.
    Tungstenite,
    /// yawc 0.5 client offering `permessage-deflate; client_no_context_takeover` (level fast,
    /// with its own DeflatePool so that 10,000 idle clients do not each keep deflate state).
    YawcDeflate,
}

#[derive(Clone)]
enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

enum Conn {
    Tung(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Yawc(Box<yawc::TcpWebSocket>),
}

fn yawc_client_options(pool: &yawc::DeflatePool) -> yawc::Options {
    yawc::Options::default()
        .with_limits(64 << 20, 64 << 20)
        .with_utf8()
        .with_no_delay()
        .with_low_latency_compression()
        .client_no_context_takeover()
        .with_deflate_pool(pool.clone())
        .with_compression_threshold(64)
}

impl Conn {
    async fn open(kind: ClientKind, url: &str, pool: &yawc::DeflatePool) -> io::Result<Self> {
        match kind {
            ClientKind::Tungstenite => {
                let config =
                    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
                let (ws, _) = step(
                    "connect",
                    tokio_tungstenite::connect_async_with_config(url, Some(config), true),
                )
                .await?;
                Ok(Self::Tung(Box::new(ws)))
            }
            ClientKind::YawcDeflate => {
                let url: url::Url = url.parse().map_err(|e| err(format!("url: {e}")))?;
                let ws = step(
                    "connect",
                    yawc::WebSocket::connect(url).with_options(yawc_client_options(pool)),
                )
                .await?;
                Ok(Self::Yawc(Box::new(ws)))
            }
        }
    }

    async fn echo(&mut self, payload: &Payload) -> io::Result<()> {
        match self {
            Self::Tung(ws) => {
                let message = match payload {
                    Payload::Text(t) => Message::text(t.clone()),
                    Payload::Binary(b) => Message::binary(b.clone()),
                };
                step("send", ws.send(message.clone())).await?;
                for _ in 0..16 {
                    match step("echo", async { ws.next().await.transpose() }).await? {
                        Some(Message::Ping(_) | Message::Pong(_)) => {}
                        Some(reply) if reply == message => return Ok(()),
                        Some(other) => return Err(err(format!("wrong echo: {other:?}"))),
                        None => return Err(err("closed instead of echoing")),
                    }
                }
                Err(err("no echo"))
            }
            Self::Yawc(ws) => {
                let (frame, expected): (yawc::Frame, &[u8]) = match payload {
                    Payload::Text(t) => (yawc::Frame::text(t.clone()), t.as_bytes()),
                    Payload::Binary(b) => (yawc::Frame::binary(b.clone()), b),
                };
                step("send", ws.send(frame)).await?;
                for _ in 0..16 {
                    let frame = step("echo", ws.next_frame()).await?;
                    match frame.opcode() {
                        yawc::OpCode::Text | yawc::OpCode::Binary => {
                            if frame.payload().as_ref() == expected {
                                return Ok(());
                            }
                            return Err(err("wrong echo"));
                        }
                        yawc::OpCode::Close => return Err(err("closed instead of echoing")),
                        _ => {}
                    }
                }
                Err(err("no echo"))
            }
        }
    }

    /// Starts the close handshake and waits (bounded) for it.
    async fn close(self) -> io::Result<()> {
        match self {
            Self::Tung(mut ws) => {
                let _ = timeout(STEP_TIMEOUT, SinkExt::close(&mut *ws)).await;
            }
            Self::Yawc(mut ws) => {
                let _ = timeout(STEP_TIMEOUT, SinkExt::close(&mut *ws)).await;
            }
        }
        Ok(())
    }
}

/// A 16 KiB JSON array of records, made from a fixed seed (same bytes every run): the kind of
/// payload a dashboard or a chat history sends.
fn json_16k() -> String {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = String::from("[");
    let mut id = 0;
    loop {
        let r = next();
        let record = format!(
            "{{\"id\":{id},\"user\":\"{}_{}\",\"room\":\"{}\",\"ts\":{},\"price\":{}.{:02},\"qty\":{},\"text\":\"{} {} {}\",\"ok\":{}}}",
            words[(r % 16) as usize],
            r % 1000,
            words[((r >> 8) % 16) as usize],
            1_760_000_000_000u64 + (r >> 20) % 100_000_000,
            (r >> 12) % 5000,
            (r >> 4) % 100,
            (r >> 28) % 250,
            words[((r >> 32) % 16) as usize],
            words[((r >> 36) % 16) as usize],
            words[((r >> 40) % 16) as usize],
            r & 1 == 0,
        );
        if out.len() + record.len() + 2 > 16 * 1024 {
            break;
        }
        if id > 0 {
            out.push(',');
        }
        out.push_str(&record);
        id += 1;
    }
    out.push(']');
    while out.len() < 16 * 1024 {
        out.insert(out.len() - 1, ' ');
    }
    out
}

// --- Scenarios -----------------------------------------------------------------------------------

struct EchoResult {
    rate: f64,
    cpu_us_per_msg: f64,
    wire_bytes_per_msg: f64,
}

async fn echo_throughput(
    server: &Server,
    client: ClientKind,
    connections: usize,
    payload: &Payload,
    duration: Duration,
) -> io::Result<EchoResult> {
    let pool = yawc::DeflatePool::new(8);
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::open(client, &server.url, &pool).await?;
        for _ in 0..WARM_UP_ECHOES {
            conn.echo(payload).await?;
        }
        conns.push(conn);
    }
    let (cpu_before, wchar_before) = (cpu_us(server.pid)?, wchar(server.pid)?);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut echoes = 0_u64;
            while echoes < MAX_ITERATIONS && Instant::now() < deadline {
                conn.echo(&payload).await?;
                echoes += 1;
            }
            io::Result::Ok((echoes, Instant::now(), conn))
        });
    }
    let mut total = 0;
    let mut end = start;
    let mut conns = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (echoes, ended, conn) = joined.map_err(io::Error::other)??;
        total += echoes;
        end = end.max(ended);
        conns.push(conn);
    }
    let (cpu_after, wchar_after) = (cpu_us(server.pid)?, wchar(server.pid)?);
    for conn in conns {
        conn.close().await?;
    }
    if total == 0 {
        return Err(err("no echo in the measured time"));
    }
    Ok(EchoResult {
        rate: total as f64 / (end - start).as_secs_f64(),
        cpu_us_per_msg: (cpu_after - cpu_before) as f64 / total as f64,
        wire_bytes_per_msg: (wchar_after - wchar_before) as f64 / total as f64,
    })
}

async fn idle_memory(
    server: &Server,
    client: ClientKind,
    payload: &Payload,
    count: usize,
) -> io::Result<((f64, u64, u64), Vec<Conn>)> {
    let pool = yawc::DeflatePool::new(8);
    for _ in 0..WARM_UP_CONNECTIONS {
        let mut conn = Conn::open(client, &server.url, &pool).await?;
        conn.echo(payload).await?;
        conn.close().await?;
    }
    let before = settled_rss_kib(server.pid).await?;
    let started = Instant::now();
    let url: Arc<str> = server.url.as_str().into();
    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        if started.elapsed() > IDLE_TIME_LIMIT {
            return Err(err("opening idle connections took too long"));
        }
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(count - idle.len()) {
            let (url, payload, pool) = (Arc::clone(&url), payload.clone(), pool.clone());
            batch.spawn(async move {
                let mut conn = Conn::open(client, &url, &pool).await?;
                conn.echo(&payload).await?;
                io::Result::Ok(conn)
            });
        }
        while let Some(joined) = batch.join_next().await {
            idle.push(joined.map_err(io::Error::other)??);
        }
    }
    let after = settled_rss_kib(server.pid).await?;
    // Kept open until the caller has stopped the server.
    Ok((
        ((after as f64 - before as f64) / count as f64, before, after),
        idle,
    ))
}

// --- Main ----------------------------------------------------------------------------------------

struct Args {
    rounds: usize,
    secs: u64,
    idle: usize,
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 3,
        secs: 5,
        idle: 10_000,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--secs" => args.secs = value()?.parse().map_err(|e| format!("{e}"))?,
            "--idle" => args.idle = value()?.parse().map_err(|e| format!("{e}"))?,
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let args = parse_args().map_err(err)?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let duration = Duration::from_secs(args.secs);
    println!(
        "# rounds {} × {} s, idle {} connections, load average at start {}",
        args.rounds,
        args.secs,
        args.idle,
        loadavg()
    );

    let text32 = Payload::Text("x".repeat(32));
    let bin16k = Payload::Binary((0..16 * 1024).map(|i| (i * 7 + 3) as u8).collect());
    let json = Payload::Text(json_16k());

    use ClientKind::*;
    use ServerKind::*;
    // (scenario, client, connections, payload, servers; the first is the ratio's denominator)
    let echo_scenarios: Vec<(&str, ClientKind, usize, &Payload, Vec<ServerKind>)> = vec![
        (
            "echo-32",
            Tungstenite,
            100,
            &text32,
            vec![Raw, Yawc, YawcPlain],
        ),
        (
            "echo-16k",
            Tungstenite,
            10,
            &bin16k,
            vec![Raw, Yawc, YawcPlain, Yawc8k],
        ),
        (
            "echo-32-deflate",
            YawcDeflate,
            100,
            &text32,
            vec![Raw, Yawc],
        ),
        (
            "json-16k",
            YawcDeflate,
            10,
            &json,
            vec![Raw, YawcPlain, Yawc, Yawc8k],
        ),
    ];
    for (name, client, connections, payload, servers) in &echo_scenarios {
        if !wanted(name) {
            continue;
        }
        println!(
            "## {name}: {connections} connections, {client:?} client, load {}",
            loadavg()
        );
        let mut results: Vec<Vec<EchoResult>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            for i in 0..servers.len() {
                let index = (i + round) % servers.len();
                let kind = servers[index];
                let server = Server::start(kind).await?;
                let result =
                    echo_throughput(&server, *client, *connections, payload, duration).await;
                server.stop().await?;
                let result = result?;
                println!(
                    "{name} round {round} {:<16} {:>10.0} msg/s {:>8.2} us/msg {:>9.1} B/msg written (load {})",
                    kind.name(),
                    result.rate,
                    result.cpu_us_per_msg,
                    result.wire_bytes_per_msg,
                    loadavg()
                );
                results[index].push(result);
            }
        }
        let summary: Vec<(f64, f64, f64)> = results
            .iter_mut()
            .map(|rs| {
                let mut rate: Vec<f64> = rs.iter().map(|r| r.rate).collect();
                let mut cpu: Vec<f64> = rs.iter().map(|r| r.cpu_us_per_msg).collect();
                let mut wire: Vec<f64> = rs.iter().map(|r| r.wire_bytes_per_msg).collect();
                (median(&mut rate), median(&mut cpu), median(&mut wire))
            })
            .collect();
        let (base_rate, base_cpu, base_wire) = summary[0];
        println!(
            "| scenario | server | msg/s | ratio | server CPU µs/msg | ratio | bytes written/msg (wchar) |"
        );
        for (kind, (rate, cpu, wire)) in servers.iter().zip(&summary) {
            println!(
                "| {name} | {} | {:.0} | {:.3} | {:.2} | {:.3} | {:.0} |",
                kind.name(),
                rate,
                rate / base_rate,
                cpu,
                cpu / base_cpu,
                wire,
            );
        }
        let _ = base_wire;
    }

    if wanted("idle") || wanted("idle-json") {
        println!("## idle: {} connections, load {}", args.idle, loadavg());
        let variants: Vec<(&str, ServerKind, ClientKind, &Payload)> = vec![
            ("raw-axum, 32 B echoed", Raw, Tungstenite, &text32),
            (
                "yawc deflate on, not negotiated, 32 B",
                Yawc,
                Tungstenite,
                &text32,
            ),
            ("yawc-no-deflate, 32 B", YawcPlain, Tungstenite, &text32),
            ("yawc deflate negotiated, 32 B", Yawc, YawcDeflate, &text32),
            (
                "yawc deflate negotiated, 16 KiB JSON",
                Yawc,
                YawcDeflate,
                &json,
            ),
            ("raw-axum, 16 KiB JSON echoed", Raw, YawcDeflate, &json),
            (
                "yawc 8 KiB buffers, deflate negotiated, 32 B",
                Yawc8k,
                YawcDeflate,
                &text32,
            ),
            (
                "yawc 8 KiB buffers, deflate negotiated, 16 KiB JSON",
                Yawc8k,
                YawcDeflate,
                &json,
            ),
            (
                "yawc-no-deflate, 16 KiB JSON echoed",
                YawcPlain,
                Tungstenite,
                &json,
            ),
            (
                "yawc deflate negotiated, 16 KiB JSON, write boundary 1 KiB",
                YawcSmallBoundary,
                YawcDeflate,
                &json,
            ),
        ];
        for round in 0..args.rounds.min(2) {
            for (label, server_kind, client, payload) in &variants {
                if !wanted("idle") && !label.contains("JSON") {
                    continue;
                }
                let server = Server::start(*server_kind).await?;
                let result = idle_memory(&server, *client, payload, args.idle).await;
                // Stop the server first, then drop the client ends.
                server.stop().await?;
                let ((per_conn, before, after), idle) = result?;
                drop(idle);
                println!(
                    "idle round {round} | {label} | {per_conn:.2} KiB/conn | RSS {before} -> {after} KiB | load {}",
                    loadavg()
                );
            }
        }
    }
    Ok(())
}
