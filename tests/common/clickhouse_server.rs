//! A real `clickhouse-server` for integration tests, in a temporary folder on
//! free ports.
//!
//! The binary is `CLICKHOUSE_SERVER_BIN`, else `/usr/sbin/clickhouse-server`
//! (Debian's `clickhouse-server` package, 18.16). Its packaged
//! `/etc/clickhouse-server/config.xml` and `users.xml` are copied with every
//! path moved into the temporary folder, the ports replaced by free ones and
//! the `::1` listen host dropped. Without a binary a test is skipped with a
//! note, except under `CI=true`, where that is a failure: CI must run them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed on drop.
pub struct ClickHouseServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The HTTP port.
    pub http_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The binary, or None (test skipped) outside CI.
fn find_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("CLICKHOUSE_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/clickhouse-server"));
    if candidate.is_file() && Path::new("/etc/clickhouse-server/config.xml").is_file() {
        return Some(candidate);
    }
    let msg = format!(
        "no clickhouse-server at {} (or no /etc/clickhouse-server/config.xml): \
         `apt-get install clickhouse-server clickhouse-client` or set CLICKHOUSE_SERVER_BIN",
        candidate.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

impl ClickHouseServer {
    /// Starts a server, or returns None when there is none to start (outside CI).
    pub fn start() -> Option<ClickHouseServer> {
        let bin = find_binary()?;
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (http, tcp, inter) = (free_port(), free_port(), free_port());
        let root = dir.path();
        for sub in ["data", "log", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(root.join(sub)).expect("server folders");
        }
        let data = format!("{}/data/", root.display());
        let log = format!("{}/log/", root.display());
        let config = std::fs::read_to_string("/etc/clickhouse-server/config.xml")
            .expect("readable config.xml")
            .replace("/var/lib/clickhouse/", &data)
            .replace("/var/log/clickhouse-server/", &log)
            .replace(
                "<http_port>8123</http_port>",
                &format!("<http_port>{http}</http_port>"),
            )
            .replace(
                "<tcp_port>9000</tcp_port>",
                &format!("<tcp_port>{tcp}</tcp_port>"),
            )
            .replace(
                "<interserver_http_port>9009</interserver_http_port>",
                &format!("<interserver_http_port>{inter}</interserver_http_port>"),
            )
            .replace("<listen_host>::1</listen_host>", "");
        std::fs::write(root.join("config.xml"), config).expect("config written");
        let users = std::fs::read_to_string("/etc/clickhouse-server/users.xml")
            .expect("readable users.xml")
            .replace("/var/lib/clickhouse/", &data);
        std::fs::write(root.join("users.xml"), users).expect("users written");
        let mut s = ClickHouseServer {
            bin,
            dir,
            http_port: http,
            child: None,
        };
        s.spawn();
        Some(s)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (as kill -9 would) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`ClickHouseServer::kill`]) on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let root = self.dir.path();
        let child = Command::new(&self.bin)
            .arg(format!(
                "--config-file={}",
                root.join("config.xml").display()
            ))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.ping() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(root.join("log/clickhouse-server.err.log"))
                    .unwrap_or_default();
                panic!("clickhouse-server exited at start: {status}\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer on port {} within 60 s",
                self.http_port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `GET /ping` answers `Ok.`.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("Ok.")
    }

    /// Runs one SQL statement over HTTP and returns the body (TabSeparated),
    /// failing the test on an error answer.
    pub fn sql(&self, query: &str) -> String {
        match self.try_sql(query) {
            Ok(body) => body,
            Err(e) => panic!("query failed: {e}\n{query}"),
        }
    }

    /// [`ClickHouseServer::sql`] returning the error text instead of failing.
    pub fn try_sql(&self, query: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let req = format!(
            "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{}",
            query.len(),
            query
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(|e| e.to_string())?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
            Ok(body.to_string())
        } else {
            Err(format!("{}: {body}", head.lines().next().unwrap_or("")))
        }
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}
