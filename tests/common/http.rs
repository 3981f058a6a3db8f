//! A minimal HTTP/1.1 client over std sockets for tests against a real
//! listening server, and a writer that captures what a notifier prints.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP/1.1 request over a fresh connection: (status, headers, body).
pub fn http_full(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (413) before reading a large body and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = http_full(port, method, path, token, body);
    (status, body)
}

#[derive(Clone, Default)]
/// A `Write` whose bytes tests read back.
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Percent-encodes a query value.
#[allow(dead_code)]
pub fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Every dimension filter of `GET /incidents` with each of `values`: a 200
/// JSON page holding only the incidents whose value is exactly that text. The
/// store holds `inc_b`, whose provider is the SQL-ish `' OR '1'='1`, and
/// nothing else matching any of `values`.
#[allow(dead_code)]
pub fn assert_filters_match_exactly(port: u16, token: &str, values: &[&str]) {
    for hostile in values {
        for param in ["provider", "region", "rule", "kind", "bin", "merchant_id"] {
            let path = format!("/incidents?{param}={}", q(hostile));
            let (s, h, body) = http_full(port, "GET", &path, Some(token), b"");
            assert_eq!(s, 200, "{param}={hostile}: {body}");
            assert!(h.contains("content-type: application/json"), "{h}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let ids: Vec<&str> = v["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap())
                .collect();
            let expected: &[&str] = if param == "provider" && *hostile == "' OR '1'='1" {
                &["inc_b"]
            } else {
                &[]
            };
            assert_eq!(ids, expected, "{param}={hostile}");
        }
    }
}

/// A gauge or counter's value from `/metrics` of the daemon on `port`, when it
/// answers. `name` includes labels, e.g. `faultline_x_total{result="ok"}`.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (status, body) = http(port, "GET", "/metrics", None, b"");
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
