//! The Dockerfile: real binaries, built into a pinned, non-root image.

use std::collections::{BTreeMap, BTreeSet};

use crate::binaries::{has_env, help, workspace_bins};
use crate::containers::{containers, entrypoint};
use crate::files::{k8s_objects, read};

/// The Dockerfile's instructions, continuation lines joined, comments and
/// parser directives dropped: (INSTRUCTION, rest).
pub(crate) fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("ops/docker/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(trimmed.trim_end_matches('\\'));
        current.push(' ');
        if !trimmed.ends_with('\\') {
            let (op, rest) = current.trim().split_once(' ').unwrap();
            out.push((op.to_uppercase(), rest.trim().to_owned()));
            current.clear();
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The build stages, with `ARG` defaults declared before the first `FROM`
/// substituted into their base images.
pub(crate) fn dockerfile_stages() -> Vec<Stage> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (op, rest) in dockerfile_instructions() {
        match op.as_str() {
            "ARG" if stages.is_empty() => {
                let (name, value) = rest.split_once('=').expect("ARG with a default");
                args.insert(name.to_owned(), value.to_owned());
            }
            "FROM" => {
                let mut words = rest.split_whitespace();
                let mut base = words.next().unwrap().to_owned();
                for (name, value) in &args {
                    base = base.replace(&format!("${{{name}}}"), value);
                }
                let name = match (words.next(), words.next()) {
                    (Some(as_), Some(name)) if as_.eq_ignore_ascii_case("as") => {
                        Some(name.to_owned())
                    }
                    _ => None,
                };
                stages.push(Stage {
                    base,
                    name,
                    instructions: Vec::new(),
                });
            }
            _ => stages.last_mut().unwrap().instructions.push((op, rest)),
        }
    }
    stages
}

#[test]
fn the_dockerfile_builds_real_binaries_into_a_pinned_non_root_image() {
    let stages = dockerfile_stages();
    let names: BTreeSet<String> = stages.iter().filter_map(|s| s.name.clone()).collect();
    for stage in &stages {
        assert!(!stage.base.contains('$'), "{}: unresolved ARG", stage.base);
        if names.contains(&stage.base) {
            continue;
        }
        let tag = stage
            .base
            .split_once(':')
            .map(|(_, t)| t)
            .unwrap_or_default();
        assert!(
            !tag.is_empty() && !tag.starts_with("latest") && !tag.starts_with("slim"),
            "base image {} is not pinned by a tag",
            stage.base
        );
    }
    let bins = workspace_bins();
    let build = stages
        .iter()
        .find(|s| s.base.starts_with("rust:"))
        .expect("a Rust build stage");
    // The binaries link the build image's glibc: the runtime must be the
    // same Debian release.
    let release = build.base.rsplit('-').next().unwrap();
    for stage in stages.iter().filter(|s| !names.contains(&s.base)) {
        assert!(
            stage.base.contains(release),
            "{} is not Debian {release}",
            stage.base
        );
    }
    let cargo = build
        .instructions
        .iter()
        .find(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        .unwrap()
        .1
        .clone();
    assert!(
        cargo.contains("--locked") && cargo.contains("--release"),
        "{cargo}"
    );
    let built: BTreeSet<String> = cargo
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_owned())
        .collect();
    for bin in ["spool-worker", "spool-autoscaler", "spool-beat", "spoolctl"] {
        assert!(built.contains(bin), "{bin} is not built: {cargo}");
    }
    for bin in &built {
        assert!(
            bins.contains(bin),
            "--bin {bin} is no [[bin]] of the workspace"
        );
    }
    let runtime = stages.last().unwrap();
    assert!(
        runtime.base.starts_with("debian:") && runtime.base.ends_with("-slim"),
        "{}",
        runtime.base
    );
    let copied: BTreeSet<String> = runtime
        .instructions
        .iter()
        .filter(|(op, rest)| {
            op == "COPY" && rest.starts_with(&format!("--from={}", build.name.as_deref().unwrap()))
        })
        .flat_map(|(_, rest)| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            words[1..words.len() - 1]
                .iter()
                .map(|p| p.rsplit('/').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(copied, built, "the image ships what is built");
    // FFmpeg with libvmaf from the pinned imageio-ffmpeg wheel; ffprobe
    // from Debian.
    let all: String = dockerfile_instructions()
        .iter()
        .map(|(op, rest)| format!("{op} {rest}\n"))
        .collect();
    assert!(
        all.contains("\"imageio-ffmpeg==${IMAGEIO_FFMPEG_VERSION}\""),
        "{all}"
    );
    assert!(
        all.contains("ARG IMAGEIO_FFMPEG_VERSION=0."),
        "pin imageio-ffmpeg"
    );
    assert!(
        all.contains("grep -q libvmaf"),
        "the build checks FFmpeg has libvmaf"
    );
    assert!(runtime.instructions.iter().any(
        |(op, rest)| op == "RUN" && rest.contains("install -y --no-install-recommends ffmpeg")
    ));
    // Non-root, numerically, as the pods' runAsUser.
    let user = runtime
        .instructions
        .iter()
        .rfind(|(op, _)| op == "USER")
        .unwrap()
        .1
        .clone();
    let uid = user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|u| u != 0), "USER {user}");
    for c in containers(&k8s_objects()) {
        assert_eq!(
            c.pod["securityContext"]["runAsUser"].as_u64(),
            uid.parse().ok(),
            "{}",
            c.deployment
        );
    }
    assert_eq!(entrypoint(), ["spool-worker"]);
    // The environment it sets is the worker's.
    let worker_help = help("spool-worker", &[]);
    for (op, rest) in &runtime.instructions {
        if op == "ENV" {
            for name in rest
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(n, _)| n)
            {
                assert!(
                    has_env(&worker_help, name),
                    "ENV {name}: spool-worker reads no such variable"
                );
            }
        }
    }
}
