//! The command line: a hand-written parser for a handful of flags, and the usage text.

use crate::scenario::Scenario;
use crate::server::ServerKind;

pub(crate) const USAGE: &str = "\
usage: tachyon-bench [--quick] [--rounds N] [--only SCENARIO] [--csv]
       tachyon-bench --url ws://127.0.0.1:PORT/PATH [--pid PID] [--quick] [--rounds N] [--only SCENARIO] [--csv]

Measures Tachyon against raw axum (each served by a child process of this binary) and prints the
median of each server over the rounds and their ratio. With --url, measures that one server
instead (idle-memory only with --pid, the server's process id, to read its memory).

  --quick          short runs (the whole comparison takes well under a minute)
  --rounds N       rounds per scenario, at least 3 (default 3)
  --only SCENARIO  one of: echo-32, echo-16k, echo-deflate, latency, connect, idle-memory,
                   fan-out, cluster, history, recovery, history-memory, echo-metrics (echo-deflate compares
                   Tachyon's echo with permessage-deflate on and off; fan-out runs a floor server
                   beside the two; cluster starts its own redis-server, which must be on PATH;
                   the history ones compare Tachyon's rooms with history on and off, replay with
                   live delivery, history memory with its payload; echo-metrics, only with
                   --only, compares the echo with Tachyon's metrics feature on and off and needs
                   the two builds that scripts/bench-metrics makes)
  --csv            comma-separated output instead of a table";

/// What the binary was asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Measure and report.
    Bench(Options),
    /// Serve one of the servers under test (the hidden subcommand the harness starts itself with).
    Serve(ServerKind),
    /// Serve a Tachyon node whose rooms go through the Redis at this URL, with history or not
    /// (hidden, as `serve`).
    ServeNode { redis: String, history: bool },
    /// Fill room histories on request, for the history-memory scenario to read this process's
    /// memory (hidden, as `serve`).
    ServeHistoryMemory(crate::history::Fill),
    /// Print the usage text.
    Help,
}

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) only: Option<Scenario>,
    pub(crate) url: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) csv: bool,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut options = Options {
        quick: false,
        rounds: 3,
        only: None,
        url: None,
        pid: None,
        csv: false,
    };
    let mut first = true;
    while let Some(arg) = args.next() {
        if first && arg == "serve" {
            let kind = args
                .next()
                .ok_or("serve: which server? raw, tachyon, tachyon-serve, history or floor")?;
            if kind == "node" {
                let redis = args.next().ok_or("serve node: which Redis URL?")?;
                let history = match args.next().as_deref() {
                    None => false,
                    Some("history") => true,
                    Some(other) => return Err(format!("serve node: `{other}`, not `history`")),
                };
                return Ok(Command::ServeNode { redis, history });
            }
            if kind == "history-memory" {
                let mut number = |what: &str| {
                    args.next()
                        .and_then(|value| value.parse().ok())
                        .ok_or(format!("serve history-memory: how many {what}?"))
                };
                let fill = crate::history::Fill {
                    rooms: number("rooms")?,
                    messages: number("messages")?,
                    size: number("bytes")?,
                };
                return Ok(Command::ServeHistoryMemory(fill));
            }
            return ServerKind::parse(&kind).map(Command::Serve).ok_or_else(|| {
                format!(
                    "serve: unknown server `{kind}` (raw, tachyon, tachyon-serve, history or floor)"
                )
            });
        }
        first = false;
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--csv" => options.csv = true,
            "--rounds" => {
                let rounds = value("--rounds")?;
                options.rounds = match rounds.parse() {
                    Ok(rounds) if rounds >= 3 => rounds,
                    _ => {
                        return Err(format!(
                            "--rounds: `{rounds}` is not a number of at least 3"
                        ));
                    }
                };
            }
            "--only" => {
                let name = value("--only")?;
                let scenario = Scenario::parse(&name)
                    .ok_or_else(|| format!("--only: unknown scenario `{name}`"))?;
                options.only = Some(scenario);
            }
            "--url" => {
                let url = value("--url")?;
                if !url.starts_with("ws://127.0.0.1:") && !url.starts_with("ws://localhost:") {
                    return Err(format!("--url: `{url}` is not a ws:// URL on this machine"));
                }
                options.url = Some(url);
            }
            "--pid" => {
                let pid = value("--pid")?;
                options.pid = Some(pid.parse().map_err(|_| format!("--pid: `{pid}`"))?);
            }
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if options.pid.is_some() && options.url.is_none() {
        return Err("--pid goes with --url".to_owned());
    }
    Ok(Command::Bench(options))
}
