//! Checking at start-up that the Redis user may do a worker's job, so that
//! a missing permission is named once, not met on every fetch.

use redis::RedisError;
use tracing::debug;

use super::{GROUP, RedisBroker, map_redis};
use crate::error::{Error, Result};
use crate::queue::QueueName;

/// A script SHA1 no script has: `EVALSHA` of it is checked against the
/// ACLs like any script, without running anything.
const NO_SCRIPT: &str = "0000000000000000000000000000000000000000";

impl RedisBroker {
    /// The commands a worker of `queues` runs, each with the keys or
    /// channels it runs them on (arguments other than keys are
    /// placeholders: `ACL DRYRUN` runs nothing).
    fn worker_commands(&self, queues: &[QueueName]) -> Vec<Vec<String>> {
        let prefix = &self.inner.config.key_prefix;
        let line = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let mut lines = Vec::new();
        for queue in queues {
            let keys = self.keys(queue);
            for stream in &keys.streams {
                let s = stream.as_str();
                lines.extend([
                    line(&["EVALSHA", NO_SCRIPT, "1", s]),
                    line(&[
                        "XREADGROUP",
                        "GROUP",
                        GROUP,
                        "probe",
                        "COUNT",
                        "1",
                        "STREAMS",
                        s,
                        ">",
                    ]),
                    line(&["XREAD", "COUNT", "1", "STREAMS", s, "0-0"]),
                    line(&["XGROUP", "CREATE", s, GROUP, "0", "MKSTREAM"]),
                    line(&["XADD", s, "*", "e", "x"]),
                    line(&["XACK", s, GROUP, "0-1"]),
                    line(&["XDEL", s, "0-1"]),
                    line(&["XCLAIM", s, GROUP, "probe", "0", "0-1"]),
                    line(&["XPENDING", s, GROUP]),
                    line(&["XRANGE", s, "-", "+", "COUNT", "1"]),
                    line(&["XREVRANGE", s, "+", "-", "COUNT", "1"]),
                ]);
            }
            lines.extend([
                line(&["ZADD", &keys.delayed, "0", "m"]),
                line(&["ZRANGE", &keys.delayed, "0", "0"]),
                line(&["ZREM", &keys.delayed, "m"]),
                line(&["XADD", &keys.dead, "*", "e", "x"]),
                line(&["EXISTS", &keys.paused]),
                line(&["ZADD", &keys.consumers, "0", "c"]),
                line(&["ZREMRANGEBYSCORE", &keys.consumers, "0", "0"]),
            ]);
        }
        let revoked = self.revoked_key();
        let paused = format!("{prefix}:paused");
        lines.extend([
            line(&["ZRANGEBYSCORE", &revoked, "0", "1"]),
            line(&["ZREMRANGEBYSCORE", &revoked, "0", "0"]),
            line(&["SMEMBERS", &paused]),
            line(&["SUBSCRIBE", &self.control_channel()]),
            line(&["PUBLISH", &format!("{prefix}:task:probe"), "m"]),
        ]);
        lines
    }

    /// Checks that this connection's Redis user may run every command a
    /// worker of `queues` runs, on the keys and channels it runs them on,
    /// with `ACL DRYRUN` (Redis 7 and later). Where the server cannot
    /// answer (an older Redis, or a user not allowed `ACL WHOAMI` and
    /// `ACL DRYRUN` themselves) the check is skipped with a debug log: the
    /// first refused command then fails with the same error. Commands
    /// Spool's scripts run inside are checked when they run.
    ///
    /// # Errors
    ///
    /// [`Error::Permission`] naming the first command refused, with the
    /// key or channel Redis names; [`Error::Connection`] when Redis cannot
    /// be reached.
    pub async fn check_permissions(&self, queues: &[QueueName]) -> Result<()> {
        let mut conn = self.conn();
        let user: String = match conn.query_one_node(redis::cmd("ACL").arg("WHOAMI")).await {
            Ok(user) => user,
            Err(e) => return skipped(e, "ACL WHOAMI"),
        };
        for line in self.worker_commands(queues) {
            let mut dryrun = redis::cmd("ACL");
            dryrun.arg("DRYRUN").arg(&user);
            for part in &line {
                dryrun.arg(part);
            }
            let verdict: String = match conn.query_one_node(&dryrun).await {
                Ok(verdict) => verdict,
                Err(e) => return skipped(e, "ACL DRYRUN"),
            };
            if verdict != "OK" {
                let target = line.get(1).map_or("", String::as_str);
                return Err(Error::Permission {
                    command: format!("{} (on {target})", line[0]),
                    detail: verdict,
                });
            }
        }
        Ok(())
    }
}

/// The check cannot be made: fine unless Redis is unreachable.
fn skipped(e: RedisError, what: &str) -> Result<()> {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return Err(map_redis(e));
    }
    debug!(error = %e, "cannot check the Redis user's permissions ({what} refused or unknown); \
        a missing one shows at its first use");
    Ok(())
}
