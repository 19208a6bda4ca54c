//! Herald's scheduler: schedules kept in the store (`herald::schedule`), their cadence read
//! here (a cron expression with [croner], in an IANA time zone with [chrono_tz], or a fixed
//! interval), and [`Scheduler`], the loop that enqueues each tick exactly once however many
//! schedulers run: the tick's time moves the schedule's `last_tick` forward in the same
//! transaction as the send ([`herald::schedule::ScheduleStore::fire`]).
//!
//! ```text
//!  herald schedule add ──▶ ScheduleStore::add_schedule (spec, last_tick = now)
//!  Scheduler::run ──▶ schedules() ──▶ Cadence::latest_due(last_tick, now)
//!        ├─ on time, or late with Missed::CatchUp ─▶ fire(name, tick, send) ─▶ one tx: CAS + send
//!        └─ late with Missed::Skip ───────────────▶ fire(name, tick, none)  ─▶ one tx: CAS only
//! ```

mod cadence;
mod scheduler;

pub use cadence::{parse_every, Cadence, CadenceError};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerReport};
