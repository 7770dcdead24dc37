//! Spool's Redis key layout.
//!
//! Every key of a queue carries the queue's name as its hash tag
//! (`spool:{gpu}:high`), so all of them live on one Redis Cluster slot and
//! every Lua script touches a single slot.

use crate::queue::{Priority, QueueName};

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    /// The queue these keys belong to.
    pub(crate) queue: QueueName,
    /// What every key of the queue starts with: `spool:{gpu}`.
    base: String,
    /// One stream per priority, indexed by [`Priority::index`].
    pub(crate) streams: [String; 3],
    /// Tasks not due yet, scored by due time in milliseconds.
    pub(crate) delayed: String,
    /// Tasks that cannot or must not run again.
    pub(crate) dead: String,
    /// Exists while the queue is paused; in the queue's slot, so the fetch
    /// script checks it atomically with its claim.
    pub(crate) paused: String,
    /// The consumers that fetched lately, scored by when (ms): what
    /// `stats` counts as consumers, besides those holding pending entries.
    pub(crate) consumers: String,
}

impl QueueKeys {
    pub(crate) fn new(prefix: &str, queue: &QueueName) -> Self {
        let base = format!("{prefix}:{{{queue}}}");
        Self {
            queue: queue.clone(),
            streams: Priority::ALL.map(|p| format!("{base}:{p}")),
            delayed: format!("{base}:delayed"),
            dead: format!("{base}:dead"),
            paused: format!("{base}:paused"),
            consumers: format!("{base}:consumers"),
            base,
        }
    }

    pub(crate) fn stream(&self, priority: Priority) -> &str {
        &self.streams[priority.index()]
    }

    /// The lock of a unique key: in the queue's slot, so the lock and the
    /// enqueue happen in one script.
    pub(crate) fn unique(&self, key: &str) -> String {
        format!("{}:unique:{key}", self.base)
    }
}

/// The `SCAN MATCH` pattern of every queue key under `prefix`
/// (`spool:{*}:*`), the prefix's glob characters escaped.
pub(crate) fn queue_key_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":{*}:*");
    pattern
}

/// The queue a key under `prefix` holds tasks of: a priority stream, the
/// delayed set or the dead-letter stream (`spool:{gpu}:high`). Other keys
/// (pause flags, consumer sets, unique locks, the beat's state) hold no
/// task and name no queue here.
pub(crate) fn queue_holding(prefix: &str, key: &str) -> Option<QueueName> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(":{")?;
    let (queue, suffix) = rest.split_once("}:")?;
    let holds_tasks = Priority::ALL.iter().any(|p| p.to_string() == suffix)
        || suffix == "delayed"
        || suffix == "dead";
    holds_tasks.then(|| QueueName::new(queue).ok()).flatten()
}

/// Whether `prefix` can lead Spool's keys: it must not contain a brace,
/// which would steal the hash tag from the queue name.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && !prefix.contains(['{', '}']) && !prefix.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_name_their_queue_and_other_keys_do_not() {
        let gpu = QueueName::new("gpu").unwrap();
        let keys = QueueKeys::new("spool", &gpu);
        for key in keys.streams.iter().chain([&keys.delayed, &keys.dead]) {
            assert_eq!(queue_holding("spool", key), Some(gpu.clone()), "{key}");
        }
        for key in [&keys.paused, &keys.consumers, &keys.unique("k")] {
            assert_eq!(queue_holding("spool", key), None, "{key}");
        }
        assert_eq!(queue_holding("spool2", &keys.dead), None);
        assert_eq!(queue_holding("spool", "spool:{}:dead"), None);
        assert_eq!(queue_key_pattern("a*b?[c]"), "a\\*b\\?\\[c\\]:{*}:*");
    }

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let keys = QueueKeys::new("spool", &QueueName::GPU);
        assert_eq!(keys.streams[0], "spool:{gpu}:high");
        assert_eq!(keys.stream(Priority::Low), "spool:{gpu}:low");
        assert_eq!(keys.delayed, "spool:{gpu}:delayed");
        assert_eq!(keys.dead, "spool:{gpu}:dead");
        assert_eq!(keys.paused, "spool:{gpu}:paused");
        assert_eq!(keys.consumers, "spool:{gpu}:consumers");
        assert_eq!(keys.unique("thumb:42"), "spool:{gpu}:unique:thumb:42");
    }

    #[test]
    fn prefixes_with_braces_are_invalid() {
        assert!(valid_prefix("spool"));
        assert!(valid_prefix("test-1a2b:spool"));
        assert!(!valid_prefix("x{y}"));
        assert!(!valid_prefix(""));
    }
}
