//! Bad settings given to the real binaries: a TOML file with an unknown
//! key or a value of the wrong type, a memory limit that would recycle a
//! child at once, and a Redis that accepts connections but never answers
//! (a SIGSTOPped server). Each is refused quickly, naming what to fix.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use spool_tests::bins;

/// A directory of the test's own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spool-bad-settings-{name}-{:08x}",
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `spool-worker --config FILE`: an unknown key and a wrong type each stop
/// it with status 2, naming the file and the key.
#[test]
fn worker_toml_with_an_unknown_key_or_a_wrong_type_names_file_and_key() {
    let dir = Dir::new("worker");
    for (text, key) in [
        (
            "queues = \"default\"\nmax_memory_per_chlid = \"2GiB\"\n",
            "max_memory_per_chlid",
        ),
        ("concurrency = true\n", "concurrency"),
        ("visibility-timeout = 30\n", "visibility_timeout"),
        ("queues = { default = 1 }\n", "queues"),
    ] {
        let config = dir.file("worker.toml", text);
        let out = Command::new(bins::spool_worker())
            .args(["--print-config", "--config", &config])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(
            err.contains(&config) && err.contains(key),
            "{text:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{text:?}");
    }
}

/// `spool-beat --check`: the same for the beat's file.
#[test]
fn beat_toml_with_an_unknown_key_or_a_wrong_type_names_file_and_key() {
    let dir = Dir::new("beat");
    let entry = "[[entry]]\nname = \"e\"\ntask = \"t\"\n";
    for (text, key) in [
        ("lock_tll = \"10s\"\n".to_owned(), "lock_tll"),
        ("lock_ttl = 10\n".to_owned(), "lock_ttl"),
        (
            format!("{entry}every = \"1s\"\nquue = \"default\"\n"),
            "quue",
        ),
        (format!("{entry}every = 5\n"), "every"),
    ] {
        let config = dir.file("beat.toml", &text);
        let out = Command::new(bins::workspace_bin("spool-beat", "spool-scheduler"))
            .args(["--check", "--config", &config])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text:?}: {err}");
        assert!(
            err.contains(&config) && err.contains(key),
            "{text:?}: {err}"
        );
    }
}

/// `--max-memory-per-child 512` (bytes) would recycle a child every half
/// second: refused, naming the flag and the floor; sizes take units.
#[test]
fn a_memory_limit_below_the_floor_is_refused() {
    for limit in ["512", "16MiB"] {
        let out = Command::new(bins::spool_worker())
            .args(["--print-config", "--max-memory-per-child", limit])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{limit}: {err}");
        assert!(
            err.contains("--max-memory-per-child") && err.contains("64MiB"),
            "{err}"
        );
    }
    let out = Command::new(bins::spool_worker())
        .args(["--print-config", "--max-memory-per-child", "1.5GiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let settings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(settings["max_memory_per_child"], 3 << 29);
}

/// A Redis that accepts connections and never answers, as a SIGSTOPped
/// one does (the kernel completes the handshake): `spoolctl` gives up
/// after its connect timeout, not 47 s later, and says which timeout.
#[test]
fn spoolctl_against_a_silent_redis_fails_within_its_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    for (flags, timeout) in [
        (&["--redis-connect-timeout", "1s"][..], "1s"),
        (&[][..], "5s"),
    ] {
        let started = Instant::now();
        let out = Command::new(bins::spoolctl())
            .args(["--redis-url", &url])
            .args(flags)
            .args(["queues", "--sample", "0s"])
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--redis-connect-timeout")
                && err.contains(&format!("{timeout} connect timeout")),
            "{err}"
        );
        let limit: Duration = humantime::parse_duration(timeout).unwrap() + Duration::from_secs(3);
        assert!(took < limit, "took {took:?} for a {timeout} timeout");
    }
}
