//! The beat's configuration: entries from a TOML file.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use spool_broker::{Envelope, Priority, QueueName, Timestamp};

use super::catch_up::CatchUp;
use super::schedule::Schedule;
use crate::ctl::CallRequest;
use crate::error::{Error, Result};

/// The header naming the entry a tick's task came from.
pub const HEADER_ENTRY: &str = "beat-entry";

/// The header holding a tick's scheduled time, in ms since the Unix epoch
/// (the tick's identity, with the entry's name).
pub const HEADER_SCHEDULED_AT: &str = "beat-scheduled-at";

/// The shortest leader lease accepted.
pub const MIN_LOCK_TTL: Duration = Duration::from_millis(100);

/// What `spool-beat` runs: lease and grace, and the entries.
///
/// # Examples
///
/// ```
/// use spool_scheduler::beat::{BeatConfig, CatchUp};
///
/// let config = BeatConfig::from_toml(r#"
///     lock_ttl = "10s"
///
///     [[entry]]
///     name = "sweep"
///     task = "video.sweep"
///     every = "5m"
///     args = { older_than = "1h" }
///
///     [[entry]]
///     name = "nightly-report"
///     task = "reports.nightly"
///     cron = "30 2 * * *"
///     queue = "analysis"
///     expires = "1h"
///     catch_up = "skip"
/// "#)?;
/// assert_eq!(config.entries.len(), 2);
/// assert_eq!(config.entries[1].catch_up, CatchUp::Skip);
/// # Ok::<(), spool_scheduler::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BeatConfig {
    /// How long the leader's lock lasts unless renewed (it is renewed every
    /// third of it): the longest a dead leader delays the next tick. At
    /// least [`MIN_LOCK_TTL`]. Default: 10 s.
    pub lock_ttl: Duration,
    /// How late a tick may be enqueued and still count as on time; later
    /// ticks are missed and follow the entry's [`CatchUp`] policy.
    /// Default: 5 s.
    pub grace: Duration,
    /// The periodic entries, with unique names. Default: none.
    pub entries: Vec<Entry>,
}

impl Default for BeatConfig {
    fn default() -> Self {
        Self {
            lock_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            entries: Vec::new(),
        }
    }
}

/// One periodic entry: a task enqueued on a schedule.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The entry's name, unique in the configuration and stable: it keys
    /// the entry's state in Redis (with its queue), so renaming an entry,
    /// or moving it to another queue, starts it afresh. Printable, without
    /// whitespace or braces.
    pub name: String,
    /// When it fires.
    pub schedule: Schedule,
    /// What each tick enqueues: the task's name, arguments, queue,
    /// priority, most attempts and tenant (its `count` and `countdown` are
    /// ignored).
    pub call: CallRequest,
    /// How long after its scheduled time a tick's task may still start;
    /// later it is skipped as expired. Default: never expires.
    pub expires: Option<Duration>,
    /// What to do with missed ticks. Default: [`CatchUp::Latest`].
    pub catch_up: CatchUp,
    /// How old a missed tick may be and still be caught up. Default: 1 day.
    pub catch_up_window: Duration,
}

impl Entry {
    /// The entry `name` enqueuing the task `task` with empty arguments on
    /// `schedule`, and the defaults documented on each field.
    #[must_use]
    pub fn new(name: impl Into<String>, task: impl Into<String>, schedule: Schedule) -> Self {
        Self {
            name: name.into(),
            schedule,
            call: CallRequest::new(task),
            expires: None,
            catch_up: CatchUp::default(),
            catch_up_window: Duration::from_secs(86_400),
        }
    }

    /// The envelope of the tick scheduled at `scheduled`: a fresh task id,
    /// the entry's task and options, expiry counted from `scheduled`, and
    /// the headers [`HEADER_ENTRY`] and [`HEADER_SCHEDULED_AT`].
    ///
    /// # Errors
    ///
    /// As [`CallRequest::validate`], which the configuration already ran.
    pub fn envelope(&self, scheduled: Timestamp) -> Result<Envelope> {
        let mut call = self.call.clone();
        call.count = 1;
        call.countdown = None;
        let mut envelope = call
            .envelopes()?
            .pop()
            .ok_or_else(|| Error::InvalidInput("a tick produced no envelope".to_owned()))?;
        envelope.expires_at = self.expires.map(|d| scheduled.saturating_add(d));
        envelope
            .headers
            .insert(HEADER_ENTRY.to_owned(), self.name.clone());
        envelope.headers.insert(
            HEADER_SCHEDULED_AT.to_owned(),
            scheduled.as_millis().to_string(),
        );
        Ok(envelope)
    }

    fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '{' && c != '}');
        if !name_ok {
            return Err(Error::InvalidInput(format!(
                "invalid entry name {:?}: it must be non-empty, printable, without whitespace or \
                 braces",
                self.name
            )));
        }
        self.call
            .validate()
            .map_err(|e| Error::InvalidInput(format!("entry {:?}: {e}", self.name)))?;
        if self.expires.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidInput(format!(
                "entry {:?}: expires must be positive",
                self.name
            )));
        }
        if self.schedule.next_after(Timestamp::now()).is_none() {
            return Err(Error::InvalidInput(format!(
                "entry {:?}: {} never fires",
                self.name, self.schedule
            )));
        }
        Ok(())
    }
}

impl BeatConfig {
    /// Parses and checks a configuration file's text.
    ///
    /// The file has optional top-level `lock_ttl` and `grace`, then one
    /// `[[entry]]` table per entry with `name`, `task`, and exactly one of
    /// `cron` or `every`; optionally `args` (a table, or a JSON object as a
    /// string), `queue`, `priority` (high, normal, low), `max_attempts`,
    /// `tenant`, `secret` (the fields of `args` that hold secrets, redacted
    /// in the job store and every listing), `expires`, `catch_up` (latest,
    /// all, skip) and `catch_up_window`. Durations are humantime (`90s`, `1h 30m`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the entry and the problem: bad TOML,
    /// an unknown key, a bad duration, cron expression, queue, priority or
    /// task name, arguments that are not a JSON object, or a repeated name.
    pub fn from_toml(text: &str) -> Result<Self> {
        // Through a table, so a bad value's error names its key on one
        // line (`in `entry.0.every``) rather than quoting the file.
        let raw: RawConfig = toml::from_str::<toml::Table>(text)
            .and_then(|table| toml::Value::Table(table).try_into())
            .map_err(|e| {
                let message: Vec<&str> = e
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let shown = e.to_string();
                let key = shown.lines().find_map(|l| l.trim().strip_prefix("in "));
                let at = match (key, e.span()) {
                    (Some(key), _) => format!(" in {key}"),
                    (None, Some(span)) => {
                        let line = text[..span.start.min(text.len())].lines().count().max(1);
                        format!(" at line {line}")
                    }
                    (None, None) => String::new(),
                };
                Error::InvalidInput(format!(
                    "invalid beat configuration: {}{at}",
                    message.join(" ")
                ))
            })?;
        let defaults = Self::default();
        let config = Self {
            lock_ttl: optional_duration("lock_ttl", raw.lock_ttl.as_deref())?
                .unwrap_or(defaults.lock_ttl),
            grace: optional_duration("grace", raw.grace.as_deref())?.unwrap_or(defaults.grace),
            entries: raw
                .entries
                .into_iter()
                .map(RawEntry::into_entry)
                .collect::<Result<_>>()?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks the configuration file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the file, and then as
    /// [`BeatConfig::from_toml`]: the key and the problem.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
            .map_err(|e| Error::InvalidInput(format!("in {}: {e}", path.display())))
    }

    /// Checks the lease and every entry, and that names are unique.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        if self.lock_ttl < MIN_LOCK_TTL {
            return Err(Error::InvalidInput(format!(
                "lock_ttl must be at least {}, not {}",
                humantime::format_duration(MIN_LOCK_TTL),
                humantime::format_duration(self.lock_ttl)
            )));
        }
        let mut names = HashSet::new();
        for entry in &self.entries {
            entry.validate()?;
            if !names.insert(entry.name.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "entry name {:?} appears twice: names must be unique",
                    entry.name
                )));
            }
        }
        Ok(())
    }

    /// The distinct queues of the entries.
    #[must_use]
    pub fn queues(&self) -> Vec<QueueName> {
        let mut queues: Vec<QueueName> =
            self.entries.iter().map(|e| e.call.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    lock_ttl: Option<String>,
    grace: Option<String>,
    #[serde(default, rename = "entry")]
    entries: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    task: String,
    cron: Option<String>,
    every: Option<String>,
    args: Option<serde_json::Value>,
    queue: Option<String>,
    priority: Option<String>,
    max_attempts: Option<u32>,
    tenant: Option<String>,
    #[serde(default)]
    secret: Vec<String>,
    expires: Option<String>,
    catch_up: Option<String>,
    catch_up_window: Option<String>,
}

impl RawEntry {
    fn into_entry(self) -> Result<Entry> {
        let name = self.name;
        let context = |e: Error| Error::InvalidInput(format!("entry {name:?}: {e}"));
        let schedule = match (self.cron, self.every) {
            (Some(cron), None) => Schedule::cron(&cron).map_err(context)?,
            (None, Some(every)) => {
                let every = duration("every", &every).map_err(context)?;
                Schedule::every(every).map_err(context)?
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "entry {name:?}: give exactly one of cron or every"
                )));
            }
        };
        let mut entry = Entry::new(name.clone(), self.task, schedule);
        entry.call.args = match self.args {
            None => "{}".to_owned(),
            // A string holds the JSON text itself.
            Some(serde_json::Value::String(json)) => json,
            Some(table) => table.to_string(),
        };
        if let Some(queue) = self.queue {
            entry.call.queue = QueueName::new(queue).map_err(|e| context(e.into()))?;
        }
        if let Some(priority) = self.priority {
            entry.call.priority = priority.parse::<Priority>().map_err(|_| {
                Error::InvalidInput(format!(
                    "entry {name:?}: invalid priority {priority:?}: expected high, normal or low"
                ))
            })?;
        }
        if let Some(max_attempts) = self.max_attempts {
            entry.call.max_attempts = max_attempts;
        }
        entry.call.tenant = self.tenant;
        entry.call.secret = self.secret;
        entry.expires = optional_duration("expires", self.expires.as_deref()).map_err(context)?;
        if let Some(policy) = self.catch_up {
            entry.catch_up = policy.parse().map_err(context)?;
        }
        if let Some(window) = optional_duration("catch_up_window", self.catch_up_window.as_deref())
            .map_err(context)?
        {
            entry.catch_up_window = window;
        }
        Ok(entry)
    }
}

fn duration(key: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text).map_err(|e| {
        Error::InvalidInput(format!(
            "invalid {key} {text:?}: {e} (expected a duration such as 90s or 1h 30m)"
        ))
    })
}

fn optional_duration(key: &str, text: Option<&str>) -> Result<Option<Duration>> {
    text.map(|t| duration(key, t)).transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spool_broker::decode_payload;

    use super::*;

    const FULL: &str = r#"
        lock_ttl = "3s"
        grace = "1s"

        [[entry]]
        name = "sweep"
        task = "video.sweep"
        every = "5m"
        args = { older_than = "1h", dry_run = false, tiers = [1, 2] }
        queue = "analysis"
        priority = "high"
        max_attempts = 5
        tenant = "acme"
        expires = "10m"
        catch_up = "all"
        catch_up_window = "2h"

        [[entry]]
        name = "nightly"
        task = "reports.nightly"
        cron = "0 30 2 * * *"
        args = '{"day": "yesterday"}'
    "#;

    #[test]
    fn a_full_file_parses_into_typed_entries() {
        let config = BeatConfig::from_toml(FULL).unwrap();
        assert_eq!(config.lock_ttl, Duration::from_secs(3));
        assert_eq!(config.grace, Duration::from_secs(1));
        let sweep = &config.entries[0];
        assert_eq!(sweep.name, "sweep");
        assert_eq!(
            sweep.schedule,
            Schedule::every(Duration::from_secs(300)).unwrap()
        );
        assert_eq!(sweep.call.name, "video.sweep");
        assert_eq!(sweep.call.queue, QueueName::ANALYSIS);
        assert_eq!(sweep.call.priority, Priority::High);
        assert_eq!(sweep.call.max_attempts, 5);
        assert_eq!(sweep.call.tenant.as_deref(), Some("acme"));
        assert_eq!(sweep.expires, Some(Duration::from_secs(600)));
        assert_eq!(sweep.catch_up, CatchUp::All);
        assert_eq!(sweep.catch_up_window, Duration::from_secs(7200));
        let nightly = &config.entries[1];
        assert_eq!(nightly.schedule, Schedule::cron("0 30 2 * * *").unwrap());
        assert_eq!(nightly.call.queue, QueueName::DEFAULT);
        assert_eq!(nightly.catch_up, CatchUp::Latest);
        assert_eq!(nightly.catch_up_window, Duration::from_secs(86_400));
        assert_eq!(nightly.expires, None);
        assert_eq!(config.queues(), [QueueName::ANALYSIS, QueueName::DEFAULT]);
    }

    #[test]
    fn a_tick_envelope_carries_the_entry_the_time_and_the_args() {
        let config = BeatConfig::from_toml(FULL).unwrap();
        let scheduled = Timestamp::from_millis(1_700_000_000_000);
        let e = config.entries[0].envelope(scheduled).unwrap();
        assert_eq!(e.name, "video.sweep");
        assert_eq!(
            (e.queue.clone(), e.priority),
            (QueueName::ANALYSIS, Priority::High)
        );
        assert_eq!((e.attempt, e.max_attempts), (1, 5));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.eta, None);
        assert_eq!(
            e.expires_at,
            Some(Timestamp::from_millis(1_700_000_600_000))
        );
        assert_eq!(e.headers[HEADER_ENTRY], "sweep");
        assert_eq!(e.headers[HEADER_SCHEDULED_AT], "1700000000000");
        let args: serde_json::Value = decode_payload(&e.payload).unwrap();
        assert_eq!(
            args,
            json!({"older_than": "1h", "dry_run": false, "tiers": [1, 2]})
        );
        let nightly = config.entries[1].envelope(scheduled).unwrap();
        let args: serde_json::Value = decode_payload(&nightly.payload).unwrap();
        assert_eq!(args, json!({"day": "yesterday"}));
        // Each tick is its own task.
        assert_ne!(config.entries[0].envelope(scheduled).unwrap().id, e.id);
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = BeatConfig::from_toml("").unwrap();
        assert_eq!(config, BeatConfig::default());
        assert_eq!(config.lock_ttl, Duration::from_secs(10));
        assert_eq!(config.grace, Duration::from_secs(5));
    }

    fn error(text: &str) -> String {
        BeatConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_and_the_reason() {
        let entry = |extra: &str| format!("[[entry]]\nname = \"e\"\ntask = \"t\"\n{extra}\n");
        assert!(error(&entry("")).contains("exactly one of cron or every"));
        assert!(error(&entry("every = \"1s\"\ncron = \"* * * * *\"")).contains("exactly one"));
        assert!(error(&entry("every = \"soon\"")).contains("invalid every \"soon\""));
        assert!(error(&entry("cron = \"* * *\"")).contains("invalid cron expression"));
        assert!(error(&entry("every = \"1s\"\nqueue = \"a b\"")).contains("invalid queue name"));
        assert!(
            error(&entry("every = \"1s\"\npriority = \"urgent\"")).contains("invalid priority")
        );
        assert!(error(&entry("every = \"1s\"\nargs = \"[1]\"")).contains("JSON object"));
        assert!(error(&entry("every = \"1s\"\nargs = \"{bad\"")).contains("not valid JSON"));
        assert!(error(&entry("every = \"1s\"\nmax_attempts = 0")).contains("--max-attempts"));
        assert!(error(&entry("every = \"1s\"\ncatch_up = \"some\"")).contains("invalid catch_up"));
        assert!(error(&entry("every = \"1s\"\nexpires = \"0s\"")).contains("expires must be"));
        assert!(error(&entry("every = \"1s\"\nschedule = \"x\"")).contains("unknown field"));
        assert!(error(&entry("cron = \"0 0 30 2 *\"")).contains("never fires"));
        let twice = format!("{}{}", entry("every = \"1s\""), entry("every = \"2s\""));
        assert!(error(&twice).contains("appears twice"));
        assert!(error("lock_ttl = \"10ms\"").contains("lock_ttl must be at least"));
        assert!(
            error("[[entry]]\nname = \"a b\"\ntask = \"t\"\nevery = \"1s\"")
                .contains("invalid entry name")
        );
        assert!(
            error("[[entry]]\nname = \"a\"\ntask = \"t t\"\nevery = \"1s\"")
                .contains("invalid task name")
        );
        assert!(error("lock_ttl = 3").contains("invalid beat configuration"));
        let e = error("lock_ttl = 3");
        assert!(e.contains("lock_ttl") && !e.contains('\n'), "{e}");
        let e = error("[[entry]]\nname = \"e\"\ntask = \"t\"\nevery = 5\n");
        assert!(e.contains("every") && e.contains("invalid type"), "{e}");
        let e = error("[[entry]]\nname = \"e\"\ntask = \"t\"\nevery = \"1s\"\nschedule = 1\n");
        assert!(e.contains("unknown field `schedule`"), "{e}");
        let e = error("lock_ttl = \"1s\"\nlock_ttl = \"2s\"\n");
        assert!(e.contains("duplicate key") && e.contains("line"), "{e}");
    }
}
