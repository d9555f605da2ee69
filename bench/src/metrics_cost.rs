//! The metrics scenario (issue #17 point 4): what Tachyon's `metrics` feature costs on the echo.
//! The "off" side is the Tachyon server of a build of this harness without the feature (the
//! file [`OFF_BINARY`] beside this one, which `scripts/bench-metrics` builds); the "on" side is
//! this build's, with the feature on and a Prometheus recorder installed
//! (`serve tachyon-metrics`). Both echo 32 B and 16 KiB messages, alternately in each round, and
//! the target is server CPU per message with the feature on ≤ 1.03 × off.

use std::io;
use std::path::PathBuf;

use crate::report::{self, Row};
use crate::scenario::{Endpoint, Goal, Metric, Scenario, Settings};
use crate::server::{Server, ServerKind};

/// The harness built without `--features metrics`, beside this binary.
pub(crate) const OFF_BINARY: &str = "tachyon-bench-metrics-off";

/// The compared rows: feature off ("raw" column) against on.
pub(crate) const ROWS: &[Metric] = &[
    Metric {
        name: "echo-metrics 32 (off vs on)",
        unit: "msg/s",
        decimals: 0,
        goal: Goal::None,
    },
    Metric {
        name: "echo-metrics 32 cpu (off vs on)",
        unit: "us/msg",
        decimals: 2,
        goal: Goal::RatioAtMost(1.03),
    },
    Metric {
        name: "echo-metrics 16k (off vs on)",
        unit: "msg/s",
        decimals: 0,
        goal: Goal::None,
    },
    Metric {
        name: "echo-metrics 16k cpu (off vs on)",
        unit: "us/msg",
        decimals: 2,
        goal: Goal::RatioAtMost(1.03),
    },
];

/// The build without the feature: [`OFF_BINARY`] beside this one.
fn off_binary() -> io::Result<PathBuf> {
    if !cfg!(feature = "metrics") {
        return Err(io::Error::other(
            "echo-metrics: this harness was built without `--features metrics`; \
             scripts/bench-metrics builds both sides and runs it",
        ));
    }
    let path = std::env::current_exe()?.with_file_name(OFF_BINARY);
    if !path.exists() {
        return Err(io::Error::other(format!(
            "echo-metrics: {} is missing (the harness built without the feature); \
             scripts/bench-metrics builds it",
            path.display()
        )));
    }
    Ok(path)
}

/// Runs the 32 B and 16 KiB echoes `rounds` times against each side.
pub(crate) async fn compare(settings: &Settings, rounds: usize) -> io::Result<Vec<Row>> {
    let servers = [
        Server::start_from(&off_binary()?, ServerKind::Tachyon).await?,
        Server::start(ServerKind::TachyonMetrics).await?,
    ];
    let names = ["off", "on"];
    let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let endpoint = Endpoint {
                url: servers[side].url(),
                pid: servers[side].pid(),
            };
            let mut values = Scenario::Echo32.run(&endpoint, settings).await?;
            values.extend(Scenario::Echo16k.run(&endpoint, settings).await?);
            crate::progress(Scenario::EchoMetrics, round, rounds, names[side], &values);
            runs[side].push(values);
        }
    }
    for server in servers {
        server.stop().await?;
    }
    Ok(report::compared(ROWS, &runs))
}
