//! Debian's Chromium, headless, driven through chromedriver with
//! fantoccini, for the dashboard's browser suites (tests/dashboard_*.rs);
//! and the `spool-dashboard` process they look at.
//!
//! chromedriver is started by the test on a free port; each browser gets a
//! profile directory of its own under the temporary directory, removed
//! when the browser closes, so no run leaves a profile behind.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::bins::workspace_bin;
use crate::free_port;

/// chromedriver on `PATH` (Debian's `chromium-driver` package puts it in
/// /usr/bin), or `None`.
pub fn chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

/// chromedriver, or `None` after saying clearly why `test` skips: the
/// only reason these suites skip. ops/scripts/setup.sh installs it
/// (`chromium chromium-driver`), so CI always has it.
pub fn chromedriver_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromedriver();
    if found.is_none() {
        eprintln!(
            "skipping {test}: chromedriver is not installed (apt-get install chromium \
             chromium-driver, or run ops/scripts/setup.sh)"
        );
    }
    found
}

/// The Chromium binary chromedriver starts.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A running chromedriver with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start(chromedriver: &Path) -> Self {
        let port = free_port();
        // A process group of its own: Chromium, which chromedriver starts,
        // joins it, so the whole browser can be ended at once.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = std::env::temp_dir().join(format!(
            "spool-chromium-{}-{:012x}",
            std::process::id(),
            fastrand::u64(..1 << 48)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let browser = Self {
            client: connect_when_up(port, &profile).await,
            driver,
            profile,
        };
        browser
            .client
            .set_window_size(1280, 900)
            .await
            .expect("the window can be sized");
        browser
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The text of the first element matching `css`, read in one script
    /// so that a live update replacing the element cannot come between
    /// finding it and reading it.
    pub async fn text(&self, css: &str) -> String {
        let text = self
            .client
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
                vec![serde_json::Value::from(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot read {css}: {e}"));
        match text {
            serde_json::Value::String(text) => text,
            _ => panic!("no element {css} in\n{}", self.page_text().await),
        }
    }

    /// The page's URL and visible text, for failure messages.
    pub async fn page_text(&self) -> String {
        let url = self.client.current_url().await.map(|u| u.to_string());
        let text = self
            .client
            .execute(
                "return document.body ? document.body.innerText : ''",
                Vec::new(),
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned());
        format!("{url:?}\n{}", text.unwrap_or_default())
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until an element matches `css`, failing after `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has(css).await {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for an element {css} in\n{}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a PNG of the page to target/dashboard-screenshots/NAME.png
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session, stops chromedriver and removes the profile.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.stop_driver();
    }

    /// Ends chromedriver and every Chromium process (its process group),
    /// waits until none is left, then removes the profile: a process still
    /// running would write into it again.
    fn stop_driver(&mut self) {
        let group = Pid::from_raw(i32::try_from(self.driver.id()).expect("a pid fits i32"));
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.driver.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Signal 0 checks that some process of the group is left.
        while killpg(group, None).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reached `close`.
        self.stop_driver();
    }
}

async fn connect_when_up(port: u16, profile: &Path) -> Client {
    let mut chrome_options = serde_json::json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Some(binary) = chromium() {
        chrome_options["binary"] = binary.to_string_lossy().into_owned().into();
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), "chrome".into());
    capabilities.insert("goog:chromeOptions".into(), chrome_options);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot start a Chromium session through chromedriver: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// target/dashboard-screenshots, beside the test executable's profile dir.
pub fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    target.join("dashboard-screenshots")
}

/// Polls `condition` every 100 ms until it holds, failing after `timeout`.
pub async fn wait<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `spool-dashboard` process, stopped on drop.
#[derive(Debug)]
pub struct DashboardProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl DashboardProcess {
    /// Starts `spool-dashboard` on `listen` (port 0: a free one on
    /// loopback) with `args`, and waits for `/healthz`.
    pub async fn start(redis_url: &str, prefix: &str, args: &[&str]) -> Self {
        let port = free_port();
        let listen = args
            .iter()
            .position(|a| *a == "--listen")
            .map(|i| args[i + 1].to_owned());
        let mut command = Command::new(workspace_bin("spool-dashboard", "spool-dashboard"));
        command
            .env("SPOOL_REDIS_URL", redis_url)
            .env("SPOOL_KEY_PREFIX", prefix)
            .env_remove("SPOOL_STORE_URL")
            .args(["--sample-interval", "200ms"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if listen.is_none() {
            command.args(["--listen", &format!("127.0.0.1:{port}")]);
        }
        let addr: SocketAddr = match &listen {
            Some(l) => {
                let given: SocketAddr = l.parse().unwrap();
                SocketAddr::from(([127, 0, 0, 1], given.port()))
            }
            None => SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let mut child = command.spawn().expect("spool-dashboard starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("spool-dashboard exited at start: {status}");
            }
            if let Ok((200, _)) = http(addr, "GET", "/healthz", &[]).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "spool-dashboard did not answer /healthz"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { addr, child }
    }

    /// The URL of `path` on this dashboard.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM (the warm shutdown), then SIGKILL after 10 s.
fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One HTTP/1.1 request over a fresh connection: the status and the whole
/// answer (headers and body) as text.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    http_with_body(addr, method, path, headers, "").await
}

/// [`http`] with a form body.
pub async fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A `spool-worker` process serving `queues` with the built-in tasks,
/// recording to `store_url`; stopped on drop.
#[derive(Debug)]
pub struct WorkerProcess(Child);

impl WorkerProcess {
    pub fn start(redis_url: &str, prefix: &str, queues: &str, store_url: &str) -> Self {
        let child = Command::new(crate::bins::spool_worker())
            .env("SPOOL_REDIS_URL", redis_url)
            .env("SPOOL_KEY_PREFIX", prefix)
            .env("SPOOL_QUEUES", queues)
            .env("SPOOL_STORE_URL", store_url)
            .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spool-worker starts");
        Self(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}
