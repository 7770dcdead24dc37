//! Every `cargo build` / `cargo run` that the README, the docs, `ops/` and
//! the test suites tell someone to type names a workspace package that
//! holds the binaries it asks for. Binaries move between crates; a stale
//! `-p` only fails when someone runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::files::{files_under, read, relative, repo};

/// The workspace's packages and the binaries each builds, from
/// `cargo metadata`.
fn packages() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let bins = package["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), bins)
        })
        .collect()
}

/// The `cargo build|run|install ...` invocations in `text`, with shell
/// continuation lines joined, cut at the end of the command (a `&&`, `;`,
/// a backtick or the end of the line).
fn cargo_commands(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo ") {
            let command = &rest[at..];
            let end = command
                .find(['`', ';', '|'])
                .into_iter()
                .chain(command.find("&&"))
                .chain(command.find("--  "))
                .min()
                .unwrap_or(command.len());
            let command = &command[..end];
            let verb = command.split_whitespace().nth(1).unwrap_or_default();
            if ["build", "run"].contains(&verb) {
                out.push(command.to_owned());
            }
            rest = &rest[at + "cargo ".len()..];
        }
    }
    out
}

#[test]
fn build_and_run_commands_name_real_packages_and_binaries() {
    let packages = packages();
    let mut sources: Vec<String> = vec!["README.md".into()];
    for dir in ["docs", "ops", "tests", "examples"] {
        sources.extend(
            files_under(dir)
                .iter()
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.ends_with(".md")
                        || name.ends_with(".sh")
                        || name.ends_with(".rs")
                        || name.ends_with(".service")
                        || name.starts_with("Dockerfile")
                })
                .map(|p| relative(p)),
        );
    }
    let mut checked = 0;
    for source in &sources {
        for command in cargo_commands(&read(source)) {
            let words: Vec<&str> = command
                .split_whitespace()
                .map(|w| w.trim_matches(['"', '\'', ')', ',', '.']))
                .collect();
            let mut chosen = Vec::new();
            let mut bins = Vec::new();
            for pair in words.windows(2) {
                match pair[0] {
                    "-p" | "--package" => chosen.push(pair[1]),
                    "--bin" => bins.push(pair[1]),
                    _ => {}
                }
            }
            // `-p` with a shell variable or a placeholder is not ours to check.
            if chosen.iter().any(|p| !p.starts_with("spool")) {
                continue;
            }
            for package in &chosen {
                assert!(
                    packages.contains_key(*package),
                    "{source}: `{command}` names the package {package}, which the workspace \
                     does not have"
                );
            }
            for bin in &bins {
                let holders: Vec<&String> = packages
                    .iter()
                    .filter(|(_, b)| b.contains(*bin))
                    .map(|(name, _)| name)
                    .collect();
                assert!(
                    chosen.is_empty() || chosen.iter().any(|p| holders.contains(&&p.to_string())),
                    "{source}: `{command}` asks for the binary {bin}, which is in {holders:?}, \
                     not in {chosen:?}"
                );
                assert!(
                    !holders.is_empty(),
                    "{source}: `{command}` asks for the binary {bin}, which no package builds"
                );
            }
            checked += 1;
        }
    }
    // The README and the ops scripts alone have more than this: a parser
    // that finds nothing must not pass.
    assert!(checked >= 10, "only {checked} cargo commands found");
}

/// The README's table of binaries names every binary the workspace builds
/// (examples' and tests' helpers aside), with the crate that builds it.
#[test]
fn the_readme_lists_every_binary_with_its_crate() {
    let readme = read("README.md");
    let table: Vec<&str> = readme
        .split("## The binaries")
        .nth(1)
        .expect("a section \"The binaries\"")
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .collect();
    for (package, bins) in packages() {
        // spool-tests' helper processes are not for users.
        if package == "spool-tests" {
            continue;
        }
        for bin in bins {
            let row = table
                .iter()
                .find(|row| row.contains(&format!("`{bin}`")))
                .unwrap_or_else(|| panic!("README's table of binaries lacks {bin} ({package})"));
            assert!(
                row.contains(&format!("`{package}`")),
                "README says {bin} is not built by {package}: {row}"
            );
        }
    }
}

/// `Cargo.toml` says `MIT OR Apache-2.0`: both license texts are there.
#[test]
fn both_licenses_the_manifest_names_are_in_the_repository() {
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    assert!(read("LICENSE-MIT").starts_with("MIT License"));
    assert!(
        read("LICENSE-APACHE").contains("Apache License\n                           Version 2.0")
    );
}
