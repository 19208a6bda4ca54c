//! Group commit: one committer task takes every write that is waiting (sends, deletes,
//! archives, guarded settles), applies them in one transaction (sends to one queue merged
//! into one `pgmq.send_batch`), and answers each caller after `COMMIT`. If one operation
//! fails, the transaction is rolled back and each operation is retried alone, so only the
//! failing caller hears of it; if the commit itself fails, every caller in it does.

use std::collections::HashMap;
use std::time::Duration;

use herald::queue::{QueueError, Settle, Settled};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::error::store;
use crate::listen::channel;

mod worker_batch;
use worker_batch::settles_in_one_statement;

/// One write.
pub(crate) enum Work {
    Send {
        queue: String,
        bodies: Vec<String>,
        delay: Duration,
    },
    Delete {
        queue: String,
        ids: Vec<i64>,
    },
    Archive {
        queue: String,
        ids: Vec<i64>,
    },
    Settle {
        queue: String,
        msg_id: i64,
        read_ct: i32,
        settle: Settle,
        sends: Vec<(String, String)>,
    },
}

impl Work {
    fn queue(&self) -> &str {
        match self {
            Work::Send { queue, .. }
            | Work::Delete { queue, .. }
            | Work::Archive { queue, .. }
            | Work::Settle { queue, .. } => queue,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Work::Send { .. } => "send",
            Work::Delete { .. } => "delete",
            Work::Archive { .. } => "archive",
            Work::Settle { .. } => "settle",
        }
    }
}

/// What a write gave back.
pub(crate) enum Done {
    Ids(Vec<i64>),
    Settled(Settled),
}

struct Pending {
    work: Work,
    reply: oneshot::Sender<Result<Done, QueueError>>,
}

/// The handle that sends writes to the committer task, which ends when the last handle is
/// dropped.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Starts the committer task through `shutdown`: once it is triggered, the task commits
    /// what is already waiting and ends; later writes fail with [`QueueError::Closed`].
    pub(crate) fn start(pool: PgPool, max_batch: usize, shutdown: &herald::Shutdown) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        shutdown.spawn(run(pool, rx, max_batch.max(1), shutdown.clone()));
        Committer { tx }
    }

    /// Applies `work` in the next group commit.
    pub(crate) async fn submit(&self, work: Work) -> Result<Done, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { work, reply })
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }
}

async fn run(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_batch: usize,
    stop: herald::Shutdown,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        // Writes already waiting come first, so a stop never drops one that was submitted.
        let next = tokio::select! {
            biased;
            p = rx.recv() => p,
            () = stop.cancelled() => None,
        };
        let Some(first) = next else {
            break;
        };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let works: Vec<&Work> = batch.iter().map(|p| &p.work).collect();
        match transaction(&pool, &works).await {
            Ok(dones) => {
                for (p, done) in batch.drain(..).zip(dones) {
                    let _ = p.reply.send(Ok(done));
                }
            }
            Err(Failed::Commit(text)) => {
                tracing::warn!("commit failed, {} caller(s) told: {text}", batch.len());
                for p in batch.drain(..) {
                    let e =
                        QueueError::store(p.work.operation(), p.work.queue(), true, text.clone());
                    let _ = p.reply.send(Err(e));
                }
            }
            Err(Failed::Op(e)) if !definite(&e) => {
                // The connection broke mid-batch: whether it committed is unknown, so no
                // operation may run again (a resend could store it twice). Every caller hears.
                tracing::warn!("batch outcome unknown, {} caller(s) told: {e}", batch.len());
                let text = herald::report(&e);
                for p in batch.drain(..) {
                    let e = QueueError::store(
                        p.work.operation(),
                        p.work.queue(),
                        true,
                        format!("outcome unknown: {text}"),
                    );
                    let _ = p.reply.send(Err(e));
                }
            }
            Err(Failed::Op(e)) if batch.len() == 1 => {
                if let Some(p) = batch.pop() {
                    let _ = p.reply.send(Err(e));
                }
            }
            Err(Failed::Op(_)) => {
                // Someone's operation failed: each goes again alone.
                for p in batch.drain(..) {
                    let result = match transaction(&pool, &[&p.work]).await {
                        Ok(mut dones) => dones.pop().ok_or(QueueError::Closed),
                        Err(Failed::Op(e)) => Err(e),
                        Err(Failed::Commit(text)) => Err(QueueError::store(
                            p.work.operation(),
                            p.work.queue(),
                            true,
                            text,
                        )),
                    };
                    let _ = p.reply.send(result);
                }
            }
        }
    }
}

/// Whether an operation's failure is certain to have changed nothing: the server refused a
/// statement (its transaction rolled back), or the queue does not exist. A broken connection
/// is not: the commit may have happened.
fn definite(e: &QueueError) -> bool {
    match e {
        QueueError::NoSuchQueue { .. } | QueueError::InvalidName { .. } => true,
        QueueError::Store { source, .. } => matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(_))
        ),
        _ => false,
    }
}

enum Failed {
    Op(QueueError),
    Commit(String),
}

async fn transaction(pool: &PgPool, works: &[&Work]) -> Result<Vec<Done>, Failed> {
    if let Some(done) = one_statement(pool, works).await {
        return done;
    }
    let mut tx = crate::tx::begin(pool, None)
        .await
        .map_err(|e| Failed::Op(store("begin", "*", e)))?;
    let dones = apply(&mut tx, works).await.map_err(Failed::Op)?;
    tx.commit()
        .await
        .map_err(|e| Failed::Commit(e.to_string()))?;
    Ok(dones)
}

/// Sends to one queue (however many callers), or a lone delete or archive, need one
/// statement, which commits on its own: one round trip instead of BEGIN, the work and COMMIT.
/// `None` when the batch needs a transaction.
async fn one_statement(pool: &PgPool, works: &[&Work]) -> Option<Result<Vec<Done>, Failed>> {
    let first = works.first()?;
    match first {
        Work::Send { queue, delay, .. } => {
            let same = works.iter().all(
                |w| matches!(w, Work::Send { queue: q, delay: d, .. } if q == queue && d == delay),
            );
            if !same {
                return None;
            }
            let bodies: Vec<&str> = works
                .iter()
                .flat_map(|w| match w {
                    Work::Send { bodies, .. } => bodies.iter().map(String::as_str).collect(),
                    _ => Vec::new(),
                })
                .collect();
            // With a traced body, PGMQ's headers column too ($5).
            let headers = crate::headers::of(&bodies);
            let sql = format!(
                "WITH sent AS (
                     SELECT * FROM pgmq.send_batch($1, $2::text[]::jsonb[],{}
                         clock_timestamp() + make_interval(secs => $3)) AS msg_id)
                 SELECT sent.msg_id FROM sent, (SELECT pg_notify($4, '')) AS woken",
                if headers.is_some() {
                    " $5::text[]::jsonb[],"
                } else {
                    ""
                }
            );
            let mut query = sqlx::query_scalar(&sql)
                .bind(queue)
                .bind(&bodies)
                .bind(seconds(*delay))
                .bind(channel(queue));
            if let Some(h) = &headers {
                query = query.bind(h);
            }
            let sent: Result<Vec<i64>, sqlx::Error> = query.fetch_all(pool).await;
            let mut ids = match sent {
                Ok(ids) => ids,
                Err(e) => return Some(Err(Failed::Op(store("send", queue, e)))),
            };
            ids.sort_unstable();
            let mut ids = ids.into_iter();
            let dones = works
                .iter()
                .map(|w| match w {
                    Work::Send { bodies, .. } => {
                        Done::Ids(ids.by_ref().take(bodies.len()).collect())
                    }
                    _ => Done::Ids(Vec::new()),
                })
                .collect();
            Some(Ok(dones))
        }
        Work::Settle { .. } => settles_in_one_statement(pool, works).await,
        Work::Delete { queue, ids } | Work::Archive { queue, ids } if works.len() == 1 => {
            let (op, sql) = match first {
                Work::Delete { .. } => ("delete", "SELECT * FROM pgmq.delete($1, $2)"),
                _ => ("archive", "SELECT * FROM pgmq.archive($1, $2)"),
            };
            let done: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(sql)
                .bind(queue)
                .bind(ids)
                .fetch_all(pool)
                .await;
            Some(
                done.map(|d| vec![Done::Ids(d)])
                    .map_err(|e| Failed::Op(store(op, queue, e))),
            )
        }
        _ => None,
    }
}

/// The CTEs `m` and `arch` of a guarded archive of the rows of `want` (`msg_id`, `read_ct`)
/// from `queue` to its archive: `arch` returns the ids archived; a row whose read count no
/// longer matches is left alone. `queue` is a validated queue name.
fn guarded_archive(queue: &str) -> String {
    format!(
        "m AS (
             DELETE FROM pgmq.\"q_{queue}\" q USING want w
             WHERE q.msg_id = w.msg_id AND q.read_ct = w.read_ct
             RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers),
         arch AS (
             INSERT INTO pgmq.\"a_{queue}\" (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
             SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers FROM m
             RETURNING msg_id)"
    )
}

/// Applies every write in the open transaction; the answers come back in `works` order.
async fn apply(conn: &mut PgConnection, works: &[&Work]) -> Result<Vec<Done>, QueueError> {
    let mut dones: Vec<Option<Done>> = works.iter().map(|_| None).collect();
    // Sends to one queue with one delay become one send_batch.
    let mut groups: HashMap<(&str, Duration), Vec<usize>> = HashMap::new();
    for (i, w) in works.iter().enumerate() {
        if let Work::Send { queue, delay, .. } = w {
            groups.entry((queue.as_str(), *delay)).or_default().push(i);
        }
    }
    let mut notify: Vec<String> = Vec::new();
    for ((queue, delay), members) in groups {
        let bodies: Vec<&str> = members
            .iter()
            .flat_map(|&i| match works[i] {
                Work::Send { bodies, .. } => bodies.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut ids = send_batch(conn, queue, &bodies, delay).await?;
        ids.sort_unstable();
        let mut ids = ids.into_iter();
        for i in members {
            if let Work::Send { bodies, .. } = works[i] {
                dones[i] = Some(Done::Ids(ids.by_ref().take(bodies.len()).collect()));
            }
        }
        notify.push(queue.to_owned());
    }
    // Guarded archives and deletes of one queue: one statement for the whole group, and the
    // sends of the settles it applied one `send_batch` per target queue.
    settle_groups(conn, works, &mut dones, &mut notify).await?;
    for (i, w) in works.iter().enumerate() {
        if dones[i].is_some() {
            continue;
        }
        match w {
            Work::Send { .. } => {}
            Work::Delete { queue, ids } => {
                let done: Vec<i64> = sqlx::query_scalar("SELECT * FROM pgmq.delete($1, $2)")
                    .bind(queue)
                    .bind(ids)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| store("delete", queue, e))?;
                dones[i] = Some(Done::Ids(done));
            }
            Work::Archive { queue, ids } => {
                let done: Vec<i64> = sqlx::query_scalar("SELECT * FROM pgmq.archive($1, $2)")
                    .bind(queue)
                    .bind(ids)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| store("archive", queue, e))?;
                dones[i] = Some(Done::Ids(done));
            }
            Work::Settle {
                queue,
                msg_id,
                read_ct,
                settle,
                sends,
            } => {
                let settled = settle_one(conn, queue, *msg_id, *read_ct, settle, sends).await?;
                if matches!(settled, Settled::Applied { .. }) {
                    notify.extend(sends.iter().map(|(q, _)| q.clone()));
                }
                dones[i] = Some(Done::Settled(settled));
            }
        }
    }
    notify.sort();
    notify.dedup();
    for queue in notify {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel(&queue))
            .execute(&mut *conn)
            .await
            .map_err(|e| store("notify", &queue, e))?;
    }
    Ok(dones
        .into_iter()
        .map(|d| d.unwrap_or(Done::Ids(Vec::new())))
        .collect())
}

/// Settles of one queue that archive (or that delete), two or more of them: one guarded
/// statement for the group (each message matched on its `msg_id` and `read_ct`, so a stale
/// one is refused alone), then the sends of the applied ones, one `send_batch` per target.
/// A batch of N settles is a constant number of statements, not two per settle. Groups whose
/// (`msg_id`, `read_ct`) pairs repeat are left to the one-at-a-time path.
async fn settle_groups(
    conn: &mut PgConnection,
    works: &[&Work],
    dones: &mut [Option<Done>],
    notify: &mut Vec<String>,
) -> Result<(), QueueError> {
    let mut groups: HashMap<(&str, bool), Vec<usize>> = HashMap::new();
    for (i, w) in works.iter().enumerate() {
        if let Work::Settle { queue, settle, .. } = w {
            match settle {
                Settle::Archive => groups.entry((queue.as_str(), true)).or_default().push(i),
                Settle::Delete => groups.entry((queue.as_str(), false)).or_default().push(i),
                Settle::Retry { .. } => {}
            }
        }
    }
    let mut applied: Vec<usize> = Vec::new();
    for ((queue, archive), members) in groups {
        let keys: Vec<(i64, i32)> = members
            .iter()
            .filter_map(|&i| match works[i] {
                Work::Settle {
                    msg_id, read_ct, ..
                } => Some((*msg_id, *read_ct)),
                _ => None,
            })
            .collect();
        let distinct: std::collections::HashSet<&(i64, i32)> = keys.iter().collect();
        if members.len() < 2 || distinct.len() != keys.len() {
            continue;
        }
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let cts: Vec<i32> = keys.iter().map(|k| k.1).collect();
        let sql = if archive {
            format!(
                "WITH want AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS w(msg_id, read_ct)),
                 {}
                 SELECT msg_id FROM arch",
                guarded_archive(queue)
            )
        } else {
            format!(
                "WITH want AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS w(msg_id, read_ct))
                 DELETE FROM pgmq.\"q_{queue}\" q USING want w
                 WHERE q.msg_id = w.msg_id AND q.read_ct = w.read_ct
                 RETURNING q.msg_id"
            )
        };
        let held: std::collections::HashSet<i64> = sqlx::query_scalar::<_, i64>(&sql)
            .bind(&ids)
            .bind(&cts)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| store("settle", queue, e))?
            .into_iter()
            .collect();
        for (&i, (msg_id, _)) in members.iter().zip(&keys) {
            if held.contains(msg_id) {
                applied.push(i);
            } else {
                dones[i] = Some(Done::Settled(Settled::Stale));
            }
        }
    }
    // The applied settles' sends, in `works` order, one send_batch per target queue.
    applied.sort_unstable();
    let mut by_target: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    for &i in &applied {
        if let Work::Settle { sends, .. } = works[i] {
            for (to, body) in sends {
                by_target
                    .entry(to.as_str())
                    .or_default()
                    .push((i, body.as_str()));
            }
        }
    }
    let mut sent: HashMap<usize, Vec<i64>> = HashMap::new();
    for (to, items) in by_target {
        let bodies: Vec<&str> = items.iter().map(|(_, b)| *b).collect();
        let mut ids = send_batch(conn, to, &bodies, Duration::ZERO).await?;
        ids.sort_unstable();
        for ((i, _), id) in items.iter().zip(ids) {
            sent.entry(*i).or_default().push(id);
        }
        notify.push(to.to_owned());
    }
    for i in applied {
        dones[i] = Some(Done::Settled(Settled::Applied {
            sent: sent.remove(&i).unwrap_or_default(),
        }));
    }
    Ok(())
}

pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn send_batch(
    conn: &mut PgConnection,
    queue: &str,
    bodies: &[&str],
    delay: Duration,
) -> Result<Vec<i64>, QueueError> {
    let headers = crate::headers::of(bodies);
    let sql = format!(
        "SELECT * FROM pgmq.send_batch($1, $2::text[]::jsonb[],{}
             clock_timestamp() + make_interval(secs => $3))",
        if headers.is_some() {
            " $4::text[]::jsonb[],"
        } else {
            ""
        }
    );
    let mut query = sqlx::query_scalar(&sql)
        .bind(queue)
        .bind(bodies)
        .bind(seconds(delay));
    if let Some(h) = &headers {
        query = query.bind(h);
    }
    query
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| store("send", queue, e))
}

/// The guarded settle on PGMQ's tables. `queue` and the send targets are validated
/// `QueueName`s, so formatting them into table names is safe.
async fn settle_one(
    conn: &mut PgConnection,
    queue: &str,
    msg_id: i64,
    read_ct: i32,
    settle: &Settle,
    sends: &[(String, String)],
) -> Result<Settled, QueueError> {
    let held: Option<i64> = match settle {
        Settle::Archive => {
            let sql = format!(
                "WITH m AS (DELETE FROM pgmq.\"q_{queue}\" WHERE msg_id = $1 AND read_ct = $2
                     RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
                 INSERT INTO pgmq.\"a_{queue}\" (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
                 SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers FROM m
                 RETURNING msg_id"
            );
            sqlx::query_scalar(&sql)
                .bind(msg_id)
                .bind(read_ct)
                .fetch_optional(&mut *conn)
                .await
        }
        Settle::Delete => {
            let sql = format!(
                "DELETE FROM pgmq.\"q_{queue}\" WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id"
            );
            sqlx::query_scalar(&sql)
                .bind(msg_id)
                .bind(read_ct)
                .fetch_optional(&mut *conn)
                .await
        }
        Settle::Retry { after } => {
            let sql = format!(
                "UPDATE pgmq.\"q_{queue}\" SET vt = clock_timestamp() + make_interval(secs => $3)
                 WHERE msg_id = $1 AND read_ct = $2 RETURNING msg_id"
            );
            sqlx::query_scalar(&sql)
                .bind(msg_id)
                .bind(read_ct)
                .bind(seconds(*after))
                .fetch_optional(&mut *conn)
                .await
        }
    }
    .map_err(|e| store("settle", queue, e))?;
    if held.is_none() {
        return Ok(Settled::Stale);
    }
    let mut sent = Vec::with_capacity(sends.len());
    for (to, body) in sends {
        let id: i64 = sqlx::query_scalar("SELECT * FROM pgmq.send($1, $2::jsonb)")
            .bind(to)
            .bind(body)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| store("send", to, e))?;
        sent.push(id);
    }
    Ok(Settled::Applied { sent })
}
