//! Unit tests of the command line: merging, defaults, errors.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spool_broker::QueueName;

use spool_cli_common::ConnectionFile;

use super::*;

fn resolve_args(args: &[&str]) -> Result<Settings> {
    let args = Args::try_parse_from(std::iter::once("spool-worker").chain(args.iter().copied()))
        .map_err(|e| Error::Config(e.to_string()))?;
    args.resolve().map(|i| i.settings().clone())
}

/// A directory of its own for a test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spool-cli-{name}-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("written");
        path.to_str().expect("utf-8").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_command_is_well_formed() {
    command().debug_assert();
}

#[test]
fn flags_parse_into_settings() {
    let s = resolve_args(&[
        "--queues",
        "default,analysis",
        "--processes",
        "3",
        "--concurrency",
        "4",
        "--max-tasks-per-child",
        "10",
        "--max-memory-per-child",
        "2GiB",
        "--time-limit",
        "1h",
        "--soft-time-limit",
        "55m",
        "--metrics-addr",
        "none",
    ])
    .expect("valid");
    assert_eq!(s.queues, vec![QueueName::DEFAULT, QueueName::ANALYSIS]);
    assert_eq!((s.processes, s.concurrency, s.prefetch), (3, 4, 16));
    assert_eq!(s.max_tasks_per_child, Some(10));
    assert_eq!(s.max_memory_per_child, Some(2 << 30));
    assert_eq!(s.time_limit, Some(Duration::from_secs(3600)));
    assert_eq!(s.soft_time_limit, Some(Duration::from_secs(3300)));
    assert_eq!(s.metrics_addr, None);
    let config = s.worker_config(s.queues.clone(), "c".into());
    assert_eq!(config.max_tasks, Some(10));
    assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
    assert!(config.validate().is_ok());
}

#[test]
fn bad_values_name_their_flag() {
    let e = resolve_args(&["--max-memory-per-child", "lots"]).expect_err("invalid");
    assert!(e.to_string().contains("--max-memory-per-child"), "{e}");
    let e = resolve_args(&["--time-limit", "1m", "--soft-time-limit", "2m"]).expect_err("invalid");
    assert!(e.to_string().contains("--soft-time-limit"), "{e}");
}

#[test]
fn video_flags_parse() {
    let s = resolve_args(&[
        "--input-root",
        "/srv/a",
        "--input-root",
        "/srv/b,/srv/c",
        "--output-root",
        "/srv/out",
        "--ffprobe",
        "/opt/ffprobe",
        "--no-video",
    ])
    .expect("valid");
    let roots: Vec<PathBuf> = ["/srv/a", "/srv/b", "/srv/c"].map(PathBuf::from).to_vec();
    assert_eq!(s.input_roots, roots);
    assert_eq!(s.output_root, PathBuf::from("/srv/out"));
    assert_eq!(s.ffprobe, Some(PathBuf::from("/opt/ffprobe")));
    assert!(s.no_video);
    let d = resolve_args(&[]).expect("valid");
    assert_eq!(d.input_roots, vec![PathBuf::from(".")]);
    assert_eq!(d.output_root, PathBuf::from("spool-output"));
    // (The default ffprobe follows SPOOL_FFPROBE, which set-up exports.)
    assert!(!d.no_video);
}

#[test]
fn object_storage_flags_parse() {
    let s = resolve_args(&[
        "--allow-bucket",
        "s3://media/uploads",
        "--allow-bucket",
        "gs://renditions,az://archive/x",
        "--scratch-dir",
        "/scratch",
        "--scratch-limit",
        "2GiB",
    ])
    .expect("valid");
    assert_eq!(
        s.allowed_buckets,
        ["s3://media/uploads", "gs://renditions", "az://archive/x"].map(String::from)
    );
    assert_eq!(s.scratch_dir, Some(PathBuf::from("/scratch")));
    assert_eq!(s.scratch_limit, 2 << 30);
    let d = resolve_args(&[]).expect("valid");
    assert!(d.allowed_buckets.is_empty() && d.scratch_dir.is_none());
    assert_eq!(d.scratch_limit, 20 << 30);
}

#[test]
fn signing_key_files_are_read_and_bad_ones_named_without_their_keys() {
    let dir = std::env::temp_dir().join(format!("spool-cli-keys-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.keys");
    std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").expect("written");
    let short = dir.join("short.keys");
    std::fs::write(&short, "tiny-secret\n").expect("written");

    let none = resolve_args(&["--signing-key-file", "none"]).expect("valid");
    assert_eq!(none.connection.signing_key_file, None);
    assert!(none.redis_config().expect("no keys").signing.is_none());
    let path = good.to_str().expect("utf-8");
    let s = resolve_args(&["--signing-key-file", path]).expect("valid");
    assert_eq!(
        s.connection.signing_key_file.as_deref(),
        Some(good.as_path())
    );
    let keys = s.redis_config().expect("keys").signing.expect("signing");
    assert_eq!(keys.accepted(), 1);

    let e = resolve_args(&["--signing-key-file", short.to_str().expect("utf-8")])
        .expect_err("too short");
    let text = e.to_string();
    assert!(
        text.contains("--signing-key-file") && text.contains("short.keys"),
        "{text}"
    );
    assert!(!text.contains("tiny-secret"), "{text}");
    std::fs::remove_dir_all(&dir).expect("removed");
}

#[test]
fn printed_settings_hide_passwords() {
    let s = resolve_args(&[
        "--redis-url",
        "redis://spool:hunter2-redis@10.0.0.1:6379/",
        "--store-url",
        "postgres://spool:hunter2-store@db/spool",
    ])
    .expect("valid");
    let shown = format!(
        "{s:?} {}",
        serde_json::to_string(&s.redacted()).expect("json")
    );
    assert!(
        shown.contains("10.0.0.1:6379") && shown.contains("@db/spool"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    // What travels to a child keeps the real URL.
    assert!(
        serde_json::to_string(&s)
            .expect("json")
            .contains("hunter2-redis")
    );
    let e = resolve_args(&["--store-url", "mysql://spool:hunter2-store@db/spool"])
        .expect_err("unsupported");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn settings_survive_json() {
    let s = resolve_args(&["--time-limit", "90s"]).expect("valid");
    let text = serde_json::to_string(&s).expect("encodes");
    assert!(text.contains("\"1m 30s\""), "{text}");
    let back: Settings = serde_json::from_str(&text).expect("decodes");
    assert_eq!(back, s);
}

#[test]
fn a_file_fills_what_flags_leave_and_takes_either_spelling() {
    let dir = TempDir::new("file");
    let config = dir.file(
        "worker.toml",
        r#"
queues = ["analysis", "default"]
concurrency = "3"
max-memory-per-child = "512MiB"
visibility_timeout = "45s"
force_gpu = true
no-probe = "yes"
key_prefix = "from-file"
redis-command-timeout = "20s"
input_root = ["/srv/a", "/srv/b"]
"#,
    );
    let s = resolve_args(&[
        "--config",
        &config,
        "--concurrency",
        "5",
        "--no-probe=false",
    ])
    .expect("valid");
    assert_eq!(s.queues, vec![QueueName::ANALYSIS, QueueName::DEFAULT]);
    assert_eq!((s.concurrency, s.prefetch), (5, 20));
    assert_eq!(s.max_memory_per_child, Some(512 << 20));
    assert_eq!(s.visibility_timeout, Duration::from_secs(45));
    assert!(s.force_gpu && !s.no_probe);
    assert_eq!(s.connection.key_prefix, "from-file");
    assert_eq!(s.connection.redis_command_timeout, Duration::from_secs(20));
    assert_eq!(
        s.input_roots,
        ["/srv/a", "/srv/b"].map(PathBuf::from).to_vec()
    );
    let d = resolve_args(&[]).expect("valid");
    assert_eq!(d.connection.redis_command_timeout, WORKER_COMMAND_TIMEOUT);
    assert_eq!(d.store_retention, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(d.prefetch, d.concurrency * 4);
}

#[test]
fn a_bad_file_names_the_file_and_the_key() {
    let dir = TempDir::new("bad-file");
    for (text, key, problem) in [
        ("no_such_setting = 1\n", "no_such_setting", "unknown key"),
        ("concurrency = true\n", "concurrency", "not a whole number"),
        (
            "visibility_timeout = \"soon\"\n",
            "visibility_timeout",
            "not a duration",
        ),
        ("queues = { a = 1 }\n", "queues", "invalid type"),
        ("redis_url = 6379\n", "redis_url", ""),
        (
            "tls-ca-cert-file = [1]\n",
            "tls_ca_cert_file",
            "invalid type",
        ),
    ] {
        let path = dir.file("worker.toml", text);
        match resolve_args(&["--config", &path]) {
            // A number is a fine URL to the file layer; Redis refuses it later.
            Ok(_) if problem.is_empty() => {}
            Ok(s) => panic!("{text:?} was accepted: {s:?}"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains(&path) && e.contains(key) && e.contains(problem),
                    "{text:?}: {e}"
                );
            }
        }
    }
    let path = dir.file("worker.toml", "concurrency = 1\nconcurrency = 2\n");
    let e = resolve_args(&["--config", &path])
        .expect_err("not TOML")
        .to_string();
    assert!(e.contains(&path) && e.contains("not valid TOML"), "{e}");
}

#[test]
fn a_memory_limit_below_the_floor_is_refused_with_the_flag_and_the_floor() {
    for limit in ["512", "1MiB", "63MiB"] {
        let e = resolve_args(&["--max-memory-per-child", limit])
            .expect_err("too low")
            .to_string();
        assert!(
            e.contains("--max-memory-per-child") && e.contains("64MiB"),
            "{limit}: {e}"
        );
    }
    let s = resolve_args(&["--max-memory-per-child", "64MiB"]).expect("the floor itself");
    assert_eq!(s.max_memory_per_child, Some(MIN_MEMORY_PER_CHILD));
    let s = resolve_args(&["--max-memory-per-child", "none"]).expect("no limit");
    assert_eq!(s.max_memory_per_child, None);
}

#[test]
fn the_command_timeout_must_exceed_the_poll_interval() {
    let e = resolve_args(&["--redis-command-timeout", "2s", "--poll-interval", "5s"])
        .expect_err("fetches would time out")
        .to_string();
    assert!(
        e.contains("--redis-command-timeout") && e.contains("--poll-interval"),
        "{e}"
    );
    let s = resolve_args(&[
        "--redis-command-timeout",
        "10s",
        "--redis-connect-timeout",
        "2s",
    ])
    .expect("valid");
    let config = s.redis_config().expect("config");
    assert_eq!(config.response_timeout, Duration::from_secs(10));
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
}

#[test]
fn every_flag_is_a_file_key_and_shows_its_default() {
    let help = command().render_long_help().to_string();
    for key in ConnectionFile::KEYS.iter().chain(WorkerFile::KEYS) {
        let flag = format!("--{}", key.replace('_', "-"));
        let at = help
            .find(&format!("{flag} "))
            .or_else(|| help.find(&format!("{flag}[")));
        assert!(at.is_some(), "{flag} missing from --help");
    }
    let short = command().render_help().to_string();
    for line in short.lines().filter(|l| l.trim_start().starts_with("--")) {
        let flag = line.split_whitespace().next().unwrap_or_default();
        if [
            "--help",
            "--version",
            "--config",
            "--probe-only",
            "--print-config",
        ]
        .contains(&flag)
            || flag.ends_with("[=<BOOL>]")
        {
            continue;
        }
        assert!(
            line.contains("[default: "),
            "{flag} shows no default: {line}"
        );
    }
}

/// The defaults `--help` shows are the ones applied: each written in a
/// flag's help once, beside the code that applies it, so this keeps them
/// together.
#[test]
fn the_defaults_help_shows_are_the_defaults_applied() {
    let defaults = resolve_args(&[]).expect("the defaults are valid");
    let help = command().render_help().to_string();
    let mut checked = 0;
    for line in help.lines().map(str::trim_start) {
        let Some(flag) = line
            .split_whitespace()
            .next()
            .filter(|f| f.starts_with("--"))
        else {
            continue;
        };
        let Some(default) = line
            .split("[default: ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
        else {
            continue;
        };
        // Computed ones ("the number of CPUs") and ones that differ per
        // binary are described, not spelled.
        if default.contains(' ') {
            continue;
        }
        // A variable set for the tests (SPOOL_REDIS_URL) beats the default.
        let env = line
            .split("[env: ")
            .nth(1)
            .and_then(|rest| rest.split(['=', ']']).next());
        if env.is_some_and(|name| std::env::var_os(name).is_some()) {
            continue;
        }
        let given = resolve_args(&[flag, default])
            .unwrap_or_else(|e| panic!("{flag} {default} is refused: {e}"));
        assert_eq!(given, defaults, "{flag}'s help says {default}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} defaults checked");
}

#[test]
fn payload_limits_reach_the_broker_and_the_runtime() {
    let s = resolve_args(&[]).expect("defaults");
    assert_eq!(
        s.redis_config().expect("config").max_envelope_bytes,
        spool_broker::DEFAULT_MAX_ENVELOPE_BYTES
    );
    assert_eq!(
        s.worker_config(vec![QueueName::DEFAULT], "w".into())
            .max_result_bytes,
        spool_worker::DEFAULT_MAX_RESULT_BYTES
    );
    let s = resolve_args(&["--max-envelope-size", "2MiB", "--max-result-size", "64KiB"])
        .expect("valid");
    assert_eq!(
        s.redis_config().expect("config").max_envelope_bytes,
        2 << 20
    );
    assert_eq!(
        s.worker_config(vec![QueueName::DEFAULT], "w".into())
            .max_result_bytes,
        64 << 10
    );
    for flag in ["--max-envelope-size", "--max-result-size"] {
        let e = resolve_args(&[flag, "100"])
            .expect_err("below the floor")
            .to_string();
        assert!(e.contains(flag) && e.contains("1KiB"), "{e}");
    }
}
