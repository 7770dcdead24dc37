//! The beat itself: take the lead, enqueue what is due, keep the lease.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use spool_broker::store::JobStore;
use spool_broker::{
    FencingToken, LeaderLock, RedisBroker, TaskId, TickOutcome, Timestamp, trace_context,
};
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::catch_up::{self, Timing};
use super::config::BeatConfig;
use super::metrics::BeatMetrics;
use crate::error::Result;

/// The name of the beat's leader lock.
pub const LOCK_NAME: &str = "beat";

/// How long a failed pass waits before the next one.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The longest a standby waits between attempts to take the lead.
const MAX_POLL: Duration = Duration::from_secs(1);

/// A periodic scheduler replica: run several, against one Redis and key
/// prefix, with the same configuration; one leads and enqueues each tick,
/// the others stand by and take over when it stops or dies.
///
/// [`run`](Self::run) does everything. [`try_lead`](Self::try_lead) and
/// [`Leader`] expose its steps, with the time passed in, for tools and
/// tests.
///
/// # Examples
///
/// ```no_run
/// use spool_broker::RedisBroker;
/// use spool_scheduler::beat::{Beat, BeatConfig};
///
/// # async fn demo() -> spool_scheduler::Result<()> {
/// let config = BeatConfig::from_toml(r#"
///     [[entry]]
///     name = "ping"
///     task = "spool.ping"
///     every = "30s"
/// "#)?;
/// let broker = RedisBroker::connect_url("redis://127.0.0.1:6379/").await?;
/// let beat = Beat::new(broker, config)?;
/// beat.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Beat {
    config: BeatConfig,
    lock: LeaderLock,
    broker: RedisBroker,
    metrics: Arc<BeatMetrics>,
    store: Option<JobStore>,
}

/// What one [`Leader::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pass {
    /// The ticks enqueued, entry by entry, oldest first.
    pub enqueued: Vec<EnqueuedTick>,
    /// Missed ticks that their entry's policy did not run.
    pub missed: u64,
    /// Ticks refused because they had been enqueued already (by a former
    /// leader, or a stale one).
    pub duplicates: u64,
    /// More ticks are due than one pass enqueues: run another at once.
    pub more: bool,
    /// This replica is no longer the leader (fenced off by a newer one, or
    /// its lease ran out): it enqueued nothing more and must stand by.
    pub deposed: bool,
}

/// One tick that a pass enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueuedTick {
    /// The entry's name.
    pub entry: String,
    /// When the tick was scheduled.
    pub scheduled: Timestamp,
    /// The id of the task it enqueued.
    pub id: TaskId,
}

impl Beat {
    /// A replica with a fresh owner id ([`default_owner`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) when the
    /// configuration does not validate.
    pub fn new(broker: RedisBroker, config: BeatConfig) -> Result<Self> {
        Self::with_owner(broker, config, default_owner())
    }

    /// A replica with the owner id `owner`, which must be unique among the
    /// replicas.
    ///
    /// # Errors
    ///
    /// As [`Beat::new`], and [`Error::Broker`](crate::Error::Broker) for an
    /// empty owner.
    pub fn with_owner(broker: RedisBroker, config: BeatConfig, owner: String) -> Result<Self> {
        config.validate()?;
        let lock = broker.leader_lock(LOCK_NAME, owner, config.lock_ttl)?;
        let metrics = Arc::new(BeatMetrics::new(
            config.entries.iter().map(|e| e.name.clone()),
        ));
        Ok(Self {
            config,
            lock,
            broker,
            metrics,
            store: None,
        })
    }

    /// Records each tick's task in `store` as it is enqueued (`queued`,
    /// with its arguments, secret fields redacted), so `spoolctl task
    /// show` and `tasks` know it before a worker runs it. A failed write
    /// is logged and does not hold the schedule up: the task runs either
    /// way, and its worker records it when it starts.
    #[must_use]
    pub fn with_store(mut self, store: JobStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The configuration it runs.
    #[must_use]
    pub fn config(&self) -> &BeatConfig {
        &self.config
    }

    /// Its leader lock (to see who holds it).
    #[must_use]
    pub fn lock(&self) -> &LeaderLock {
        &self.lock
    }

    /// Its metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<BeatMetrics> {
        &self.metrics
    }

    /// Takes the lead if nobody holds it, as of `now`. On success the new
    /// leader has fenced every queue of its entries (so a former leader can
    /// no longer enqueue there) and loaded where each entry stands from
    /// Redis: the last enqueued tick, or `now` for an entry that never
    /// ticked (a new entry starts with its next tick, not a past one).
    ///
    /// # Errors
    ///
    /// Connection errors. Then this replica is not the leader; if it took
    /// the lock meanwhile, the lease runs out or the next call resumes it.
    pub async fn try_lead(&self, now: Timestamp) -> Result<Option<Leader<'_>>> {
        let started = Instant::now();
        let Some(token) = self.lock.try_acquire().await? else {
            return Ok(None);
        };
        for queue in self.config.queues() {
            if self.lock.fence_queue(token, &queue).await? {
                continue;
            }
            // A newer token was used on the queue: either this replica's
            // lease ran out meanwhile and another took over, or Redis lost
            // the counter. Step back, and make the next token newer.
            let seen = self.lock.queue_token(&queue).await?;
            warn!(
                %queue,
                token = %token,
                newer = ?seen,
                "a queue has seen a newer fencing token than the one just drawn; standing by"
            );
            self.lock.release(token).await?;
            if let Some(seen) = seen {
                self.lock.advance_counter(seen).await?;
            }
            return Ok(None);
        }
        let mut cursors = Vec::with_capacity(self.config.entries.len());
        for entry in &self.config.entries {
            let last = self
                .broker
                .last_tick(&entry.call.queue, &entry.name)
                .await?;
            cursors.push(last.unwrap_or(now));
        }
        self.metrics.set_leader(true);
        info!(owner = self.lock.owner(), %token, "leading the beat");
        Ok(Some(Leader {
            beat: self,
            token,
            cursors,
            lease_until: started + self.config.lock_ttl,
        }))
    }

    /// Runs the replica until `shutdown` completes: stands by, leads when
    /// it can, and resigns on shutdown so a standby takes over at once.
    /// Redis errors are logged and retried: a replica outlives a Redis
    /// outage.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the replica without resigning: its lease
    /// runs out by itself, and no tick is doubled either way.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let span = info_span!("beat", owner = self.lock.owner());
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let poll = (self.config.lock_ttl / 3).min(MAX_POLL);
        info!(
            entries = self.config.entries.len(),
            lease = %humantime::format_duration(self.config.lock_ttl),
            "beat started; standing by for the lead"
        );
        loop {
            match self.try_lead(Timestamp::now()).await {
                Ok(Some(leader)) => {
                    if self.lead(leader, shutdown.as_mut()).await {
                        return;
                    }
                }
                Ok(None) => debug!("another replica leads"),
                Err(e) => warn!(error = %e, "cannot take the lead"),
            }
            tokio::select! {
                () = shutdown.as_mut() => {
                    info!("beat stopped");
                    return;
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Leads until the lead is lost (returns `false`) or `shutdown`
    /// completes (resigns and returns `true`).
    async fn lead(
        &self,
        mut leader: Leader<'_>,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let renew_every = self.config.lock_ttl / 3;
        let mut renew_at = Instant::now() + renew_every;
        loop {
            if Instant::now() >= renew_at {
                match leader.renew().await {
                    Ok(true) => renew_at = Instant::now() + renew_every,
                    Ok(false) => {
                        warn!("lost the leader lock: another replica leads now");
                        self.metrics.lost();
                        return false;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot renew the leader lock");
                        renew_at = Instant::now() + RETRY_AFTER.min(renew_every);
                    }
                }
            }
            if !leader.holds_lease() {
                warn!("the leader lease ran out before it could be renewed; standing by");
                self.metrics.lost();
                return false;
            }
            let wake = match leader.tick(Timestamp::now()).await {
                Ok(pass) if pass.deposed => return false,
                Ok(pass) if pass.more => continue,
                Ok(_) => leader.next_due().map_or(renew_at, |due| {
                    Instant::now() + due.saturating_since(Timestamp::now())
                }),
                // Not the next tick, which is overdue: retry after a pause.
                Err(e) => {
                    warn!(error = %e, "cannot enqueue due ticks; retrying");
                    Instant::now() + RETRY_AFTER
                }
            }
            .min(renew_at);
            tokio::select! {
                () = shutdown.as_mut() => {
                    match leader.resign().await {
                        Ok(()) => info!("resigned the lead"),
                        Err(e) => warn!(error = %e, "cannot resign the lead; its lease will run out"),
                    }
                    return true;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// The lead, held by one [`Beat`] replica: made by [`Beat::try_lead`].
#[derive(Debug)]
pub struct Leader<'a> {
    beat: &'a Beat,
    token: FencingToken,
    /// Per entry, the time up to which every tick has been decided.
    cursors: Vec<Timestamp>,
    /// When the lease ends at the latest, by this process' clock.
    lease_until: Instant,
}

impl Leader<'_> {
    /// The fencing token this lead holds.
    #[must_use]
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Whether the lease may still run, by this process' clock (counted
    /// from before the call that took or renewed it, so never late).
    #[must_use]
    pub fn holds_lease(&self) -> bool {
        Instant::now() < self.lease_until
    }

    /// The time of the next tick any entry has after where it stands.
    #[must_use]
    pub fn next_due(&self) -> Option<Timestamp> {
        self.beat
            .config
            .entries
            .iter()
            .zip(&self.cursors)
            .filter_map(|(entry, &cursor)| entry.schedule.next_after(cursor))
            .min()
    }

    /// Extends the lease. Returns `false` if the lock is no longer this
    /// replica's: it must stop leading.
    ///
    /// # Errors
    ///
    /// Connection errors; the lease then runs on until it ends.
    pub async fn renew(&mut self) -> Result<bool> {
        let started = Instant::now();
        let renewed = self.beat.lock.renew(self.token).await?;
        if renewed {
            self.lease_until = started + self.beat.config.lock_ttl;
        }
        Ok(renewed)
    }

    /// Enqueues every tick due at `now` by each entry's schedule and
    /// catch-up policy, each with the fenced, idempotent script, and
    /// advances the entries.
    ///
    /// # Errors
    ///
    /// Connection errors. The ticks enqueued before the error are kept and
    /// the next call continues after them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call may leave its last tick enqueued without
    /// the entry moving on; the next call tries that tick again and Redis
    /// refuses it as a duplicate, so nothing is doubled.
    pub async fn tick(&mut self, now: Timestamp) -> Result<Pass> {
        let beat = self.beat;
        let mut pass = Pass::default();
        let (token, lease_until) = (self.token, self.lease_until);
        let entries = beat.config.entries.iter().zip(self.cursors.iter_mut());
        for (index, (entry, cursor)) in entries.enumerate() {
            let timing = Timing {
                policy: entry.catch_up,
                grace: beat.config.grace,
                window: entry.catch_up_window,
            };
            let plan = catch_up::plan(&entry.schedule, timing, *cursor, now);
            for scheduled in plan.ticks {
                if Instant::now() >= lease_until {
                    warn!("the leader lease ran out during a pass; standing by");
                    beat.metrics.lost();
                    pass.deposed = true;
                    return Ok(pass);
                }
                let mut envelope = entry.envelope(scheduled)?;
                // Each tick starts a trace that its task continues.
                let publish = trace_context::publish_span(&envelope.queue, 1);
                trace_context::start_new_trace(&publish);
                trace_context::inject_into(&publish, std::slice::from_mut(&mut envelope));
                let outcome = beat
                    .lock
                    .enqueue_tick(token, &entry.name, scheduled, &envelope)
                    .instrument(publish)
                    .await?;
                match outcome {
                    TickOutcome::Enqueued => {
                        info!(
                            entry = %entry.name,
                            task = %entry.call.name,
                            id = %envelope.id,
                            %scheduled,
                            "tick enqueued"
                        );
                        beat.metrics.enqueued(index, scheduled);
                        if let Some(store) = &beat.store
                            && let Err(e) = crate::ctl::record_enqueued(store, &[&envelope]).await
                        {
                            warn!(entry = %entry.name, id = %envelope.id, error = %e, "tick not recorded in the job store");
                        }
                        pass.enqueued.push(EnqueuedTick {
                            entry: entry.name.clone(),
                            scheduled,
                            id: envelope.id,
                        });
                    }
                    TickOutcome::AlreadyEnqueued { last } => {
                        debug!(entry = %entry.name, %scheduled, %last, "tick enqueued before");
                        beat.metrics.duplicate(index);
                        pass.duplicates += 1;
                    }
                    TickOutcome::Fenced { newer } => {
                        warn!(
                            entry = %entry.name,
                            token = %token,
                            %newer,
                            "fenced off: a newer leader has taken over"
                        );
                        beat.metrics.lost();
                        pass.deposed = true;
                        return Ok(pass);
                    }
                    // A future outcome: nothing was enqueued.
                    _ => return Ok(pass),
                }
                *cursor = scheduled;
            }
            if plan.skipped > 0 {
                warn!(
                    entry = %entry.name,
                    missed = plan.skipped,
                    policy = %entry.catch_up,
                    "missed ticks not run, by the entry's catch-up policy"
                );
                beat.metrics.missed(index, plan.skipped);
                pass.missed += plan.skipped;
            }
            *cursor = plan.cursor;
            pass.more |= plan.cursor < now;
        }
        Ok(pass)
    }

    /// Gives the lead up, so that a standby takes over at once.
    ///
    /// # Errors
    ///
    /// Connection errors; the lease then runs out by itself.
    pub async fn resign(self) -> Result<()> {
        self.beat.metrics.set_leader(false);
        self.beat.lock.release(self.token).await?;
        Ok(())
    }
}

/// A replica id unique across hosts and restarts: `<host>:<pid>:<random>`.
#[must_use]
pub fn default_owner() -> String {
    let host = gethostname::gethostname();
    format!(
        "{}:{}:{:08x}",
        host.to_string_lossy(),
        std::process::id(),
        fastrand::u32(..)
    )
}
