//! Schedules on SQLite (`herald_schedules`): a tick is fired by moving `last_tick` forward
//! and sending its event in one writer transaction, so two schedulers on one file never both
//! send it.

use herald::queue::{QueueError, QueueName};
use herald::schedule::{Schedule, ScheduleError, ScheduleSpec, ScheduleStore};
use herald::Event;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::store;
use crate::queue::{insert, SqliteStore};

fn read_all(c: &Connection) -> Result<Vec<(String, String, bool, i64)>, QueueError> {
    c.prepare_cached("SELECT name, spec, paused, last_tick FROM herald_schedules ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?))
            })?
            .collect()
        })
        .map_err(|e| store("schedules", "*", e))
}

fn create_queue(c: &Connection, queue: &str, now_ms: i64) -> Result<(), QueueError> {
    c.prepare_cached("INSERT OR IGNORE INTO herald_queues (name, created_at) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![queue, now_ms.saturating_mul(1000)]))
        .map(drop)
        .map_err(|e| store("create", queue, e))
}

/// Runs `f`; a [`ScheduleError`] on the `Ok` side was found before anything was written.
async fn run<T: Send + 'static>(
    s: &SqliteStore,
    operation: &'static str,
    f: impl FnOnce(&Connection) -> Result<Result<T, ScheduleError>, QueueError> + Send + 'static,
) -> Result<T, ScheduleError> {
    s.writer().run(operation, "*", f).await?
}

impl ScheduleStore for SqliteStore {
    async fn add_schedule(&self, spec: &ScheduleSpec, now_ms: i64) -> Result<(), ScheduleError> {
        herald::schedule::check_name(&spec.name)?;
        let queue = spec.queue_name()?;
        let text = spec.to_json();
        let name = spec.name.clone();
        run(self, "add schedule", move |c| {
            let taken = c
                .prepare_cached("SELECT 1 FROM herald_schedules WHERE name = ?1")
                .and_then(|mut s| s.query_row([&name], |_| Ok(())).optional())
                .map_err(|e| store("add schedule", "*", e))?;
            if taken.is_some() {
                return Ok(Err(ScheduleError::NameTaken { name }));
            }
            create_queue(c, queue.as_str(), now_ms)?;
            c.prepare_cached("INSERT INTO herald_schedules (name, spec, paused, last_tick) VALUES (?1, ?2, 0, ?3)")
                .and_then(|mut s| s.execute(params![name, text, now_ms]))
                .map_err(|e| store("add schedule", "*", e))?;
            Ok(Ok(()))
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, ScheduleError> {
        let rows = run(self, "schedules", |c| read_all(c).map(Ok)).await?;
        rows.into_iter()
            .map(|(name, spec, paused, last_tick_ms)| {
                let spec = ScheduleSpec::from_json(&name, &spec)?;
                Ok(Schedule {
                    spec,
                    paused,
                    last_tick_ms,
                })
            })
            .collect()
    }

    async fn remove_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let name = name.to_owned();
        run(self, "remove schedule", move |c| {
            let n = c
                .prepare_cached("DELETE FROM herald_schedules WHERE name = ?1")
                .and_then(|mut s| s.execute([&name]))
                .map_err(|e| store("remove schedule", "*", e))?;
            Ok(if n == 0 {
                Err(ScheduleError::NoSuchSchedule { name })
            } else {
                Ok(())
            })
        })
        .await
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<(), ScheduleError> {
        let name = name.to_owned();
        run(self, "pause schedule", move |c| {
            let n = c
                .prepare_cached("UPDATE herald_schedules SET paused = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, i64::from(paused)]))
                .map_err(|e| store("pause schedule", "*", e))?;
            Ok(if n == 0 {
                Err(ScheduleError::NoSuchSchedule { name })
            } else {
                Ok(())
            })
        })
        .await
    }

    async fn fire(
        &self,
        name: &str,
        tick_ms: i64,
        send: Option<(&QueueName, &Event)>,
    ) -> Result<Option<i64>, ScheduleError> {
        let name = name.to_owned();
        let send = send.map(|(q, e)| (q.to_string(), e.to_json_string()));
        let sent = run(self, "fire schedule", move |c| {
            let moved = c
                .prepare_cached(
                    "UPDATE herald_schedules SET last_tick = ?2 WHERE name = ?1 AND last_tick < ?2 AND paused = 0",
                )
                .and_then(|mut s| s.execute(params![name, tick_ms]))
                .map_err(|e| store("fire schedule", "*", e))?;
            if moved == 0 {
                return Ok(Ok(None));
            }
            match send {
                // An error here rolls the moved tick back with the send.
                Some((queue, body)) => insert(c, &queue, &body, std::time::Duration::ZERO).map(|id| Ok(Some(id))),
                None => Ok(Ok(Some(0))),
            }
        })
        .await?;
        if matches!(sent, Some(id) if id > 0) {
            self.notify_sent();
        }
        Ok(sent)
    }
}
