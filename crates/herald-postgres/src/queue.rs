//! `PgStore`: the durable queue contract on PGMQ's tables and functions; writes go through
//! the group committer (`commit.rs`), reads straight to the pool.

use std::sync::Arc;
use std::time::Duration;

use herald::queue::flow::Policy;
use herald::queue::{
    read_with_wakeup_by, Message, Queue, QueueError, QueueMetrics, QueueName, Settled, Settlement,
};
use herald::Event;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use crate::commit::{seconds, Committer, Done, Work};
use crate::error::store;
use crate::listen::Listener;
use crate::options::{redact, PgOptions, CONNECTION_SETTINGS};
use crate::rows::{message, messages, COLUMNS};
use crate::schema;

/// Connections a store opens, beside its pool, for reads of queues under a policy.
pub const FLOW_READ_CONNECTIONS: u32 = 2;

/// The PostgreSQL queue store. Cheap to clone: clones share the pool and the committer.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// Reads of queues under a policy, on connections of their own (see `connect_with`).
    flow_pool: PgPool,
    policies: crate::flow::PolicyCache,
    committer: Committer,
    listener: Listener,
    shutdown: herald::Shutdown,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Whole seconds, rounded up, as PGMQ's `read` takes them.
fn whole_seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

impl PgStore {
    /// Connects with the defaults, installing PGMQ and Herald's schema when missing.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] naming the URL (password hidden) when it is not a PostgreSQL
    /// URL or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<PgStore, QueueError> {
        PgStore::connect_with(PgOptions::new(url)).await
    }

    /// Connects with these options.
    ///
    /// # Errors
    ///
    /// As [`PgStore::connect`].
    pub async fn connect_with(options: PgOptions) -> Result<PgStore, QueueError> {
        let shown = redact(&options.url);
        if !(options.url.starts_with("postgres://") || options.url.starts_with("postgresql://")) {
            return Err(QueueError::store(
                "connect",
                "*",
                false,
                format!("{shown:?} is not a PostgreSQL URL (expected postgres://...)"),
            ));
        }
        let fail = |e: sqlx::Error| QueueError::Connect {
            store: shown.clone(),
            source: Box::new(e),
        };
        // One connection first, so that a refused or misaddressed server is reported at once
        // with its cause (the pool would retry until its acquire timeout and then say only
        // that it timed out).
        let first = tokio::time::timeout(
            options.connect_timeout,
            <sqlx::PgConnection as sqlx::Connection>::connect(&options.url),
        )
        .await
        .map_err(|_| QueueError::Connect {
            store: shown.clone(),
            source: format!(
                "no answer within {} ms",
                options.connect_timeout.as_millis()
            )
            .into(),
        })?
        .map_err(fail)?;
        let _ = sqlx::Connection::close(first).await;
        let settings = || {
            PgPoolOptions::new()
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::Executor::execute(&mut *conn, CONNECTION_SETTINGS)
                            .await
                            .map(drop)
                    })
                })
                .acquire_timeout(options.connect_timeout)
        };
        let pool = settings()
            .max_connections(options.max_connections.max(2))
            .connect(&options.url)
            .await
            .map_err(fail)?;
        // Reads under a policy take at most FLOW_READ_CONNECTIONS connections of their own,
        // opened at the first such read: each connection plans a queue's read function at its
        // first call (2-10 ms), so a few connections that do nothing else keep those plans
        // warm, where the main pool's ten each planned it anew.
        let flow_pool = settings()
            .max_connections(FLOW_READ_CONNECTIONS)
            .connect_lazy(&options.url)
            .map_err(fail)?;
        schema::ensure(&pool).await?;
        let shutdown = herald::Shutdown::new();
        let listener = Listener::start(&pool, &shutdown).await.map_err(fail)?;
        let committer = Committer::start(pool.clone(), options.max_batch, &shutdown);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                flow_pool,
                policies: crate::flow::PolicyCache::default(),
                committer,
                listener,
                shutdown,
            }),
        })
    }

    /// How long until the queue's next hidden message becomes visible (`otherwise` when it
    /// holds none), at least 1 ms.
    async fn until_next_visible(
        &self,
        queue: &QueueName,
        otherwise: Duration,
    ) -> Result<Duration, QueueError> {
        let sql = format!(
            "SELECT (extract(epoch FROM (min(vt) - clock_timestamp())) * 1000)::float8 FROM pgmq.q_{}",
            queue.as_str()
        );
        let ms: Option<f64> = sqlx::query_scalar(&sql)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| store("read", queue.as_str(), e))?;
        Ok(ms.map_or(otherwise, |ms| {
            Duration::from_millis(ms.clamp(1.0, 86_400_000.0) as u64)
        }))
    }

    /// The [`Shutdown`](herald::Shutdown) its two tasks (the group committer and the
    /// LISTEN connection) run under.
    pub fn shutdown_handle(&self) -> &herald::Shutdown {
        &self.inner.shutdown
    }

    /// Stops the store's tasks: the committer commits what is already waiting and ends, the
    /// listener ends; later writes fail with [`QueueError::Closed`]. Waits up to `within`.
    ///
    /// # Errors
    ///
    /// [`herald::DrainTimeout`] when a task is still running at the bound.
    pub async fn close(&self, within: Duration) -> Result<(), herald::DrainTimeout> {
        self.inner.shutdown.shutdown(within).await
    }

    /// The connection pool, for what Herald does not wrap (and for the raw-pgmq benchmark).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// This process's cache of queue policies.
    pub(crate) fn policies(&self) -> &crate::flow::PolicyCache {
        &self.inner.policies
    }

    /// A read of `queue` under `policy` (see `flow::read`).
    async fn flow_read(
        &self,
        queue: &QueueName,
        policy: &Policy,
        vt: Duration,
        qty: usize,
    ) -> Result<(Vec<Message>, Option<i64>), QueueError> {
        crate::flow::read(
            &self.inner.flow_pool,
            &self.inner.policies,
            queue,
            policy,
            vt,
            qty,
        )
        .await
    }

    /// Sends a raw body (any JSON) with `pgmq.send`, as another producer might; no envelope
    /// check. Prefer [`Queue::send`].
    ///
    /// # Errors
    ///
    /// As [`Queue::send`]; invalid JSON is a store error naming the queue.
    pub async fn send_raw(&self, queue: &QueueName, body: &str) -> Result<i64, QueueError> {
        let id = sqlx::query_scalar("SELECT * FROM pgmq.send($1, $2::jsonb)")
            .bind(queue.as_str())
            .bind(body)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| store("send", queue.as_str(), e))?;
        self.inner.listener.wake(queue.as_str());
        Ok(id)
    }

    async fn submit(&self, work: Work) -> Result<Done, QueueError> {
        self.inner.committer.submit(work).await
    }

    async fn ids(&self, work: Work) -> Result<Vec<i64>, QueueError> {
        match self.submit(work).await? {
            Done::Ids(ids) => Ok(ids),
            Done::Settled(_) => Err(QueueError::Closed),
        }
    }
}

impl Queue for PgStore {
    fn system(&self) -> &'static str {
        "pgmq"
    }

    async fn create(&self, queue: &QueueName) -> Result<(), QueueError> {
        sqlx::query("SELECT pgmq.create($1)")
            .bind(queue.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(|e| store("create", queue.as_str(), e))?;
        // A statement trigger notifies the queue's channel after an INSERT from outside Herald
        // (`pgmq.send` in psql, another language), so it wakes a waiting reader as Herald's
        // own sends do; Herald's connections notify in their own statement and are skipped
        // (`herald.self_notify`, set on connect). The name is validated (lowercase letters,
        // digits, `_`).
        let q = queue.as_str();
        sqlx::raw_sql(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_trigger
                              WHERE tgname = 'herald_notify_insert' AND tgrelid = 'pgmq.q_{q}'::regclass) THEN
                 CREATE TRIGGER herald_notify_insert AFTER INSERT ON pgmq.q_{q}
                   FOR EACH STATEMENT
                   WHEN (current_setting('herald.self_notify', true) IS DISTINCT FROM 'on')
                   EXECUTE FUNCTION herald.notify_insert();
               END IF;
             EXCEPTION WHEN duplicate_object THEN NULL;
             END $$"
        ))
        .execute(&self.inner.pool)
        .await
        .map(drop)
        .map_err(|e| store("create", queue.as_str(), e))
    }

    async fn drop_queue(&self, queue: &QueueName) -> Result<bool, QueueError> {
        // Its policy, key states and flow index go with it in the same statement; then its
        // flow read function (PL/pgSQL does not tie it to the table).
        self.inner.policies.forget(queue.as_str());
        let dropped: bool = sqlx::query_scalar(
            "WITH p AS (DELETE FROM herald.flow_policies WHERE queue = $1),
                  k AS (DELETE FROM herald.flow_keys WHERE queue = $1),
                  i AS (DELETE FROM herald.flow_index WHERE queue = $1)
             SELECT pgmq.drop_queue($1)",
        )
        .bind(queue.as_str())
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| store("drop", queue.as_str(), e))?;
        sqlx::query(&crate::flow_fn::drop_sql(queue.as_str()))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| store("drop", queue.as_str(), e))?;
        Ok(dropped)
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> =
            sqlx::query_scalar("SELECT queue_name::text FROM pgmq.list_queues()")
                .fetch_all(&self.inner.pool)
                .await
                .map_err(|e| store("list", "*", e))?;
        names.sort();
        Ok(names)
    }

    async fn send(
        &self,
        queue: &QueueName,
        event: &Event,
        delay: Duration,
    ) -> Result<i64, QueueError> {
        // Sent from a handler of a traced delivery: the trace goes on, in a publish span
        // that ends with the commit.
        let (continued, _span) = herald::hop::continued("pgmq", queue.as_str(), event);
        let body = continued.as_ref().unwrap_or(event).to_json_string();
        let ids = self
            .ids(Work::Send {
                queue: queue.to_string(),
                bodies: vec![body],
                delay,
            })
            .await?;
        self.inner.listener.wake(queue.as_str());
        ids.first().copied().ok_or(QueueError::Closed)
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        events: &[Event],
        delay: Duration,
    ) -> Result<Vec<i64>, QueueError> {
        let (bodies, spans) = herald::hop::sent_bodies("pgmq", queue.as_str(), events);
        let ids = self
            .ids(Work::Send {
                queue: queue.to_string(),
                bodies,
                delay,
            })
            .await?;
        self.inner.listener.wake(queue.as_str());
        drop(spans);
        Ok(ids)
    }

    async fn read(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
    ) -> Result<Vec<Message>, QueueError> {
        if let Some(policy) = self
            .inner
            .policies
            .policy(&self.inner.pool, queue.as_str())
            .await?
        {
            return self
                .flow_read(queue, &policy, vt, qty)
                .await
                .map(|(m, _)| m);
        }
        // A read only leases its messages (vt, read_ct): its commit need not wait for the
        // WAL flush (`synchronous_commit` off, for this transaction only). Were it lost in a
        // crash, the messages are visible again sooner: a redelivery, which at-least-once
        // allows; and any settle that follows commits synchronously, flushing the WAL (and
        // with it this read) first. One fsync per batch, as the pgmq loop that reads and
        // settles in one transaction pays, instead of two.
        let sql = format!(
            "SELECT {COLUMNS} FROM pgmq.read($1, $2, $3) \
             WHERE set_config('synchronous_commit', 'off', true) = 'off'"
        );
        let rows = sqlx::query(&sql)
            .bind(queue.as_str())
            .bind(whole_seconds(vt))
            .bind(i32::try_from(qty).unwrap_or(i32::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| store("read", queue.as_str(), e))?;
        let mut out = messages(rows, "read", queue.as_str())?;
        out.sort_by_key(|m| m.msg_id);
        Ok(out)
    }

    async fn read_with_poll(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
        max_wait: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        // Every insert into a queue Herald created notifies (its trigger), so an empty read
        // sleeps until a send, the next hidden message's visibility time, or the deadline:
        // no polling in between.
        let Some(policy) = self
            .inner
            .policies
            .policy(&self.inner.pool, queue.as_str())
            .await?
        else {
            return read_with_wakeup_by(
                &self.inner.listener.notify_for(queue.as_str()),
                max_wait,
                || self.until_next_visible(queue, max_wait),
                || self.read(queue, vt, qty),
            )
            .await;
        };
        // Under a policy, visible messages may be held back: settles elsewhere do not notify,
        // so look again every 25 ms, or when the next token comes if sooner.
        let next_token = std::sync::atomic::AtomicI64::new(i64::MIN);
        let ordering = std::sync::atomic::Ordering::Relaxed;
        read_with_wakeup_by(
            &self.inner.listener.notify_for(queue.as_str()),
            max_wait,
            || async {
                let hint = next_token.swap(i64::MIN, ordering);
                Ok(herald::queue::flow::recheck_after(
                    (hint != i64::MIN).then_some(hint),
                    crate::flow::HELD_RECHECK,
                ))
            },
            || async {
                let (messages, hint) = self.flow_read(queue, &policy, vt, qty).await?;
                next_token.store(hint.unwrap_or(i64::MIN), ordering);
                Ok(messages)
            },
        )
        .await
    }

    async fn pop(&self, queue: &QueueName, qty: usize) -> Result<Vec<Message>, QueueError> {
        let sql = format!("SELECT {COLUMNS} FROM pgmq.pop($1, $2)");
        let rows = sqlx::query(&sql)
            .bind(queue.as_str())
            .bind(i32::try_from(qty).unwrap_or(i32::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| store("pop", queue.as_str(), e))?;
        let mut out = messages(rows, "pop", queue.as_str())?;
        out.sort_by_key(|m| m.msg_id);
        Ok(out)
    }

    async fn delete(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        self.ids(Work::Delete {
            queue: queue.to_string(),
            ids: msg_ids.to_vec(),
        })
        .await
    }

    async fn archive(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        self.ids(Work::Archive {
            queue: queue.to_string(),
            ids: msg_ids.to_vec(),
        })
        .await
    }

    async fn set_vt(
        &self,
        queue: &QueueName,
        msg_id: i64,
        vt: Duration,
    ) -> Result<Option<Message>, QueueError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM pgmq.set_vt($1, $2, clock_timestamp() + make_interval(secs => $3))"
        );
        let row = sqlx::query(&sql)
            .bind(queue.as_str())
            .bind(msg_id)
            .bind(seconds(vt))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| store("set_vt", queue.as_str(), e))?;
        row.as_ref()
            .map(message)
            .transpose()
            .map_err(|e| store("set_vt", queue.as_str(), e))
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        // PGMQ truncates (no delete trigger fires): the flow index forgets the queue's rows in
        // the same statement.
        let n: i64 = sqlx::query_scalar(
            "WITH i AS (DELETE FROM herald.flow_index WHERE queue = $1)
             SELECT pgmq.purge_queue($1)",
        )
        .bind(queue.as_str())
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| store("purge", queue.as_str(), e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn metrics(&self, queue: &QueueName) -> Result<QueueMetrics, QueueError> {
        let row = sqlx::query(
            "SELECT queue_length, newest_msg_age_sec, oldest_msg_age_sec, total_messages, queue_visible_length
             FROM pgmq.metrics($1)",
        )
        .bind(queue.as_str())
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| store("metrics", queue.as_str(), e))?;
        let get = |row: &PgRow| -> Result<QueueMetrics, sqlx::Error> {
            Ok(QueueMetrics {
                queue_name: queue.to_string(),
                queue_length: row.try_get("queue_length")?,
                queue_visible_length: row.try_get("queue_visible_length")?,
                newest_msg_age_sec: row
                    .try_get::<Option<i32>, _>("newest_msg_age_sec")?
                    .map(i64::from),
                oldest_msg_age_sec: row
                    .try_get::<Option<i32>, _>("oldest_msg_age_sec")?
                    .map(i64::from),
                total_messages: row.try_get("total_messages")?,
            })
        };
        get(&row).map_err(|e| store("metrics", queue.as_str(), e))
    }

    async fn archived(&self, queue: &QueueName, limit: usize) -> Result<Vec<Message>, QueueError> {
        // A validated QueueName: safe to format into the table name.
        let sql = format!(
            "SELECT {COLUMNS} FROM pgmq.\"a_{}\" ORDER BY msg_id LIMIT $1",
            queue.as_str()
        );
        let rows = sqlx::query(&sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| store("archived", queue.as_str(), e))?;
        messages(rows, "archived", queue.as_str())
    }

    async fn settle(
        &self,
        queue: &QueueName,
        msg_id: i64,
        read_ct: i32,
        settlement: Settlement,
    ) -> Result<Settled, QueueError> {
        let sends = settlement.sends_as_json();
        let targets: Vec<String> = sends.iter().map(|(q, _)| q.clone()).collect();
        let done = self
            .submit(Work::Settle {
                queue: queue.to_string(),
                msg_id,
                read_ct,
                settle: settlement.settle,
                sends,
            })
            .await?;
        for t in targets {
            self.inner.listener.wake(&t);
        }
        match done {
            Done::Settled(s) => Ok(s),
            Done::Ids(_) => Err(QueueError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vt_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
    }
}
