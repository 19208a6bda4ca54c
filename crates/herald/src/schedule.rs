//! The schedule contract: named schedules kept in the store (a cadence, a target queue, the
//! event to send), and `fire`, which enqueues one tick exactly once however many schedulers
//! call it: the tick's time is compared and set in the same transaction as the send. The
//! cadence itself (cron, time zones) is the scheduler's (`herald-schedule`).

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::event::Event;
use crate::message::subject::Subject;
use crate::queue::{QueueError, QueueName};

/// The longest schedule name.
pub const MAX_NAME: usize = 64;

/// What a scheduler does with a tick whose time passed while nothing ran (a misfire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Skip it: the next tick on time is the next one sent.
    #[default]
    Skip,
    /// Send one tick at once for all that were missed (the latest), then go on.
    CatchUp,
}

impl std::str::FromStr for Missed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Missed::Skip),
            "catch-up" => Ok(Missed::CatchUp),
            other => Err(format!(
                "{other:?} is not a missed-tick policy: skip or catch-up"
            )),
        }
    }
}

/// A schedule as stored: what a scheduler needs to fire it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Its name: letters, digits, `_`, `-`, `.`; at most [`MAX_NAME`].
    pub name: String,
    /// A cron expression (5 fields, or 6 with seconds first), or none with `every_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval in ms, ticks on multiples of it since the Unix epoch; or none with
    /// `cron`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The IANA time zone a cron expression is read in (default `UTC`).
    #[serde(default = "utc")]
    pub tz: String,
    /// The queue each tick is sent to.
    pub queue: String,
    /// The subject of each tick's event.
    pub subject: String,
    /// The data of each tick's event.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// What a misfire does.
    #[serde(default)]
    pub missed: Missed,
}

fn utc() -> String {
    "UTC".into()
}

/// A stored schedule and its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// What it is.
    pub spec: ScheduleSpec,
    /// Paused: no tick is sent (missed ticks follow the policy on resume).
    pub paused: bool,
    /// The time of the last tick sent or skipped (ms since the Unix epoch); its creation
    /// time before the first.
    pub last_tick_ms: i64,
}

/// Why a schedule operation failed. Nothing was stored when it is returned.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A name that is not one.
    #[error("schedule name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The name is taken.
    #[error("a schedule named {name} exists (herald schedule rm {name} first)")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// No schedule has that name.
    #[error("no schedule named {name} (herald schedule ls lists them)")]
    NoSuchSchedule {
        /// The name.
        name: String,
    },
    /// A stored spec the store could not read back.
    #[error("schedule {name}: stored spec unreadable: {reason}")]
    Corrupt {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Checks a schedule name.
///
/// # Errors
///
/// [`ScheduleError::InvalidName`].
pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    let bad = |reason| {
        Err(ScheduleError::InvalidName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("only letters, digits, _, - and . are allowed");
    }
    Ok(())
}

impl ScheduleSpec {
    /// The event a tick at `tick_ms` sends: the spec's subject and data, with
    /// `metadata.schedule` = `{name, tick}` (the tick's time, RFC 3339, and `tick_ms`).
    ///
    /// # Errors
    ///
    /// The subject's error when the stored subject is not one.
    pub fn tick_event(&self, tick_ms: i64) -> Result<Event, crate::SubjectError> {
        let subject = Subject::new(&self.subject)?;
        let at = crate::Timestamp::from_unix_ms(tick_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut record = Map::new();
        record.insert("name".into(), self.name.as_str().into());
        record.insert("tick".into(), at.into());
        record.insert("tick_ms".into(), tick_ms.into());
        Ok(Event::new(subject)
            .with_data(self.data.clone())
            .with_source("herald-schedule")
            .with_metadata("schedule", Value::Object(record)))
    }

    /// Its stored form (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A spec from its stored form; `name` names it in the error.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Corrupt`].
    pub fn from_json(name: &str, text: &str) -> Result<ScheduleSpec, ScheduleError> {
        serde_json::from_str(text).map_err(|e| ScheduleError::Corrupt {
            name: name.into(),
            reason: e.to_string(),
        })
    }

    /// Its target queue.
    ///
    /// # Errors
    ///
    /// The queue name's error.
    pub fn queue_name(&self) -> Result<QueueName, QueueError> {
        QueueName::new(&self.queue)
    }
}

/// A store that keeps schedules and fires their ticks exactly once (SQLite, PostgreSQL).
pub trait ScheduleStore: Clone + Send + Sync + 'static {
    /// Stores `spec`, its last tick set to `now_ms` (no tick before its creation is sent);
    /// creates its queue when missing.
    fn add_schedule(
        &self,
        spec: &ScheduleSpec,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), ScheduleError>> + Send;

    /// Every schedule, by name.
    fn schedules(&self) -> impl Future<Output = Result<Vec<Schedule>, ScheduleError>> + Send;

    /// Removes it.
    fn remove_schedule(&self, name: &str)
        -> impl Future<Output = Result<(), ScheduleError>> + Send;

    /// Pauses or resumes it.
    fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
    ) -> impl Future<Output = Result<(), ScheduleError>> + Send;

    /// Moves `name`'s last tick to `tick_ms` if it is earlier and the schedule is not paused,
    /// and in the same transaction sends `event` (when given) to `queue`: `Some(msg_id)` (or
    /// `Some(0)` for a skipped tick) when this call took the tick, `None` when another
    /// scheduler had (or the schedule is paused or gone).
    fn fire(
        &self,
        name: &str,
        tick_ms: i64,
        send: Option<(&QueueName, &Event)>,
    ) -> impl Future<Output = Result<Option<i64>, ScheduleError>> + Send;
}
