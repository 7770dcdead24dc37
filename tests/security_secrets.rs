//! Secrets never show: the real `spool-worker`, `spoolctl`, `spool-beat`
//! and `spool-autoscaler` run against a Redis that requires a password and
//! sign tasks with a key file, logging at trace level, through successes
//! and failures (a wrong password, a bad key file, a bad store URL) and
//! `--help` with the URLs in the environment. No password, no key appears
//! in anything they print.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use spool_broker::{Envelope, Priority, QueueName};
use spool_tests::{RedisServer, TestRedis, bins, wait_until};

const PASSWORD: &str = "Pw-c0rrect-h0rse-77413";
const WRONG_PASSWORD: &str = "Pw-wr0ng-b4ttery-99131";
const STORE_PASSWORD: &str = "Pw-st0re-st4ple-55120";
const KEY: &str = "Key-m4terial-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OLD_KEY: &str = "Key-0ld-m4terial-a5b4c3d2e1f00f1e2d3c4b5a6978";
const SHORT_KEY: &str = "Key-sh0rt-4410";

/// Every secret of the test; none may be printed.
const SECRETS: [&str; 6] = [
    PASSWORD,
    WRONG_PASSWORD,
    STORE_PASSWORD,
    KEY,
    OLD_KEY,
    SHORT_KEY,
];

/// Fails the test if `text` (what `what` printed) holds a secret.
fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} printed the secret {secret:?}:\n{text}"
        );
    }
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("spool-secrets-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command of the workspace binary `name`, logging at trace level.
fn command(name: &str) -> Command {
    let path = match name {
        "spool-worker" => bins::spool_worker(),
        "spool-autoscaler" => bins::spool_autoscaler(),
        other => bins::workspace_bin(other, "spool-scheduler"),
    };
    let mut command = Command::new(path);
    command
        .env("RUST_LOG", "trace")
        .env("SPOOL_LOG", "trace")
        .env_remove("SPOOL_REDIS_URL")
        .env_remove("SPOOL_STORE_URL")
        .env_remove("SPOOL_SIGNING_KEY_FILE")
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end (killed after 60 s), checks that it printed
/// no secret, and returns its output, also as text.
fn run(what: &str, command: &mut Command) -> (Output, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_clean(what, &text);
    (output, text)
}

/// A long-running process whose output goes to a file; SIGTERMed and
/// checked by [`Daemon::stop`], killed if dropped.
struct Daemon {
    what: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(what: &'static str, mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { what, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Warm shutdown; returns the log, checked for secrets.
    async fn stop(mut self) -> String {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let child = &mut self.child;
        wait_until(self.what, Duration::from_secs(20), || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited }
        })
        .await;
        let log = self.log();
        assert_clean(self.what, &log);
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis that requires `PASSWORD`.
async fn password_protected_redis() -> (RedisServer, String) {
    let server = RedisServer::start(&[]);
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port);
    (server, url)
}

#[tokio::test]
async fn help_output_hides_the_urls_in_the_environment() {
    let store = format!("postgres://spool:{STORE_PASSWORD}@db.internal/spool");
    let redis = format!("redis://:{PASSWORD}@redis.internal:6379/");
    let cases: [(&str, &[&str]); 6] = [
        ("spool-worker", &["--help"]),
        ("spoolctl", &["--help"]),
        ("spoolctl", &["call", "--help"]),
        ("spoolctl", &["tasks", "--help"]),
        ("spool-beat", &["--help"]),
        ("spool-autoscaler", &["--help"]),
    ];
    for (name, args) in cases {
        let (output, text) = run(
            name,
            command(name)
                .args(args)
                .env("SPOOL_REDIS_URL", &redis)
                .env("SPOOL_STORE_URL", &store),
        );
        assert!(output.status.success(), "{name} {args:?}: {text}");
        // The variable is named, its value is not.
        assert!(text.contains("SPOOL_REDIS_URL"), "{name} {args:?}: {text}");
        assert!(!text.contains("redis.internal"), "{name} {args:?}: {text}");
    }
}

#[tokio::test]
async fn no_binary_prints_a_password_or_a_key() {
    let (_server, url) = password_protected_redis().await;
    let wrong_url = url.replace(PASSWORD, WRONG_PASSWORD);
    let redis = TestRedis::at(&url).await;
    let prefix = redis.prefix.clone();
    let scratch = Scratch::new();
    let keys = scratch.file("signing.keys", &format!("{KEY}\n{OLD_KEY}\n"));
    let short_keys = scratch.file("short.keys", &format!("{SHORT_KEY}\n"));
    let beat_config = scratch.file(
        "beat.toml",
        "lock_ttl = \"2s\"\n\n[[entry]]\nname = \"heartbeat\"\ntask = \"spool.ping\"\nevery = \"1s\"\n",
    );
    let spoolctl = |args: &[&str], url: &str, keys: &Path| {
        let mut command = command("spoolctl");
        command
            .env("SPOOL_REDIS_URL", url)
            .env("SPOOL_KEY_PREFIX", &prefix)
            .env("SPOOL_SIGNING_KEY_FILE", keys)
            .args(args);
        run(&format!("spoolctl {args:?}"), &mut command)
    };

    // The merged settings, as printed: the URL without its password.
    let (output, text) = run(
        "spool-worker --print-config",
        command("spool-worker")
            .arg("--print-config")
            .arg("--signing-key-file")
            .arg(&keys)
            .env("SPOOL_REDIS_URL", &url)
            .env(
                "SPOOL_STORE_URL",
                format!("postgres://spool:{STORE_PASSWORD}@127.0.0.1:1/spool"),
            ),
    );
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", _server.port)),
        "{text}"
    );

    // A signing worker, a signing beat, and spoolctl calls.
    let mut worker = command("spool-worker");
    worker
        .env("SPOOL_REDIS_URL", &url)
        .env("SPOOL_KEY_PREFIX", &prefix)
        .arg("--signing-key-file")
        .arg(&keys)
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .args([
            "--processes",
            "1",
            "--concurrency",
            "2",
            "--poll-interval",
            "100ms",
        ]);
    let worker = Daemon::start("spool-worker", worker, scratch.0.join("worker.log"));
    let mut beat = command("spool-beat");
    beat.arg("--config")
        .arg(&beat_config)
        .env("SPOOL_REDIS_URL", &url)
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_SIGNING_KEY_FILE", &keys);
    let beat = Daemon::start("spool-beat", beat, scratch.0.join("beat.log"));

    let (output, text) = spoolctl(
        &["call", "--force", "spool.echo", "--count", "2"],
        &url,
        &keys,
    );
    assert!(output.status.success(), "{text}");
    let (output, text) = spoolctl(
        &["call", "--force", "spool.nope", "--max-attempts", "1"],
        &url,
        &keys,
    );
    assert!(output.status.success(), "{text}");
    // The worker's child read the key file itself: it refuses what is not
    // signed.
    let unsigned = Envelope::new("spool.echo", QueueName::DEFAULT, b"\x80".to_vec());
    redis
        .xadd_raw(
            &QueueName::DEFAULT,
            Priority::Normal,
            &[("e", &unsigned.encode().unwrap())],
        )
        .await;
    // Both calls ran or died as tasks, and beat's signed ticks ran too: a
    // signing worker dead-letters anything unsigned.
    wait_until(
        "the calls, the injection and two ticks to be done",
        Duration::from_secs(30),
        || async {
            let stats = redis.stats(&QueueName::DEFAULT).await;
            stats.completed_total >= 6 && stats.dead == 2
        },
    )
    .await;
    for args in [
        &["queues", "--json"][..],
        &["queues"],
        &["workers", "--json"],
        &["workers"],
        &["dead", "list", "default"],
        &["dead", "list", "default", "--json"],
    ] {
        let (output, text) = spoolctl(args, &url, &keys);
        assert!(output.status.success(), "{args:?}: {text}");
    }
    let dead = redis.dead_letters(&QueueName::DEFAULT).await;
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["unknown_task", "unsigned"], "{dead:?}");

    // Failures: a wrong password, a key too short, a store that is down.
    let (output, text) = spoolctl(&["queues"], &wrong_url, &keys);
    assert!(!output.status.success(), "{text}");
    let (output, text) = spoolctl(&["call", "--force", "spool.echo"], &url, &short_keys);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("short.keys"), "{text}");
    let (output, text) = run(
        "spoolctl tasks",
        command("spoolctl").args([
            "tasks",
            "--store-url",
            &format!("postgres://spool:{STORE_PASSWORD}@127.0.0.1:1/spool"),
        ]),
    );
    assert!(!output.status.success(), "{text}");
    let (output, text) = run(
        "spool-worker with a wrong password",
        command("spool-worker")
            .env("SPOOL_REDIS_URL", &wrong_url)
            .env("SPOOL_KEY_PREFIX", &prefix)
            .args(["--no-video", "--no-probe", "--metrics-addr", "none"]),
    );
    assert!(!output.status.success(), "{text}");
    let (output, text) = run(
        "spool-worker with a short key",
        command("spool-worker")
            .env("SPOOL_REDIS_URL", &url)
            .env("SPOOL_SIGNING_KEY_FILE", &short_keys)
            .args(["--no-video", "--no-probe", "--metrics-addr", "none"]),
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--signing-key-file"), "{text}");
    let (output, text) = run(
        "spool-worker with a bad store URL",
        command("spool-worker")
            .env("SPOOL_REDIS_URL", &url)
            .env(
                "SPOOL_STORE_URL",
                format!("mysql://spool:{STORE_PASSWORD}@127.0.0.1/spool"),
            )
            .arg("--print-config"),
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--store-url"), "{text}");
    let (output, text) = run(
        "spool-beat with a wrong password",
        command("spool-beat")
            .arg("--config")
            .arg(&beat_config)
            .env("SPOOL_REDIS_URL", &wrong_url)
            .env("SPOOL_SIGNING_KEY_FILE", &keys),
    );
    assert!(!output.status.success(), "{text}");

    let beat_log = beat.stop().await;
    let worker_log = worker.stop().await;
    // Logging was on: what was checked is real output.
    assert!(
        worker_log.contains("TRACE") || worker_log.contains("DEBUG"),
        "{worker_log}"
    );
    assert!(beat_log.contains("tick enqueued"), "{beat_log}");
    redis.cleanup().await;
}
