//! Shared helpers: the workspace binaries, their `--help`, and checking command lines against it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use spool_tests::bins;

use crate::files::read;

/// The workspace's `[[bin]]` names, from the crates' manifests.
pub(crate) fn workspace_bins() -> BTreeSet<String> {
    let root: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    root["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|member| {
            let manifest: toml::Value =
                toml::from_str(&read(&format!("{}/Cargo.toml", member.as_str().unwrap()))).unwrap();
            manifest
                .get("bin")
                .and_then(toml::Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|bin| bin["name"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The path of one of the daemons this suite knows.
pub(crate) fn binary(name: &str) -> PathBuf {
    match name {
        "spool-worker" => bins::spool_worker(),
        "spool-autoscaler" => bins::spool_autoscaler(),
        "spool-beat" | "spoolctl" => bins::workspace_bin(name, "spool-scheduler"),
        other => panic!("{other} is not a Spool daemon"),
    }
}

/// A command without the test's own `SPOOL_*` environment.
pub(crate) fn clean_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars() {
        if name.starts_with("SPOOL_") {
            command.env_remove(name);
        }
    }
    command
}

/// `BIN [SUBCOMMAND...] --help`, cached.
pub(crate) fn help(bin: &str, path: &[&str]) -> String {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let key = format!("{bin} {}", path.join(" "));
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(text) = cache.lock().unwrap().get(&key) {
        return text.clone();
    }
    let output = clean_command(&binary(bin))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{key} --help failed");
    let text = String::from_utf8(output.stdout).unwrap();
    cache.lock().unwrap().insert(key, text.clone());
    text
}

/// Whether `help` documents the long flag `flag` (`--name`), not merely
/// a longer one it starts.
fn has_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// Whether `help` documents the environment variable `name`.
pub(crate) fn has_env(help: &str, name: &str) -> bool {
    help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"))
}

/// The subcommands a help text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Checks one command line of a Spool binary: its subcommands exist, and
/// so does each `--flag` at the level it is given. Returns the problems.
pub(crate) fn check_command_line(words: &[&str], context: &str) -> Vec<String> {
    let Some((bin, rest)) = words.split_first() else {
        return Vec::new();
    };
    let mut path: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    for word in rest {
        let level = help(bin, &path);
        if let Some(flag) = word.strip_prefix("--") {
            let flag = format!("--{}", flag.split('=').next().unwrap());
            if !has_flag(&level, &flag) {
                problems.push(format!(
                    "{context}: `{bin} {}` has no {flag}",
                    path.join(" ")
                ));
            }
        } else if path.len() < 3 && subcommands(&level).iter().any(|s| s == word) {
            path.push(word);
        }
    }
    problems
}
