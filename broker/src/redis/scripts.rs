//! The Lua scripts, from `broker/lua/`.

use redis::Script;

use super::keys::QueueKeys;

/// The scripts, each loaded once per connection by its SHA1.
pub(crate) struct Scripts {
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) retry: Script,
    pub(crate) dead_letter: Script,
    pub(crate) requeue: Script,
    pub(crate) stats: Script,
    pub(crate) purge: Script,
    pub(crate) reclaim: Script,
    pub(crate) renew: Script,
    pub(crate) requeue_dead: Script,
    pub(crate) enqueue_unique: Script,
    pub(crate) release_unique: Script,
    pub(crate) rate_limit: Script,
    pub(crate) find: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            fetch: Script::new(include_str!("../../lua/fetch.lua")),
            ack: Script::new(include_str!("../../lua/ack.lua")),
            retry: Script::new(include_str!("../../lua/retry.lua")),
            dead_letter: Script::new(include_str!("../../lua/dead_letter.lua")),
            requeue: Script::new(include_str!("../../lua/requeue.lua")),
            stats: Script::new(include_str!("../../lua/stats.lua")),
            purge: Script::new(include_str!("../../lua/purge.lua")),
            reclaim: Script::new(include_str!("../../lua/reclaim.lua")),
            renew: Script::new(include_str!("../../lua/renew.lua")),
            requeue_dead: Script::new(include_str!("../../lua/requeue_dead.lua")),
            enqueue_unique: Script::new(include_str!("../../lua/enqueue_unique.lua")),
            release_unique: Script::new(include_str!("../../lua/release_unique.lua")),
            rate_limit: Script::new(include_str!("../../lua/rate_limit.lua")),
            find: Script::new(include_str!("../../lua/find.lua")),
        }
    }
}

/// Starts invoking `script` with the queue's three streams (high, normal,
/// low) as its first keys: the layout every queue script shares.
pub(crate) fn on_streams<'a>(script: &'a Script, keys: &QueueKeys) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for stream in &keys.streams {
        invocation.key(stream);
    }
    invocation
}
