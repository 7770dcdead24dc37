//! `spoolctl call`: enqueues a task by name, like `celery call`.

use std::time::Duration;

use serde::Serialize;
use spool_broker::store::{JobStore, NewJob};
use spool_broker::{Broker, Envelope, Priority, QueueName, TaskId, encode_payload, trace_context};
use tracing::Instrument as _;

use super::Report;
use crate::error::{Error, Result};

/// How many runs a task enqueued by `call` gets unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The most copies of a task one `call` enqueues.
pub const MAX_CALL_COUNT: usize = 100_000;

/// What `spoolctl call` enqueues. Start from [`CallRequest::new`] and set
/// the fields to change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CallRequest {
    /// The task's wire name, such as `spool.ping`: non-empty, printable,
    /// without whitespace.
    pub name: String,
    /// The task's fields as a JSON object; it becomes the MessagePack
    /// payload the handler decodes. Default: `{}`.
    pub args: String,
    /// The queue. Default: `default`.
    pub queue: QueueName,
    /// The priority in that queue. Default: normal.
    pub priority: Priority,
    /// How long to wait before the task may run. Default: none.
    pub countdown: Option<Duration>,
    /// The most runs before the task is dead-lettered. Default:
    /// [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The tenant the task is accounted to. Default: none.
    pub tenant: Option<String>,
    /// How many copies to enqueue, each with its own id, from 1 to
    /// [`MAX_CALL_COUNT`]. Default: 1.
    pub count: usize,
    /// Fields of `args` that hold secrets (names, or dotted paths into
    /// nested objects): the job store and every listing show them as
    /// `"***"` ([`spool_broker::HEADER_SECRET_FIELDS`]). Default: none.
    pub secret: Vec<String>,
}

impl CallRequest {
    /// One task `name` with empty arguments and the defaults above.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            args: "{}".to_owned(),
            queue: QueueName::DEFAULT,
            priority: Priority::Normal,
            countdown: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            tenant: None,
            count: 1,
            secret: Vec::new(),
        }
    }

    /// Checks every field without enqueuing anything, so that bad input is
    /// reported before connecting to a broker.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgs`] when `args` is not JSON, [`Error::InvalidInput`]
    /// when it is not a JSON object or another field is out of range.
    pub fn validate(&self) -> Result<()> {
        self.payload().map(drop)
    }

    /// The envelopes to enqueue, `count` of them.
    ///
    /// # Errors
    ///
    /// As [`CallRequest::validate`].
    pub fn envelopes(&self) -> Result<Vec<Envelope>> {
        let payload = self.payload()?;
        let envelopes = (0..self.count).map(|_| {
            let mut envelope = Envelope::new(&self.name, self.queue.clone(), payload.clone());
            envelope.priority = self.priority;
            envelope.max_attempts = self.max_attempts;
            envelope.tenant.clone_from(&self.tenant);
            envelope.mark_secret(&self.secret);
            envelope.eta = self
                .countdown
                .filter(|d| !d.is_zero())
                .map(|d| envelope.created_at.saturating_add(d));
            envelope
        });
        Ok(envelopes.collect())
    }

    /// Validates the fields and encodes the arguments.
    fn payload(&self) -> Result<Vec<u8>> {
        let invalid = |what: String| Err(Error::InvalidInput(what));
        if self.name.is_empty() || !self.name.chars().all(printable) {
            return invalid(format!(
                "invalid task name {:?}: it must be non-empty, printable and without whitespace",
                self.name
            ));
        }
        if !(1..=MAX_CALL_COUNT).contains(&self.count) {
            return invalid(format!(
                "--count must be between 1 and {MAX_CALL_COUNT}, not {}",
                self.count
            ));
        }
        if self.max_attempts == 0 {
            return invalid("--max-attempts must be at least 1".to_owned());
        }
        if let Some(tenant) = &self.tenant
            && (tenant.is_empty() || !tenant.chars().all(printable))
        {
            return invalid(format!(
                "invalid tenant {tenant:?}: it must be non-empty, printable and without whitespace"
            ));
        }
        let args: serde_json::Value =
            serde_json::from_str(&self.args).map_err(Error::InvalidArgs)?;
        if !args.is_object() {
            return invalid(format!(
                "--args must be a JSON object of the task's fields, such as {{\"width\": 640}}, \
                 not {}",
                json_kind(&args)
            ));
        }
        Ok(encode_payload(&args)?)
    }
}

/// The JSON text `--args VALUE` stands for: VALUE itself, the contents of
/// a file for `@PATH`, or standard input for `-`. The file and stdin forms
/// take arguments of any size, past the shell's limit on one argument.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the file (or stdin) when it cannot be
/// read or is not UTF-8.
pub fn read_args(value: &str) -> Result<String> {
    read_args_from(value, &mut std::io::stdin().lock())
}

/// [`read_args`], with `stdin` standing for standard input.
///
/// # Errors
///
/// As [`read_args`].
pub fn read_args_from(value: &str, stdin: &mut impl std::io::Read) -> Result<String> {
    if value == "-" {
        let mut text = String::new();
        stdin.read_to_string(&mut text).map_err(|e| {
            Error::InvalidInput(format!("cannot read --args from standard input: {e}"))
        })?;
        return Ok(text);
    }
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("cannot read --args from the file {path:?}: {e}"))
        }),
        None => Ok(value.to_owned()),
    }
}

fn printable(c: char) -> bool {
    !c.is_whitespace() && !c.is_control()
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The ids of the tasks a `call` enqueued; JSON: an array of id strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CallReport {
    /// One id per task, in enqueue order.
    pub ids: Vec<TaskId>,
}

impl Report for CallReport {
    fn to_text(&self) -> String {
        self.ids.iter().map(|id| format!("{id}\n")).collect()
    }
}

/// Enqueues `request.count` copies of the task, in one batch.
///
/// # Errors
///
/// As [`CallRequest::validate`] for bad input, in which case nothing is
/// enqueued; [`Error::Broker`] when the broker fails. When it took some of
/// the copies and refused the others, that is
/// [`spool_broker::Error::PartialEnqueue`], with the ids of those it took.
pub async fn call(broker: &impl Broker, request: &CallRequest) -> Result<CallReport> {
    call_recorded(broker, None, request).await
}

/// [`call`], recording the tasks in the job store as well (`queued`, or
/// `scheduled` with a countdown, with their arguments, secrets redacted),
/// so that `task show` and `tasks` know them before any worker runs them.
/// When the broker took only some of the copies, those are recorded.
///
/// # Errors
///
/// As [`call`]; [`Error::NotRecorded`] when the tasks were enqueued but
/// the store failed.
pub async fn call_recorded(
    broker: &impl Broker,
    store: Option<&JobStore>,
    request: &CallRequest,
) -> Result<CallReport> {
    let mut envelopes = request.envelopes()?;
    // A trace of its own, or the caller's when it has one (issue 18).
    let publish = trace_context::publish_span(&request.queue, envelopes.len());
    trace_context::inject_into(&publish, &mut envelopes);
    let enqueued = broker.enqueue(&envelopes).instrument(publish).await;
    if let Some(store) = store {
        let taken: Vec<&Envelope> = match &enqueued {
            Ok(()) => envelopes.iter().collect(),
            Err(spool_broker::Error::PartialEnqueue { enqueued, .. }) => envelopes
                .iter()
                .filter(|e| enqueued.contains(&e.id))
                .collect(),
            Err(_) => Vec::new(),
        };
        let recorded = record_enqueued(store, &taken).await;
        // The broker's failure is the one to report.
        enqueued?;
        recorded?;
    } else {
        enqueued?;
    }
    Ok(CallReport {
        ids: envelopes.iter().map(|e| e.id).collect(),
    })
}

/// Records freshly enqueued envelopes in the job store, one batch, through
/// [`NewJob::from_envelope`]: the one way every producer records a task.
///
/// # Errors
///
/// [`Error::NotRecorded`] naming the tasks when the store fails.
pub async fn record_enqueued(store: &JobStore, envelopes: &[&Envelope]) -> Result<()> {
    let jobs: Vec<NewJob> = envelopes.iter().map(|e| NewJob::from_envelope(e)).collect();
    store
        .record_enqueued(&jobs)
        .await
        .map_err(|source| Error::NotRecorded {
            ids: jobs.iter().map(|job| job.id).collect(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spool_broker::{MemoryBroker, decode_payload};

    use super::*;
    use crate::ctl::{Format, render};

    fn request(name: &str) -> CallRequest {
        CallRequest {
            args: r#"{"width": 640, "codec": "av1", "tags": ["a", "b"]}"#.to_owned(),
            queue: QueueName::ANALYSIS,
            priority: Priority::High,
            max_attempts: 5,
            tenant: Some("acme".to_owned()),
            count: 3,
            ..CallRequest::new(name)
        }
    }

    #[tokio::test]
    async fn call_enqueues_count_envelopes_as_asked() {
        let broker = MemoryBroker::new();
        let report = call(&broker, &request("video.probe")).await.unwrap();
        assert_eq!(report.ids.len(), 3);

        let batch = broker
            .fetch(&QueueName::ANALYSIS, "w", 10, Duration::ZERO)
            .await
            .unwrap();
        let ids: Vec<_> = batch.deliveries.iter().map(|d| d.envelope.id).collect();
        assert_eq!(ids, report.ids);
        for d in &batch.deliveries {
            let e = &d.envelope;
            assert_eq!(e.name, "video.probe");
            assert_eq!(e.queue, QueueName::ANALYSIS);
            assert_eq!(e.priority, Priority::High);
            assert_eq!((e.attempt, e.max_attempts), (1, 5));
            assert_eq!(e.tenant.as_deref(), Some("acme"));
            assert_eq!(e.eta, None);
            let payload: serde_json::Value = decode_payload(&e.payload).unwrap();
            assert_eq!(
                payload,
                json!({"width": 640, "codec": "av1", "tags": ["a", "b"]})
            );
        }
    }

    #[tokio::test]
    async fn defaults_are_one_empty_normal_task_with_three_attempts() {
        let broker = MemoryBroker::new();
        let report = call(&broker, &CallRequest::new("spool.ping"))
            .await
            .unwrap();
        let batch = broker
            .fetch(&QueueName::DEFAULT, "w", 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch.deliveries.len(), 1);
        let e = &batch.deliveries[0].envelope;
        assert_eq!(e.id, report.ids[0]);
        assert_eq!(
            (e.priority, e.max_attempts, e.eta),
            (Priority::Normal, 3, None)
        );
        assert_eq!(
            decode_payload::<serde_json::Value>(&e.payload).unwrap(),
            json!({})
        );
    }

    #[tokio::test]
    async fn a_countdown_delays_the_tasks() {
        let broker = MemoryBroker::new();
        let mut req = request("video.probe");
        req.countdown = Some(Duration::from_secs(10));
        for e in req.envelopes().unwrap() {
            let eta = e.eta.expect("a countdown sets the eta");
            assert_eq!(eta.saturating_since(e.created_at), Duration::from_secs(10));
        }
        call(&broker, &req).await.unwrap();
        let stats = broker.stats(&QueueName::ANALYSIS).await.unwrap();
        assert_eq!((stats.ready_total(), stats.delayed), (0, 3));

        req.countdown = Some(Duration::ZERO);
        assert!(req.envelopes().unwrap().iter().all(|e| e.eta.is_none()));
    }

    #[test]
    fn ids_print_one_per_line_or_as_a_json_array() {
        let report = CallReport {
            ids: vec![TaskId::new(), TaskId::new()],
        };
        let text = render(&report, Format::Text).unwrap();
        assert_eq!(text, format!("{}\n{}\n", report.ids[0], report.ids[1]));
        let json: Vec<String> =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json, [report.ids[0].to_string(), report.ids[1].to_string()]);
    }

    #[tokio::test]
    async fn bad_json_is_refused_naming_the_problem_and_enqueues_nothing() {
        let broker = MemoryBroker::new();
        let mut req = request("x");
        req.args = "{bad".to_owned();
        let err = call(&broker, &req).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgs(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("--args is not valid JSON: "),
            "{message}"
        );
        assert!(message.contains("line 1 column 2"), "{message}");
        let stats = broker.stats(&QueueName::ANALYSIS).await.unwrap();
        assert_eq!(stats.ready_total(), 0);
    }

    #[test]
    fn args_come_inline_from_a_file_or_from_stdin() {
        let mut no_stdin = std::io::empty();
        assert_eq!(read_args_from("{}", &mut no_stdin).unwrap(), "{}");
        let mut stdin = &b"{\"w\": 1}"[..];
        assert_eq!(read_args_from("-", &mut stdin).unwrap(), "{\"w\": 1}");
        let path = std::env::temp_dir().join(format!("spool-args-{:08x}.json", fastrand::u32(..)));
        std::fs::write(&path, "{\"h\": 2}").unwrap();
        let at = format!("@{}", path.display());
        assert_eq!(read_args_from(&at, &mut no_stdin).unwrap(), "{\"h\": 2}");
        std::fs::remove_file(&path).unwrap();
        let err = read_args_from(&at, &mut no_stdin).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn invalid_input_is_refused() {
        let with = |f: fn(&mut CallRequest)| {
            let mut req = CallRequest::new("spool.ping");
            f(&mut req);
            req.validate().unwrap_err().to_string()
        };
        assert!(with(|r| r.args = "[1, 2]".into()).contains("not an array"));
        assert!(with(|r| r.name = String::new()).contains("invalid task name"));
        assert!(with(|r| r.name = "two words".into()).contains("invalid task name"));
        assert!(with(|r| r.name = "bell\u{7}".into()).contains("invalid task name"));
        assert!(with(|r| r.count = 0).contains("--count"));
        assert!(with(|r| r.count = MAX_CALL_COUNT + 1).contains("--count"));
        assert!(with(|r| r.max_attempts = 0).contains("--max-attempts"));
        assert!(with(|r| r.tenant = Some(String::new())).contains("invalid tenant"));
        assert!(CallRequest::new("spool.ping").validate().is_ok());
    }
}
