//! Schedules on PostgreSQL (`herald.schedules`): a tick is fired by moving `last_tick`
//! forward (a compare-and-set on the row) and sending its event with `pgmq.send` in one
//! transaction, so two schedulers never both send it: the second waits on the row lock, then
//! finds the tick taken.

use herald::queue::Queue;
use herald::queue::QueueName;
use herald::schedule::{Schedule, ScheduleError, ScheduleSpec, ScheduleStore};
use herald::Event;

use crate::error::store;
use crate::listen::channel;
use crate::queue::PgStore;

impl ScheduleStore for PgStore {
    async fn add_schedule(&self, spec: &ScheduleSpec, now_ms: i64) -> Result<(), ScheduleError> {
        herald::schedule::check_name(&spec.name)?;
        let queue = spec.queue_name()?;
        let text = spec.to_json();
        // The queue first (idempotent): a schedule never points at a queue that is not there.
        self.create(&queue).await?;
        let added = sqlx::query(
            "INSERT INTO herald.schedules (name, spec, paused, last_tick) VALUES ($1, $2::jsonb, false, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&spec.name)
        .bind(text)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(|e| store("add schedule", "*", e))?;
        if added.rows_affected() == 0 {
            return Err(ScheduleError::NameTaken {
                name: spec.name.clone(),
            });
        }
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, ScheduleError> {
        let rows: Vec<(String, String, bool, i64)> = sqlx::query_as(
            "SELECT name, spec::text, paused, last_tick FROM herald.schedules ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| store("schedules", "*", e))?;
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
        let done = sqlx::query("DELETE FROM herald.schedules WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(|e| store("remove schedule", "*", e))?;
        if done.rows_affected() == 0 {
            return Err(ScheduleError::NoSuchSchedule { name: name.into() });
        }
        Ok(())
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<(), ScheduleError> {
        let done = sqlx::query("UPDATE herald.schedules SET paused = $2 WHERE name = $1")
            .bind(name)
            .bind(paused)
            .execute(self.pool())
            .await
            .map_err(|e| store("pause schedule", "*", e))?;
        if done.rows_affected() == 0 {
            return Err(ScheduleError::NoSuchSchedule { name: name.into() });
        }
        Ok(())
    }

    async fn fire(
        &self,
        name: &str,
        tick_ms: i64,
        send: Option<(&QueueName, &Event)>,
    ) -> Result<Option<i64>, ScheduleError> {
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| store("fire schedule", "*", e))?;
        let moved = sqlx::query(
            "UPDATE herald.schedules SET last_tick = $2 WHERE name = $1 AND last_tick < $2 AND NOT paused",
        )
        .bind(name)
        .bind(tick_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| store("fire schedule", "*", e))?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        let id = match send {
            Some((queue, event)) => {
                let q = queue.as_str();
                let id: i64 = sqlx::query_scalar("SELECT * FROM pgmq.send($1, $2::jsonb)")
                    .bind(q)
                    .bind(event.to_json_string())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| store("fire schedule", q, e))?;
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(channel(q))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| store("notify", q, e))?;
                id
            }
            None => 0,
        };
        tx.commit()
            .await
            .map_err(|e| store("fire schedule (commit)", "*", e))?;
        Ok(Some(id))
    }
}
