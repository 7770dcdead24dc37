//! An S3-compatible server owned by one test: `moto_server` (from the
//! `moto[server]` package that `ops/scripts/setup.sh` installs into
//! `~/.spool/venv`) on a free loopback port, plus a throttling TCP proxy in
//! front of it for faults (a server gone mid-transfer).
//!
//! The suites need it; without one they fail, unless `SPOOL_SKIP_S3=1`
//! asks them to skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream as AsyncTcpStream};
use tokio::task::JoinHandle;

use crate::free_port;

/// The access key the tests sign with: moto accepts any.
pub const ACCESS_KEY: &str = "spool-test-access";
/// The secret the tests sign with; it must never appear in a task record.
pub const SECRET_KEY: &str = "spool-test-secret-DO-NOT-LEAK-9f3a";

/// `moto_server`: `SPOOL_MOTO_SERVER`, else the one in the set-up's venv,
/// else the first on `PATH`.
pub fn moto_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SPOOL_MOTO_SERVER").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("SPOOL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".spool")));
    if let Some(candidate) = home.map(|h| h.join("venv/bin/moto_server"))
        && candidate.is_file()
    {
        return Some(candidate);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
}

/// A running `moto_server`, killed when dropped. Its state lives in memory.
#[derive(Debug)]
pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts one on a free port, or `None` (after failing `test` unless
    /// `SPOOL_SKIP_S3=1`) when none is installed.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let Some(binary) = moto_server() else {
            crate::missing_tool(
                test,
                "an S3-compatible server (moto_server)",
                "run `bash ops/scripts/setup.sh`, which installs moto[server] into ~/.spool/venv, or set SPOOL_MOTO_SERVER",
                "SPOOL_SKIP_S3",
            );
            return None;
        };
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Small multipart parts, so a small file exercises them.
                .env("S3_UPLOAD_PART_MIN_SIZE", "1024")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = Self {
                port,
                child: Some(child),
            };
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(failure) => failures.push(failure),
            }
        }
        panic!("moto_server did not start: {failures:?}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.request("GET", "/", b"") {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("moto_server on {} exited: {status}", self.port));
            }
            if Instant::now() > deadline {
                return Err(format!("moto_server on {} did not answer", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object-store settings of a worker using this server at
    /// `endpoint` (this server's, or a proxy's in front of it), with the
    /// tests' credentials.
    pub fn options(endpoint: &str) -> Vec<(String, String)> {
        [
            ("aws_endpoint", endpoint),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", SECRET_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// One HTTP/1.1 request with an unsigned `Authorization` header (moto
    /// checks none, but serves private objects only to requests that carry
    /// one): the status and the body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        stream.write_all(body).map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |p| p + 4);
        let mut content = response[split..].to_vec();
        if text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            content = dechunk(&content);
        }
        Ok((status, content))
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), b"").unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Writes an object.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}/{key}"), data)
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Reads an object; `None` when it does not exist.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}/{key}"), b"")
            .unwrap();
        assert!(
            status == 200 || status == 404,
            "GET {bucket}/{key}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        (status == 200).then_some(body)
    }

    /// The keys in `bucket` under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request(
                "GET",
                &format!("/{bucket}?list-type=2&prefix={prefix}"),
                b"",
            )
            .unwrap();
        assert_eq!(status, 200);
        tags(&String::from_utf8_lossy(&body), "Key")
    }

    /// The keys of the multipart uploads begun and neither completed nor
    /// aborted in `bucket`.
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?uploads"), b"")
            .unwrap();
        assert_eq!(status, 200);
        tags(&String::from_utf8_lossy(&body), "Key")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The text of every `<tag>…</tag>` in `xml`.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    found
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

/// A TCP proxy to a local port that forwards at most `bytes_per_second`
/// each way, and can be cut: every connection is dropped and new ones are
/// refused until it is opened again (on the same port).
#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    target: u16,
    bytes_per_second: usize,
    open: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free port.
    pub async fn start(target: u16, bytes_per_second: usize) -> Self {
        let mut proxy = Self {
            port: free_port(),
            target,
            bytes_per_second,
            open: Arc::new(AtomicBool::new(false)),
            accept: None,
        };
        proxy.open().await;
        proxy
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Accepts connections again.
    pub async fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let open = Arc::new(AtomicBool::new(true));
        self.open = Arc::clone(&open);
        let (target, rate) = (self.target, self.bytes_per_second);
        self.accept = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let open = Arc::clone(&open);
                tokio::spawn(async move {
                    let Ok(server) = AsyncTcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pipe(client_read, server_write, rate, Arc::clone(&open)) => {}
                        () = pipe(server_read, client_write, rate, open) => {}
                    }
                });
            }
        }));
    }

    /// Drops every connection and refuses new ones: the server is gone.
    pub fn cut(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes_per_second: usize,
    open: Arc<AtomicBool>,
) {
    // 20 slices a second.
    let slice = (bytes_per_second / 20).max(1);
    let mut buffer = vec![0_u8; slice];
    loop {
        if !open.load(Ordering::SeqCst) {
            return;
        }
        let read = tokio::time::timeout(Duration::from_millis(50), from.read(&mut buffer)).await;
        match read {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => {
                if !open.load(Ordering::SeqCst) || to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
