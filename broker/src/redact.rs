//! Secret task fields, and task arguments as the JSON operators see.
//!
//! A task type marks fields secret with [`Task::SECRET_FIELDS`] (or a
//! producer that has no type, such as `spoolctl call --secret`, names
//! them); the names travel with the task in the envelope header
//! [`HEADER_SECRET_FIELDS`], so every later reader (the job store's
//! record, `spoolctl task show`, `dead list`, a revived dead letter, a
//! workflow step) redacts the same fields without knowing the type.
//! Spool never logs a payload; [`Envelope::args_json`] is the one way
//! arguments are shown, and it always redacts.
//!
//! [`Task::SECRET_FIELDS`]: crate::Task::SECRET_FIELDS

use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::Result;

/// The envelope header listing the task's secret fields: comma-separated
/// paths, each a field name or a dotted path into nested objects
/// (`credentials.token`).
pub const HEADER_SECRET_FIELDS: &str = "spool-secret-fields";

/// What a secret field's value is replaced with.
pub const REDACTED: &str = "***";

/// Replaces the value at each of `paths` (field names, or dotted paths
/// into nested objects; arrays on the way apply the rest of the path to
/// each element) with [`REDACTED`]. Paths that lead nowhere are ignored.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use spool_broker::redact_json;
///
/// let mut args = json!({"url": "s3://in.mp4", "auth": {"token": "t0p"}, "key": "k"});
/// redact_json(&mut args, ["auth.token", "key", "missing"]);
/// assert_eq!(args, json!({"url": "s3://in.mp4", "auth": {"token": "***"}, "key": "***"}));
/// ```
pub fn redact_json<'a>(value: &mut Value, paths: impl IntoIterator<Item = &'a str>) {
    for path in paths {
        let steps: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        if !steps.is_empty() {
            redact_path(value, &steps);
        }
    }
}

fn redact_path(value: &mut Value, steps: &[&str]) {
    match value {
        Value::Array(items) => {
            for item in items {
                redact_path(item, steps);
            }
        }
        Value::Object(map) => {
            let Some((first, rest)) = steps.split_first() else {
                return;
            };
            if let Some(field) = map.get_mut(*first) {
                if rest.is_empty() {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    redact_path(field, rest);
                }
            }
        }
        _ => {}
    }
}

impl Envelope {
    /// The paths of the task's secret fields, from its
    /// [`HEADER_SECRET_FIELDS`] header.
    pub fn secret_fields(&self) -> impl Iterator<Item = &str> {
        self.headers
            .get(HEADER_SECRET_FIELDS)
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
    }

    /// Marks `fields` secret (adding to those already marked), in the
    /// [`HEADER_SECRET_FIELDS`] header.
    pub fn mark_secret<S: AsRef<str>>(&mut self, fields: &[S]) {
        let mut all: Vec<String> = self.secret_fields().map(str::to_owned).collect();
        for field in fields {
            let field = field.as_ref().trim();
            if !field.is_empty() && !all.iter().any(|f| f == field) {
                all.push(field.to_owned());
            }
        }
        if !all.is_empty() {
            self.headers
                .insert(HEADER_SECRET_FIELDS.to_owned(), all.join(","));
        }
    }

    /// The task's arguments as JSON, with its secret fields redacted: what
    /// the job store records and the CLI prints. MessagePack binary strings
    /// become arrays of numbers.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) when the payload is not
    /// MessagePack.
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::json;
    /// use spool_broker::{Envelope, QueueName, encode_payload};
    ///
    /// let payload = encode_payload(&json!({"video": "in.mp4", "api_key": "s3cr3t"}))?;
    /// let mut envelope = Envelope::new("video.probe", QueueName::DEFAULT, payload);
    /// envelope.mark_secret(&["api_key"]);
    /// assert_eq!(envelope.args_json()?, json!({"video": "in.mp4", "api_key": "***"}));
    /// # Ok::<(), spool_broker::Error>(())
    /// ```
    pub fn args_json(&self) -> Result<Value> {
        let mut args = crate::store::msgpack_to_json_as(&self.payload, "task arguments")?;
        redact_json(&mut args, self.secret_fields());
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{QueueName, encode_payload};

    #[test]
    fn arrays_apply_the_rest_of_the_path_to_each_element() {
        let mut args = json!({"inputs": [{"url": "a", "sig": "x"}, {"url": "b", "sig": "y"}]});
        redact_json(&mut args, ["inputs.sig"]);
        assert_eq!(
            args,
            json!({"inputs": [{"url": "a", "sig": "***"}, {"url": "b", "sig": "***"}]})
        );
    }

    #[test]
    fn marking_twice_keeps_each_field_once() {
        let mut e = Envelope::new("t", QueueName::DEFAULT, encode_payload(&json!({})).unwrap());
        e.mark_secret(&["a", "b"]);
        e.mark_secret(&["b", " c "]);
        assert_eq!(e.secret_fields().collect::<Vec<_>>(), ["a", "b", "c"]);
        let mut plain = e.clone();
        plain.headers.clear();
        plain.mark_secret::<&str>(&[]);
        assert!(plain.headers.is_empty());
    }
}
