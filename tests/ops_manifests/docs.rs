//! The operations guides: their commands, flags and `ops/` paths are real.

use std::collections::BTreeSet;

use crate::binaries::check_command_line;
use crate::files::{read, repo};

/// GitHub's anchors for the headings of a Markdown file.
pub(crate) fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && line.starts_with('#')
        })
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The anchor a runbook link points to in docs/operations.md, checked.
pub(crate) fn check_runbook_link(url: &str, anchors: &BTreeSet<String>, context: &str) {
    let anchor = url
        .split_once("docs/operations.md#")
        .unwrap_or_else(|| panic!("{context}: {url} is not a docs/operations.md link"))
        .1;
    assert!(
        anchors.contains(anchor),
        "{context}: docs/operations.md has no section #{anchor}"
    );
}

/// The command lines of the shell code blocks and inline code of a
/// Markdown file that run one of Spool's binaries, with continuation lines
/// joined and comments dropped.
fn spool_commands(markdown: &str) -> Vec<String> {
    const BINS: [&str; 4] = ["spoolctl", "spool-worker", "spool-autoscaler", "spool-beat"];
    let starts_spool = |line: &str| {
        BINS.iter()
            .any(|b| line.strip_prefix(b).is_some_and(|r| r.starts_with(' ')))
    };
    let mut out = Vec::new();
    let mut in_block = false;
    let mut in_sh = false;
    let mut pending = String::new();
    let mut prose = String::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            in_sh = in_block && line.trim_start_matches('`').trim() == "sh";
            continue;
        }
        if in_sh {
            let code = line.split(" #").next().unwrap().trim();
            pending.push_str(code.trim_end_matches('\\'));
            pending.push(' ');
            if !code.ends_with('\\') {
                if starts_spool(pending.trim()) {
                    out.push(pending.trim().to_owned());
                }
                pending.clear();
            }
        } else if !in_block {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    // Inline code, which may wrap across lines: `spoolctl resume gpu`.
    for (i, span) in prose.split('`').enumerate() {
        if i % 2 == 1 && starts_spool(span) {
            out.push(span.to_owned());
        }
    }
    out
}

#[test]
fn the_operations_guide_uses_real_commands_flags_and_files() {
    let mut problems = Vec::new();
    for doc in ["docs/operations.md", "ops/autoscaler.md"] {
        let markdown = read(doc);
        let commands = spool_commands(&markdown);
        if doc == "docs/operations.md" {
            assert!(
                commands
                    .iter()
                    .any(|c| c.starts_with("spoolctl dead retry")),
                "the runbook lost its commands: {commands:?}"
            );
        }
        for command in &commands {
            let words: Vec<&str> = command.split_whitespace().collect();
            problems.extend(check_command_line(&words, doc));
        }
        // Every ops/ path it names exists.
        for (at, _) in markdown.match_indices("ops/") {
            if markdown[..at].ends_with(|c: char| c.is_alphanumeric() || c == '.') {
                continue;
            }
            let path: String = markdown[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || "/._-@".contains(*c))
                .collect();
            let path = path.trim_end_matches(['.', '/']);
            if !repo().join(path).exists() {
                problems.push(format!("{doc}: names {path}, which does not exist"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The checker itself catches a wrong flag and a made-up subcommand.
    assert!(
        !check_command_line(&["spoolctl", "dead", "list", "gpu", "--limt", "3"], "x").is_empty()
    );
    assert!(!check_command_line(&["spool-worker", "--queue", "gpu"], "x").is_empty());
    assert!(
        check_command_line(&["spoolctl", "dead", "list", "gpu", "--limit", "3"], "x").is_empty()
    );
}
