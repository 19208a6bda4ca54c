//! `SqliteStore`: the durable queue contract on one SQLite file, every operation applied by
//! the writer thread (`commit.rs`) inside a group-committed transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herald::queue::{
    read_with_wakeup_by, Message, Queue, QueueError, QueueMetrics, QueueName, Settle, Settled,
    Settlement,
};
use herald::Event;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use crate::commit::Writer;
use crate::error::store;
use crate::options::SqliteOptions;
use crate::rows::{exists, message, micros, now_micros};
use crate::schema;

/// The embedded queue store. Cheap to clone: clones share one file, one writer thread.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    sent: Notify,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn dur_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// Inserts one message; the queue must exist.
pub(crate) fn insert(
    conn: &Connection,
    queue: &str,
    body: &str,
    delay: Duration,
) -> Result<i64, QueueError> {
    let changed = conn
        .prepare_cached("UPDATE herald_queues SET total_sent = total_sent + 1 WHERE name = ?1")
        .and_then(|mut s| s.execute([queue]))
        .map_err(|e| store("send", queue, e))?;
    if changed == 0 {
        return Err(QueueError::NoSuchQueue {
            queue: queue.to_owned(),
        });
    }
    let now = now_micros();
    conn.prepare_cached(
        "INSERT INTO herald_messages (queue, enqueued_at, vt, message) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![queue, now, now + dur_micros(delay), body]))
    .map_err(|e| store("send", queue, e))?;
    Ok(conn.last_insert_rowid())
}

fn take_visible(
    conn: &Connection,
    queue: &str,
    vt: Duration,
    qty: usize,
    delete: bool,
) -> Result<Vec<Message>, QueueError> {
    let now = now_micros();
    let sql = if delete {
        "DELETE FROM herald_messages WHERE msg_id IN (
             SELECT msg_id FROM herald_messages WHERE queue = ?1 AND vt <= ?2
             ORDER BY msg_id LIMIT ?3)
         RETURNING msg_id, read_ct, enqueued_at, vt, message"
    } else {
        "UPDATE herald_messages SET read_ct = read_ct + 1, vt = ?2 + ?4
         WHERE msg_id IN (
             SELECT msg_id FROM herald_messages WHERE queue = ?1 AND vt <= ?2
             ORDER BY msg_id LIMIT ?3)
         RETURNING msg_id, read_ct, enqueued_at, vt, message"
    };
    let qty = i64::try_from(qty).unwrap_or(i64::MAX);
    let mut out: Vec<Message> = if delete {
        conn.prepare_cached(sql).and_then(|mut s| {
            s.query_map(params![queue, now, qty], message)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    } else {
        conn.prepare_cached(sql).and_then(|mut s| {
            s.query_map(params![queue, now, qty, dur_micros(vt)], message)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }
    .map_err(|e| store(if delete { "pop" } else { "read" }, queue, e))?;
    out.sort_by_key(|m| m.msg_id);
    Ok(out)
}

/// Moves one message to the archive, if it is there (and, with `read_ct`, only at that read
/// count); returns whether it moved.
pub(crate) fn archive_one(
    conn: &Connection,
    queue: &str,
    msg_id: i64,
    read_ct: Option<i32>,
) -> Result<bool, QueueError> {
    let taken = conn
        .prepare_cached(
            "DELETE FROM herald_messages WHERE queue = ?1 AND msg_id = ?2
               AND (?3 IS NULL OR read_ct = ?3)
             RETURNING msg_id, read_ct, enqueued_at, vt, message",
        )
        .and_then(|mut s| {
            s.query_row(params![queue, msg_id, read_ct], message)
                .optional()
        })
        .map_err(|e| store("archive", queue, e))?;
    let Some(m) = taken else {
        return Ok(false);
    };
    conn.prepare_cached(
        "INSERT INTO herald_archive (msg_id, queue, read_ct, enqueued_at, vt, archived_at, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.msg_id,
            queue,
            m.read_ct,
            micros(m.enqueued_at.as_datetime()),
            micros(m.vt.as_datetime()),
            now_micros(),
            String::from_utf8_lossy(&m.body),
        ])
    })
    .map_err(|e| store("archive", queue, e))?;
    Ok(true)
}

fn delete_one(
    conn: &Connection,
    queue: &str,
    msg_id: i64,
    read_ct: Option<i32>,
) -> Result<bool, QueueError> {
    conn.prepare_cached(
        "DELETE FROM herald_messages WHERE queue = ?1 AND msg_id = ?2
           AND (?3 IS NULL OR read_ct = ?3)",
    )
    .and_then(|mut s| s.execute(params![queue, msg_id, read_ct]))
    .map(|n| n > 0)
    .map_err(|e| store("delete", queue, e))
}

fn set_vt_one(
    conn: &Connection,
    queue: &str,
    msg_id: i64,
    vt: Duration,
    read_ct: Option<i32>,
) -> Result<Option<Message>, QueueError> {
    conn.prepare_cached(
        "UPDATE herald_messages SET vt = ?3 WHERE queue = ?1 AND msg_id = ?2
           AND (?4 IS NULL OR read_ct = ?4)
         RETURNING msg_id, read_ct, enqueued_at, vt, message",
    )
    .and_then(|mut s| {
        s.query_row(
            params![queue, msg_id, now_micros() + dur_micros(vt), read_ct],
            message,
        )
        .optional()
    })
    .map_err(|e| store("set_vt", queue, e))
}

impl SqliteStore {
    /// Opens (creating when missing) the store a `sqlite://PATH` URL names.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] naming the URL or the file.
    pub async fn open(url: &str) -> Result<SqliteStore, QueueError> {
        SqliteStore::open_with(SqliteOptions::from_url(url)?).await
    }

    /// Opens (creating when missing) the store with these options: WAL, `synchronous =
    /// FULL`, the schema created or checked, and the writer thread started.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`] naming the file: its directory cannot be made, it is not a
    /// SQLite database, or its schema version is not this Herald's.
    pub async fn open_with(options: SqliteOptions) -> Result<SqliteStore, QueueError> {
        let path = options.path.clone();
        let shown = path.display().to_string();
        let fail = |what: String| QueueError::store("open", "*", false, format!("{shown}: {what}"));
        let conn = tokio::task::spawn_blocking(move || open_conn(&options))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(fail)?;
        let writer = Writer::start(conn, 512, "herald-sqlite-writer".into())
            .map_err(|e| QueueError::store("open", "*", false, e))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                sent: Notify::new(),
                path,
            }),
        })
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// Wakes the reads waiting for a message (after a commit that sent some).
    pub(crate) fn notify_sent(&self) {
        self.inner.sent.notify_waiters();
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sends a raw body, as another producer (or a test of bad input) might: it is stored
    /// as given, with no envelope check. Prefer [`Queue::send`].
    ///
    /// # Errors
    ///
    /// As [`Queue::send`].
    pub async fn send_raw(&self, queue: &QueueName, body: &str) -> Result<i64, QueueError> {
        let (q, body) = (queue.to_string(), body.to_owned());
        let id = self
            .inner
            .writer
            .run("send", queue.as_str(), move |c| {
                insert(c, &q, &body, Duration::ZERO)
            })
            .await?;
        self.inner.sent.notify_waiters();
        Ok(id)
    }

    pub(crate) async fn run<T, F>(
        &self,
        operation: &'static str,
        queue: &QueueName,
        f: F,
    ) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, QueueError> + Send + 'static,
    {
        let q = queue.to_string();
        self.inner
            .writer
            .run(operation, queue.as_str(), move |c| f(c, &q))
            .await
    }
}

fn open_conn(options: &SqliteOptions) -> Result<Connection, String> {
    if let Some(dir) = options.path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create its directory: {e}"))?;
        }
    }
    let conn = Connection::open(&options.path).map_err(|e| e.to_string())?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| format!("not a usable SQLite database: {e}"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot switch to WAL mode (got {mode})"));
    }
    // Temporary files in memory: SQLite spilled the group commit's savepoint journal to one
    // past 64 KiB, a write call per page (30 KB written per keyed step under a flow policy, 19
    // KB with this; see docs/architecture.md). A crash needs none of it: the WAL has it all.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )
    .map_err(|e| e.to_string())?;
    conn.set_prepared_statement_cache_capacity(64);
    schema::ensure(&conn)?;
    Ok(conn)
}

/// How often an empty read looks again for messages other processes sent (their sends cannot
/// wake it) or that a policy held back.
const RECHECK: Duration = Duration::from_millis(50);

/// No token hint.
const NO_TOKEN: i64 = i64::MIN;

impl SqliteStore {
    /// A read, and when the next token comes if a policy's rate held messages back.
    async fn read_hinted(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
    ) -> Result<(Vec<Message>, Option<i64>), QueueError> {
        // A read's changes are its lease only: committed without waiting for the disk.
        let q = queue.to_string();
        self.inner
            .writer
            .run_lease("read", queue.as_str(), move |c| {
                exists(c, &q)?;
                match crate::flow::policy_in(c, &q)? {
                    None => take_visible(c, &q, vt, qty, false).map(|m| (m, None)),
                    Some(policy) => crate::flow::read_in(c, &q, &policy, vt, qty),
                }
            })
            .await
    }
}

impl Queue for SqliteStore {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn create(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.run("create", queue, |c, q| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO herald_queues (name, created_at) VALUES (?1, ?2)",
            )
            .and_then(|mut s| s.execute(params![q, now_micros()]))
            .map(drop)
            .map_err(|e| store("create", q, e))
        })
        .await
    }

    async fn drop_queue(&self, queue: &QueueName) -> Result<bool, QueueError> {
        self.run("drop", queue, |c, q| {
            let n = c
                .execute("DELETE FROM herald_queues WHERE name = ?1", [q])
                .map_err(|e| store("drop", q, e))?;
            c.execute("DELETE FROM herald_messages WHERE queue = ?1", [q])
                .and_then(|_| c.execute("DELETE FROM herald_archive WHERE queue = ?1", [q]))
                .and_then(|_| c.execute("DELETE FROM herald_flow_policies WHERE queue = ?1", [q]))
                .and_then(|_| c.execute("DELETE FROM herald_flow_keys WHERE queue = ?1", [q]))
                .map_err(|e| store("drop", q, e))?;
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<String>, QueueError> {
        self.inner
            .writer
            .run("list", "*", |c| {
                c.prepare_cached("SELECT name FROM herald_queues ORDER BY name")
                    .and_then(|mut s| {
                        s.query_map([], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<String>>>()
                    })
                    .map_err(|e| store("list", "*", e))
            })
            .await
    }

    async fn send(
        &self,
        queue: &QueueName,
        event: &Event,
        delay: Duration,
    ) -> Result<i64, QueueError> {
        // Sent from a handler of a traced delivery: the trace goes on, in a publish span
        // that ends with the commit.
        let (continued, _span) = herald::hop::continued("sqlite", queue.as_str(), event);
        let body = continued.as_ref().unwrap_or(event).to_json_string();
        let id = self
            .run("send", queue, move |c, q| insert(c, q, &body, delay))
            .await?;
        self.inner.sent.notify_waiters();
        Ok(id)
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        events: &[Event],
        delay: Duration,
    ) -> Result<Vec<i64>, QueueError> {
        let (bodies, spans) = herald::hop::sent_bodies("sqlite", queue.as_str(), events);
        let ids = self
            .run("send_batch", queue, move |c, q| {
                bodies.iter().map(|b| insert(c, q, b, delay)).collect()
            })
            .await?;
        self.inner.sent.notify_waiters();
        drop(spans);
        Ok(ids)
    }

    async fn read(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
    ) -> Result<Vec<Message>, QueueError> {
        self.read_hinted(queue, vt, qty).await.map(|(m, _)| m)
    }

    async fn read_with_poll(
        &self,
        queue: &QueueName,
        vt: Duration,
        qty: usize,
        max_wait: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        // Under a policy with a rate, an empty read says when the next token comes: the next
        // look is then, not a whole recheck later.
        let next_token = std::sync::atomic::AtomicI64::new(NO_TOKEN);
        let ordering = std::sync::atomic::Ordering::Relaxed;
        read_with_wakeup_by(
            &self.inner.sent,
            max_wait,
            || async {
                let hint = next_token.swap(NO_TOKEN, ordering);
                Ok(herald::queue::flow::recheck_after(
                    (hint != NO_TOKEN).then_some(hint),
                    RECHECK,
                ))
            },
            || async {
                let (messages, hint) = self.read_hinted(queue, vt, qty).await?;
                next_token.store(hint.unwrap_or(NO_TOKEN), ordering);
                Ok(messages)
            },
        )
        .await
    }

    async fn pop(&self, queue: &QueueName, qty: usize) -> Result<Vec<Message>, QueueError> {
        self.run("pop", queue, move |c, q| {
            exists(c, q)?;
            take_visible(c, q, Duration::ZERO, qty, true)
        })
        .await
    }

    async fn delete(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        let ids = msg_ids.to_vec();
        self.run("delete", queue, move |c, q| {
            exists(c, q)?;
            let mut done = Vec::new();
            for id in ids {
                if delete_one(c, q, id, None)? {
                    done.push(id);
                }
            }
            Ok(done)
        })
        .await
    }

    async fn archive(&self, queue: &QueueName, msg_ids: &[i64]) -> Result<Vec<i64>, QueueError> {
        let ids = msg_ids.to_vec();
        self.run("archive", queue, move |c, q| {
            exists(c, q)?;
            let mut done = Vec::new();
            for id in ids {
                if archive_one(c, q, id, None)? {
                    done.push(id);
                }
            }
            Ok(done)
        })
        .await
    }

    async fn set_vt(
        &self,
        queue: &QueueName,
        msg_id: i64,
        vt: Duration,
    ) -> Result<Option<Message>, QueueError> {
        self.run("set_vt", queue, move |c, q| {
            exists(c, q)?;
            set_vt_one(c, q, msg_id, vt, None)
        })
        .await
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64, QueueError> {
        self.run("purge", queue, |c, q| {
            exists(c, q)?;
            c.execute("DELETE FROM herald_messages WHERE queue = ?1", [q])
                .map(|n| n as u64)
                .map_err(|e| store("purge", q, e))
        })
        .await
    }

    async fn metrics(&self, queue: &QueueName) -> Result<QueueMetrics, QueueError> {
        self.run("metrics", queue, |c, q| {
            let total: i64 = c
                .query_row(
                    "SELECT total_sent FROM herald_queues WHERE name = ?1",
                    [q],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| store("metrics", q, e))?
                .ok_or_else(|| QueueError::NoSuchQueue {
                    queue: q.to_owned(),
                })?;
            let now = now_micros();
            let (len, visible, newest, oldest): (i64, i64, Option<i64>, Option<i64>) = c
                .query_row(
                    "SELECT count(*), coalesce(sum(vt <= ?2), 0), max(enqueued_at), min(enqueued_at)
                     FROM herald_messages WHERE queue = ?1",
                    params![q, now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(|e| store("metrics", q, e))?;
            let age = |t: i64| (now - t) / 1_000_000;
            Ok(QueueMetrics {
                queue_name: q.to_owned(),
                queue_length: len,
                queue_visible_length: visible,
                newest_msg_age_sec: newest.map(age),
                oldest_msg_age_sec: oldest.map(age),
                total_messages: total,
            })
        })
        .await
    }

    async fn archived(&self, queue: &QueueName, limit: usize) -> Result<Vec<Message>, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("archived", queue, move |c, q| {
            exists(c, q)?;
            c.prepare_cached(
                "SELECT msg_id, read_ct, enqueued_at, vt, message FROM herald_archive
                 WHERE queue = ?1 ORDER BY msg_id LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![q, limit], message)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| store("archived", q, e))
        })
        .await
    }

    async fn settle(
        &self,
        queue: &QueueName,
        msg_id: i64,
        read_ct: i32,
        settlement: Settlement,
    ) -> Result<Settled, QueueError> {
        let sends = settlement.sends_as_json();
        let any_sent = !sends.is_empty();
        let settle = settlement.settle;
        let outcome = self
            .run("settle", queue, move |c, q| {
                exists(c, q)?;
                let held = match settle {
                    Settle::Archive => archive_one(c, q, msg_id, Some(read_ct))?,
                    Settle::Delete => delete_one(c, q, msg_id, Some(read_ct))?,
                    Settle::Retry { after } => {
                        set_vt_one(c, q, msg_id, after, Some(read_ct))?.is_some()
                    }
                };
                if !held {
                    return Ok(Settled::Stale);
                }
                let mut sent = Vec::with_capacity(sends.len());
                for (to, body) in &sends {
                    sent.push(insert(c, to, body, Duration::ZERO)?);
                }
                Ok(Settled::Applied { sent })
            })
            .await?;
        if any_sent {
            self.inner.sent.notify_waiters();
        }
        Ok(outcome)
    }
}
