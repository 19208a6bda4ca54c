//! `Scheduler`: the loop that reads the schedules, finds each one's due tick and fires it
//! through the store, which takes each tick once across every scheduler; then sleeps until
//! the next tick (at most `poll`, so that new schedules are seen).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::schedule::{Missed, Schedule, ScheduleStore};

use crate::cadence::Cadence;

/// Ticks sent for one schedule in one pass at most (the ticks within the grace).
const MAX_TICKS_PER_PASS: usize = 1000;

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The longest sleep between two looks at the schedules (default 1 s).
    pub poll: Duration,
    /// A tick found later than this after its time is a misfire, handled by the schedule's
    /// [`Missed`] policy; within it, the tick is sent, late (default 10 s).
    pub grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(10),
        }
    }
}

/// What a scheduler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerReport {
    /// Ticks this scheduler sent.
    pub fired: u64,
    /// Misfires skipped (recorded, not sent).
    pub skipped: u64,
    /// Ticks another scheduler had taken first.
    pub taken_elsewhere: u64,
    /// Store errors and schedules that could not be read (each logged).
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    fired: AtomicU64,
    skipped: AtomicU64,
    taken_elsewhere: AtomicU64,
    errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Fires the schedules of a store.
#[derive(Debug, Clone)]
pub struct Scheduler<S> {
    store: S,
    config: SchedulerConfig,
    counters: Arc<Counters>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<S: ScheduleStore> Scheduler<S> {
    /// A scheduler of `store`'s schedules.
    pub fn new(store: S, config: SchedulerConfig) -> Self {
        Scheduler {
            store,
            config,
            counters: Arc::new(Counters::default()),
        }
    }

    /// What it has done so far.
    pub fn report(&self) -> SchedulerReport {
        let c = &self.counters;
        SchedulerReport {
            fired: c.fired.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            taken_elsewhere: c.taken_elsewhere.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// Runs until `stop` completes; a tick being fired when it does is finished first (its
    /// transaction is short).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped fire either committed or did not.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> SchedulerReport {
        tokio::pin!(stop);
        let mut cadences: HashMap<String, (herald::schedule::ScheduleSpec, Option<Cadence>)> =
            HashMap::new();
        loop {
            let wake = self.pass(&mut cadences).await;
            tokio::select! {
                () = &mut stop => return self.report(),
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// One look at every schedule: fires what is due; returns how long to sleep.
    async fn pass(
        &self,
        cadences: &mut HashMap<String, (herald::schedule::ScheduleSpec, Option<Cadence>)>,
    ) -> Duration {
        let poll = i64::try_from(self.config.poll.as_millis()).unwrap_or(1000);
        let schedules = match self.store.schedules().await {
            Ok(s) => s,
            Err(e) => {
                bump(&self.counters.errors);
                tracing::warn!("reading the schedules: {}", herald::report(&e));
                return self.config.poll;
            }
        };
        let now = now_ms();
        let mut wake_at = now + poll;
        for schedule in schedules {
            let name = schedule.spec.name.clone();
            let fresh = cadences
                .get(&name)
                .is_none_or(|(spec, _)| *spec != schedule.spec);
            if fresh {
                let cadence = match Cadence::of(&schedule.spec) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        bump(&self.counters.errors);
                        tracing::warn!("schedule {name} is not run: {e}");
                        None
                    }
                };
                cadences.insert(name.clone(), (schedule.spec.clone(), cadence));
            }
            let Some((_, Some(cadence))) = cadences.get(&name) else {
                continue;
            };
            if schedule.paused {
                continue;
            }
            if cadence.latest_due(schedule.last_tick_ms, now).is_some() {
                self.fire(&schedule, cadence, now).await;
            }
            if let Some(next) = cadence.next_after(now.max(schedule.last_tick_ms)) {
                wake_at = wake_at.min(next);
            }
        }
        Duration::from_millis(u64::try_from((wake_at - now_ms()).max(1)).unwrap_or(1))
    }

    /// Fires what is due since the schedule's last tick. Every tick within the grace is sent
    /// (late, but sent: a slow pass loses nothing). Ticks older than the grace are a
    /// misfire: `Skip` records the latest of them without sending it, `CatchUp` sends it
    /// once; the older ones are dropped.
    async fn fire(&self, schedule: &Schedule, cadence: &Cadence, now: i64) {
        let spec = &schedule.spec;
        let grace = i64::try_from(self.config.grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(grace);
        let last = schedule.last_tick_ms;
        if let Some(old) = cadence.latest_due(last, cutoff) {
            let send = spec.missed == Missed::CatchUp;
            tracing::info!(
                "schedule {}: ticks missed while no scheduler ran; {}",
                spec.name,
                if send { "one caught up" } else { "skipped" }
            );
            self.tick(spec, old, send).await;
        }
        let mut at = last.max(cutoff);
        for _ in 0..MAX_TICKS_PER_PASS {
            match cadence.next_after(at) {
                Some(t) if t <= now && t > at => {
                    self.tick(spec, t, true).await;
                    at = t;
                }
                _ => break,
            }
        }
    }

    /// Takes the tick at `at` through the store, sending its event when `send`.
    async fn tick(&self, spec: &herald::schedule::ScheduleSpec, at: i64, send: bool) {
        let target = match (spec.queue_name(), spec.tick_event(at)) {
            (Ok(q), Ok(e)) => (q, e),
            (Err(e), _) => return self.failed(&spec.name, &e),
            (_, Err(e)) => return self.failed(&spec.name, &e),
        };
        let fired = self
            .store
            .fire(&spec.name, at, send.then_some((&target.0, &target.1)))
            .await;
        match fired {
            Ok(Some(_)) if send => bump(&self.counters.fired),
            Ok(Some(_)) => bump(&self.counters.skipped),
            Ok(None) => bump(&self.counters.taken_elsewhere),
            Err(e) => self.failed(&spec.name, &e),
        }
    }

    fn failed(&self, name: &str, e: &dyn std::error::Error) {
        bump(&self.counters.errors);
        tracing::warn!("schedule {name}: {}", herald::report(e));
    }
}
