//! The deployment files under `ops/` checked against the code they deploy:
//! every manifest, rule file and dashboard parses; every flag, environment
//! variable and subcommand they (and `docs/operations.md`) use is one the
//! binaries accept, shown by their own `--help`; the configurations they
//! carry load in the real binaries (`--print-config`, `--check`); every
//! metric the alerts, the dashboard and KEDA query is one the daemons
//! export; and the stream names and consumer group KEDA watches are the
//! ones a real worker uses, with the lag it reads.
//!
//! Needs the workspace binaries (`spool-worker`, `spool-autoscaler`,
//! `spool-beat`, `spoolctl`): a workspace test run builds them; run alone,
//! `cargo build -p spool-worker-cli --bin spool-worker -p spool-scheduler -p spool-autoscaler --bins`
//! first. Runs `promtool` (`PROMTOOL` names one outside `PATH`; without
//! one the check fails, unless `SPOOL_SKIP_PROMTOOL=1`), and
//! `systemd-analyze verify` where installed.
#![allow(clippy::unwrap_used)]

mod alerts;
mod binaries;
mod cargo_commands;
mod containers;
mod dashboard;
mod dockerfile;
mod docs;
mod files;
mod keda;
mod metrics;
mod systemd;
