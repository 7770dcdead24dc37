//! The systemd units: real commands, warm stops, hardening; `systemd-analyze verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;
use spool_tests::bins;

use crate::binaries::{binary, check_command_line, clean_command, has_env, help, workspace_bins};
use crate::containers::duration;
use crate::files::{files_under, read, relative, repo};

/// A unit file's settings: (section, key) to values, in order.
type UnitSettings = BTreeMap<(String, String), Vec<String>>;

fn unit(text: &str) -> UnitSettings {
    let mut out = UnitSettings::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        out.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

fn setting<'a>(unit: &'a UnitSettings, key: &str) -> Option<&'a str> {
    unit.get(&("Service".to_owned(), key.to_owned()))
        .and_then(|v| v.last())
        .map(String::as_str)
}

/// `KEY=value` lines of an environment file.
fn env_file(relative_path: &str) -> BTreeMap<String, String> {
    read(relative_path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Each unit with, for the template, each instance: (unit name, instance,
/// settings with its drop-ins applied).
fn systemd_units() -> Vec<(String, Option<String>, UnitSettings)> {
    let mut out = Vec::new();
    for path in files_under("ops/systemd") {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let settings = unit(&std::fs::read_to_string(&path).unwrap());
        if name.ends_with("@.service") {
            // An instance per pool environment file: the ones no other unit reads.
            let claimed: BTreeSet<String> = files_under("ops/systemd")
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "service") && p != &&path)
                .filter_map(|p| {
                    let u = unit(&std::fs::read_to_string(p).unwrap());
                    setting(&u, "EnvironmentFile").map(|f| {
                        f.trim_start_matches('-')
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_owned()
                    })
                })
                .collect();
            for env in files_under("ops/systemd") {
                let file = env.file_name().unwrap().to_str().unwrap().to_owned();
                if !file.ends_with(".env") || claimed.contains(&file) {
                    continue;
                }
                let instance = file.trim_end_matches(".env").to_owned();
                let mut settings = settings.clone();
                let dropins = repo().join(format!(
                    "ops/systemd/{}@{instance}.service.d",
                    name.trim_end_matches("@.service")
                ));
                if dropins.is_dir() {
                    for dropin in files_under(&relative(&dropins)) {
                        for (key, values) in unit(&std::fs::read_to_string(dropin).unwrap()) {
                            settings.entry(key).or_default().extend(values);
                        }
                    }
                }
                out.push((name.clone(), Some(instance), settings));
            }
        } else {
            out.push((name, None, settings));
        }
    }
    out
}

#[test]
fn systemd_units_run_real_commands_and_stop_warmly() {
    let units = systemd_units();
    let names: BTreeSet<&str> = units.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "spool-autoscaler.service",
            "spool-beat.service",
            "spool-worker@.service"
        ])
    );
    let bins = workspace_bins();
    let mut problems = Vec::new();
    let mut worker_instances = 0;
    for (name, instance, settings) in &units {
        let context = match instance {
            Some(i) => format!("{name} as {i}"),
            None => name.clone(),
        };
        let expand = |s: &str| s.replace("%i", instance.as_deref().unwrap_or("%i"));
        let exec = expand(setting(settings, "ExecStart").unwrap());
        let words: Vec<&str> = exec.split_whitespace().collect();
        let bin = Path::new(words[0])
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            bins.contains(&bin),
            "{context}: {bin} is no workspace binary"
        );
        let mut line = vec![bin.as_str()];
        line.extend(&words[1..]);
        problems.extend(check_command_line(&line, &context));
        for pre in settings
            .get(&("Service".to_owned(), "ExecStartPre".to_owned()))
            .into_iter()
            .flatten()
        {
            let pre_words: Vec<&str> = pre.split_whitespace().collect();
            let mut pre_line = vec![
                Path::new(pre_words[0])
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap(),
            ];
            pre_line.extend(&pre_words[1..]);
            problems.extend(check_command_line(&pre_line, &context));
        }
        // The environment: Environment= lines and the example file.
        // The local actuator's workers inherit the autoscaler's environment.
        let mut top = help(&bin, &[]);
        if bin == "spool-autoscaler" {
            top.push_str(&help("spool-worker", &[]));
        }
        let mut env: BTreeMap<String, String> = settings
            .get(&("Service".to_owned(), "Environment".to_owned()))
            .into_iter()
            .flatten()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let env_path = expand(setting(settings, "EnvironmentFile").unwrap());
        let example = format!("ops/systemd/{}", env_path.rsplit('/').next().unwrap());
        env.extend(env_file(&example));
        for key in env.keys() {
            if !has_env(&top, key) {
                problems.push(format!("{context}: {bin} reads no {key}"));
            }
        }
        // Secrets: the env file is root-only, the keys a credential.
        assert!(env_path.starts_with("/etc/spool/"), "{context}");
        let credential = setting(settings, "LoadCredential").unwrap_or_default();
        assert!(
            credential.starts_with("signing-keys:"),
            "{context}: {credential}"
        );
        assert_eq!(
            env.get("SPOOL_SIGNING_KEY_FILE").map(String::as_str),
            Some("%d/signing-keys"),
            "{context}"
        );
        // Warm stop.
        assert_eq!(
            setting(settings, "KillSignal"),
            Some("SIGTERM"),
            "{context}"
        );
        assert_eq!(
            setting(settings, "Restart"),
            Some("on-failure"),
            "{context}"
        );
        let stop = duration(setting(settings, "TimeoutStopSec").unwrap());
        if bin != "spool-beat" {
            // Only the daemon gets SIGTERM; FFmpeg and children do not.
            assert_eq!(setting(settings, "KillMode"), Some("mixed"), "{context}");
        }
        // Hardening.
        assert!(
            setting(settings, "User").is_some() || setting(settings, "DynamicUser") == Some("yes"),
            "{context}: runs as root"
        );
        assert_eq!(
            setting(settings, "NoNewPrivileges"),
            Some("yes"),
            "{context}"
        );
        assert_eq!(
            setting(settings, "ProtectSystem"),
            Some("strict"),
            "{context}"
        );
        if bin == "spool-worker" {
            worker_instances += 1;
            // Its settings load, and the stop budget covers its time limit.
            let mut command = clean_command(&binary("spool-worker"));
            command.args(&words[1..]).arg("--print-config");
            let key =
                std::env::temp_dir().join(format!("spool-ops-key-{:016x}", fastrand::u64(..)));
            std::fs::write(&key, format!("{}\n", "cd".repeat(32))).unwrap();
            for (k, v) in &env {
                command.env(
                    k,
                    if v.starts_with("%d/") {
                        key.display().to_string()
                    } else {
                        v.clone()
                    },
                );
            }
            let output = command.output().unwrap();
            let _ = std::fs::remove_file(&key);
            assert!(
                output.status.success(),
                "{context}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let config: Json = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(config["name"], instance.as_deref().unwrap(), "{context}");
            let limit = duration(config["time_limit"].as_str().expect("a time limit"));
            assert!(
                limit < stop,
                "{context}: TimeoutStopSec {stop:?} under the time limit {limit:?}"
            );
            assert!(
                config["prefetch"].as_u64() <= config["concurrency"].as_u64(),
                "{context}: {config}"
            );
            let output_root = config["output_root"].as_str().unwrap();
            let writable = settings
                .get(&("Service".to_owned(), "ReadWritePaths".to_owned()))
                .into_iter()
                .flatten()
                .flat_map(|v| v.split_whitespace())
                .any(|p| output_root.starts_with(&format!("{}/", p.trim_start_matches('-'))));
            assert!(
                writable,
                "{context}: ProtectSystem=strict leaves {output_root} read-only"
            );
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(worker_instances, 2, "the cpu and gpu pools");
    // Two pools on one host must not share a metrics port.
    let ports: BTreeSet<String> = ["ops/systemd/cpu.env", "ops/systemd/gpu.env"]
        .iter()
        .map(|f| env_file(f)["SPOOL_METRICS_ADDR"].clone())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
}

/// `systemd-analyze verify` over the units (the template once per pool,
/// binaries pointed at the built ones), where it works.
#[test]
fn systemd_analyze_accepts_the_units_where_available() {
    let works = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!("skipping: no systemd-analyze");
        return;
    }
    let dir = std::env::temp_dir().join(format!("spool-units-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let built = bins::spool_worker().parent().unwrap().display().to_string();
    let mut paths = Vec::new();
    for (name, instance, _) in systemd_units() {
        let text =
            read(&format!("ops/systemd/{name}")).replace("/usr/local/bin/", &format!("{built}/"));
        let file = match &instance {
            Some(i) => name.replace("@.service", &format!("@{i}.service")),
            None => name.clone(),
        };
        std::fs::write(dir.join(&file), text).unwrap();
        paths.push(dir.join(file));
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Outside a booted systemd it cannot connect to the manager; that is
    // not about the units.
    let relevant: Vec<&str> = report
        .lines()
        .filter(|l| !l.contains("Failed to connect") && !l.contains("System has not been booted"))
        .collect();
    assert!(relevant.is_empty(), "systemd-analyze verify:\n{report}");
}
