//! An example program as a child process, for tests that stop a server the way its operator
//! would (SIGTERM) while others go on: cargo builds it (nothing to do once it is up to date), it
//! listens on a free loopback port, and it is killed if the test ends without stopping it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{Client, within};

/// The longest building an example may take: the first build of a test run compiles it.
const BUILD_WAIT: Duration = Duration::from_secs(300);

/// A running example.
pub struct Example {
    pub addr: SocketAddr,
    name: String,
    child: Child,
}

impl Example {
    /// Runs the example `name` with `--addr 127.0.0.1:PORT` and `args`, and waits until it
    /// accepts connections.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        let binary = build(name).await;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1");
        let mut child = Command::new(&binary)
            .arg("--addr")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        within(&format!("the {name} example to listen on {addr}"), async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the {name} example exited before listening: {status}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Self {
            addr,
            name: name.to_owned(),
            child,
        }
    }

    /// Connects a tokio-tungstenite client to `path`.
    pub async fn connect(&self, path: &str) -> Client {
        let url = format!("ws://{}{path}", self.addr);
        let (client, _) = within("connecting", tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket handshake");
        client
    }

    /// Asks the example to stop as a service manager does (SIGTERM); [`exit`](Self::exit)
    /// waits for it.
    pub async fn terminate(&mut self) {
        let pid = self.child.id().expect("the example is running");
        let status = within(
            "kill -TERM",
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status(),
        )
        .await
        .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}: {status}");
    }

    /// Waits for the example to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        within(
            &format!("the {} example to exit", self.name),
            self.child.wait(),
        )
        .await
        .expect("waiting for the example")
    }
}

/// The binary of the example `name`, built first (once per test binary).
async fn build(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::const_new(None);
    let mut built = BUILT.lock().await;
    if let Some(binary) = built.get_or_insert_default().get(name) {
        return binary.clone();
    }
    // At the lowest priority: the tests beside this one (a browser on a virtual-time budget)
    // must not starve while it compiles.
    let mut command = Command::new("nice");
    command
        .args(["-n", "19", env!("CARGO")])
        // `--workspace`, as the README's `cargo test --workspace`: the same features, so the
        // example built for the tests is the one found here, with nothing to rebuild.
        .args([
            "build",
            "--workspace",
            "--example",
            name,
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = match tokio::time::timeout(BUILD_WAIT, command.output()).await {
        Ok(output) => output.expect("cargo runs"),
        Err(_) => panic!("building the {name} example took longer than {BUILD_WAIT:?}"),
    };
    assert!(
        output.status.success(),
        "cargo build --example {name} failed"
    );
    // Cargo names the binary in its artifact message.
    let binary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == name
                && message["target"]["kind"][0] == "example"
        })
        .and_then(|artifact| artifact["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable for the {name} example"));
    built
        .get_or_insert_default()
        .insert(name.to_owned(), binary.clone());
    binary
}
