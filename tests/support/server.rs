//! A `redis-server` owned by one test, on its own port: for faults
//! (restarts) and settings (eviction policy, AOF) no shared server may
//! have.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    /// More ports of its own, from [`RedisServer::start_with_ports`].
    pub extra_ports: Vec<u16>,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port with `args` (such as
    /// `["--appendonly", "yes"]`), its files in a fresh directory.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_ports(0, |_| args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// Like [`RedisServer::start`], with `extra` more free ports handed to
    /// `args` (for a TLS port or a cluster bus port). A port is only free
    /// when chosen: one taken in the meantime by another test's server
    /// makes this one exit at once, and it starts again on fresh ports.
    pub fn start_with_ports(extra: usize, args: impl Fn(&[u16]) -> Vec<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let extra_ports: Vec<u16> = (0..extra).map(|_| free_port()).collect();
            let mut all = extra_ports.clone();
            all.push(port);
            all.sort_unstable();
            all.dedup();
            if all.len() != extra + 1 {
                continue;
            }
            let dir =
                std::env::temp_dir().join(format!("spool-redis-{port}-{:08x}", fastrand::u32(..)));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = Self {
                port,
                args: args(&extra_ports),
                extra_ports,
                dir,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start: {failures:?}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the process and waits until it answers; `Err` if it exits
    /// first (a port taken, say).
    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: run `bash ops/scripts/setup.sh`");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            // Up when it answers, even if only to refuse a client without
            // the password (`--requirepass`, ACL files).
            match client.get_connection() {
                Ok(mut conn) => match redis::cmd("PING").query::<String>(&mut conn) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.to_string().contains("NOAUTH") => return Ok(()),
                    Err(_) => {}
                },
                Err(e) if e.to_string().contains("NOAUTH") => return Ok(()),
                Err(_) => {}
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server on {} exited: {status}", self.port));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server abruptly (SIGKILL): whatever it did not persist is
    /// lost, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (reloading its AOF).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(failure) = self.spawn() {
            panic!("{failure}");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    // Bind port 0 and let the OS choose; the tiny race until redis-server
    // binds it is acceptable in tests.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
