//! `tachyon-bench`: measures Tachyon against raw axum WebSockets on this machine and prints the
//! ratios. Run it as `cargo run --release -p tachyon-bench -- [--quick]`; `--help` lists the rest.
//!
//! Each server runs in a child process of this binary (`tachyon-bench serve raw|tachyon`); the
//! client is tokio-tungstenite in this process. Every scenario runs for both servers in each
//! round, raw first in even rounds and Tachyon first in odd ones, and the report gives each
//! server's median over the rounds. It is a measurement, not a test: it exits with 0 whether the
//! targets are met or not, with 1 when the harness itself fails (a server that does not start, a
//! connection error) and with 2 for a command line it does not understand.

mod args;
mod client;
mod cluster;
mod deflate;
mod fanout;
mod floor;
mod history;
mod metrics_cost;
mod report;
mod scenario;
mod server;
mod wire;

use std::io::{self, Write};
use std::process::ExitCode;

use args::{Command, Options};
use report::{Medians, Row};
use scenario::{Endpoint, Scenario, Settings};
use server::{Server, ServerKind};

#[tokio::main]
async fn main() -> ExitCode {
    let result = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Serve(kind)) => server::serve(kind).await,
        Ok(Command::ServeNode { redis, history }) => server::serve_node(&redis, history).await,
        Ok(Command::ServeHistoryMemory(fill)) => history::serve_memory(fill).await,
        Ok(Command::Bench(options)) => bench(options).await,
        Ok(Command::Help) => writeln!(io::stdout(), "{}", args::USAGE),
        Err(error) => {
            eprintln!("tachyon-bench: {error}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tachyon-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(options: Options) -> io::Result<()> {
    // Child processes inherit the raised limit, so both ends can hold the idle connections.
    let open_files = rlimit::increase_nofile_limit(u64::MAX)?;
    let settings = Settings::new(options.quick, open_files);
    let full = Settings::new(false, open_files);
    let scenarios: Vec<Scenario> = match options.only {
        Some(scenario) => vec![scenario],
        // The metrics echo needs a second build: it runs with `--only` (scripts/bench-metrics).
        None => Scenario::ALL
            .into_iter()
            .filter(|scenario| *scenario != Scenario::EchoMetrics)
            .collect(),
    };

    let kernel = std::fs::read_to_string("/proc/version")?;
    let facts = [
        ("nproc", std::thread::available_parallelism()?.to_string()),
        (
            "kernel",
            kernel.lines().next().unwrap_or_default().to_owned(),
        ),
        (
            "load average",
            std::fs::read_to_string("/proc/loadavg")?.trim().to_owned(),
        ),
        ("nofile limit", open_files.to_string()),
        ("rounds", options.rounds.to_string()),
        (
            "settings",
            format!(
                "{} ({:?} per timed run, {} round trips, {} idle connections)",
                if options.quick { "quick" } else { "full" },
                settings.duration,
                settings.round_trips,
                settings.idle_connections
            ),
        ),
        (
            "history",
            format!(
                "a room of {} ({} bursts of {} broadcasts, {} one by one); recovery {} members \
                 x {} missed{}; history-memory {} rooms x {} messages of {} B",
                settings.history_members,
                settings.history_bursts,
                history::HISTORY_BURST,
                settings.history_round_trips,
                settings.recovery_members,
                server::HISTORY_DEPTH,
                if settings.recovery_members < full.recovery_members {
                    format!(
                        " (scaled down for --quick: the full run has {} x {})",
                        full.recovery_members,
                        server::HISTORY_DEPTH
                    )
                } else {
                    String::new()
                },
                settings.memory_rooms,
                settings.memory_messages,
                server::HISTORY_MESSAGE.len(),
            ),
        ),
        (
            "server",
            options
                .url
                .clone()
                .unwrap_or_else(|| "raw and tachyon, child processes".to_owned()),
        ),
    ];
    report::write_facts(&mut io::stdout(), &facts, options.csv)?;

    let rows = match &options.url {
        Some(url) => measure_one(url, options.pid, &scenarios, &settings, options.rounds).await?,
        None => compare(&scenarios, &settings, options.rounds).await?,
    };
    report::write_rows(&mut io::stdout(), &rows, options.csv)
}

/// Runs every scenario `rounds` times against each server, alternating which goes first.
async fn compare(
    scenarios: &[Scenario],
    settings: &Settings,
    rounds: usize,
) -> io::Result<Vec<Row>> {
    let kinds = [ServerKind::Raw, ServerKind::Tachyon];
    let servers = [
        Server::start(kinds[0]).await?,
        Server::start(kinds[1]).await?,
    ];
    let mut rows = Vec::new();
    for &scenario in scenarios {
        match scenario {
            // In-process rooms against rooms through Redis: servers of its own.
            Scenario::Cluster => {
                rows.extend(cluster::compare(&servers[1], settings, rounds).await?);
                continue;
            }
            // Tachyon against the naive pattern and a floor server of its own.
            Scenario::Fanout => {
                rows.extend(fanout::compare(&servers[0], &servers[1], settings, rounds).await?);
                continue;
            }
            // The Tachyon server's echo, built with the `metrics` feature and without.
            Scenario::EchoMetrics => {
                rows.extend(metrics_cost::compare(settings, rounds).await?);
                continue;
            }
            // The Tachyon server's echo with deflate off and on.
            Scenario::EchoDeflate => {
                rows.extend(deflate::compare(&servers[1], settings, rounds).await?);
                continue;
            }
            // Two setups of Tachyon's each, on fresh servers (or none).
            Scenario::History => {
                rows.extend(history::compare_history(settings, rounds).await?);
                continue;
            }
            Scenario::Recovery => {
                rows.extend(history::compare_recovery(settings, rounds).await?);
                continue;
            }
            Scenario::HistoryMemory => {
                rows.extend(history::compare_memory(settings, rounds).await?);
                continue;
            }
            _ => {}
        }
        // runs[side][round][metric], side 0 for raw and 1 for Tachyon.
        let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Neither server always goes first, on a machine a little warmer or cooler.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let values = if scenario.needs_fresh_server() {
                    let fresh = Server::start(kinds[side]).await?;
                    let values = scenario.run(&endpoint(&fresh), settings).await;
                    fresh.stop().await?;
                    values?
                } else {
                    scenario.run(&endpoint(&servers[side]), settings).await?
                };
                progress(scenario, round, rounds, kinds[side].name(), &values);
                runs[side].push(values);
            }
        }
        for (index, metric) in scenario.metrics().iter().enumerate() {
            let [raw, tachyon] = runs.each_ref().map(|runs| median_of(runs, index));
            let medians = Medians::Compared { raw, tachyon };
            rows.push(Row { metric, medians });
        }
    }
    for server in servers {
        server.stop().await?;
    }
    Ok(rows)
}

/// `--url` mode: every scenario against one server; idle-memory only when its pid is known.
async fn measure_one(
    url: &str,
    pid: Option<u32>,
    scenarios: &[Scenario],
    settings: &Settings,
    rounds: usize,
) -> io::Result<Vec<Row>> {
    let target = Endpoint {
        url: url.to_owned(),
        pid,
    };
    let mut rows = Vec::new();
    for &scenario in scenarios {
        if scenario.runs_own_servers() {
            eprintln!("{}: skipped (runs servers of its own)", scenario.name());
            continue;
        }
        if scenario.needs_fresh_server() && pid.is_none() {
            eprintln!("{}: skipped (needs --pid)", scenario.name());
            continue;
        }
        // A server keeps the memory it freed, so only the first idle-memory run of a process
        // that is not ours to restart counts.
        let rounds = if scenario.needs_fresh_server() {
            eprintln!(
                "{}: one run only (the server is not restarted)",
                scenario.name()
            );
            1
        } else {
            rounds
        };
        let mut runs = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let values = scenario.run(&target, settings).await?;
            progress(scenario, round, rounds, "server", &values);
            runs.push(values);
        }
        for (index, metric) in scenario.metrics().iter().enumerate() {
            let medians = Medians::Single(median_of(&runs, index));
            rows.push(Row { metric, medians });
        }
    }
    Ok(rows)
}

fn endpoint(server: &Server) -> Endpoint {
    Endpoint {
        url: server.url(),
        pid: server.pid(),
    }
}

/// The median over the rounds of the metric at `index`.
fn median_of(runs: &[Vec<f64>], index: usize) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(|values| values[index]).collect();
    report::median(&mut values)
}

/// One line per run on standard error, so that standard output holds only the report.
pub(crate) fn progress(
    scenario: Scenario,
    round: usize,
    rounds: usize,
    server: &str,
    values: &[f64],
) {
    let shown: Vec<String> = scenario
        .metrics()
        .iter()
        .zip(values)
        .map(|(metric, value)| format!("{value:.0$} {1}", metric.decimals, metric.unit))
        .collect();
    eprintln!(
        "{:<12} round {}/{rounds} {server:<8} {}",
        scenario.name(),
        round + 1,
        shown.join(", ")
    );
}
