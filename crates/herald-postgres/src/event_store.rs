//! The event store contract on PostgreSQL (`herald.events`). Appends are serialised by a
//! transaction-level advisory lock, so global positions are handed out in commit order and a
//! follower of the log never skips an event that commits later with a lower position.

use herald::store::{
    condition_holds, Appended, EventStore, KeyedWrite, StoreError, StoredEvent, StreamName,
    StreamWrite, WriteCondition,
};
use herald::{Event, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

use crate::queue::PgStore;

pub(crate) fn backend(operation: &'static str, e: sqlx::Error) -> StoreError {
    let transient = matches!(
        &e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    );
    StoreError::Backend {
        operation,
        transient,
        source: Box::new(e),
    }
}

fn stored(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    let at: OffsetDateTime = row.try_get("recorded_at")?;
    let body: String = row.try_get("body")?;
    Ok(StoredEvent {
        global_position: row.try_get("global_position")?,
        stream: row.try_get("stream")?,
        position: row.try_get("position")?,
        recorded_at: Timestamp::from_datetime(at),
        body: body.into_bytes(),
    })
}

const COLUMNS: &str = "global_position, stream, position, recorded_at, body::text AS body";

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

impl PgStore {
    async fn select(
        &self,
        sql: &str,
        bind: impl FnOnce(
            sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = bind(sqlx::query(sql))
            .fetch_all(self.pool())
            .await
            .map_err(|e| backend("read events", e))?;
        rows.iter()
            .map(stored)
            .collect::<Result<_, _>>()
            .map_err(|e| backend("read events", e))
    }
}

/// An append inside the caller's transaction `tx` (which must commit for it to count): the
/// append lock, the condition, the rows.
pub(crate) async fn append_in(
    tx: &mut sqlx::PgConnection,
    stream: &StreamName,
    bodies: &[String],
    condition: WriteCondition,
) -> Result<Appended, StoreError> {
    // One append at a time: global positions follow commit order. A client paused while
    // holding the lock is cut off after 1 s idle, so it cannot stall every writer.
    sqlx::query(
        "SELECT set_config('idle_in_transaction_session_timeout', '1s', true),
                pg_advisory_xact_lock(hashtext('herald.events.append'))",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| backend("append", e))?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT max(position) FROM herald.events WHERE stream = $1")
            .bind(stream.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("append", e))?;
    if !condition_holds(condition, last) {
        return Err(StoreError::wrong_position(stream, condition, last));
    }
    // One statement for the whole append: positions follow the bodies' order, and so do the
    // global positions (the rows are inserted in that order, each taking the next value).
    let first = last.map_or(0, |l| l + 1);
    let globals: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO herald.events (stream, category, position, body)
         SELECT $1, $2, $3 + t.o - 1, t.b::jsonb FROM unnest($4::text[]) WITH ORDINALITY AS t(b, o)
         ORDER BY t.o
         RETURNING global_position",
    )
    .bind(stream.as_str())
    .bind(stream.category())
    .bind(first)
    .bind(bodies)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| backend("append", e))?;
    let position = first + i64::try_from(bodies.len()).unwrap_or(i64::MAX) - 1;
    let global = globals.into_iter().max().unwrap_or(0);
    Ok(Appended {
        position,
        global_position: global,
    })
}

impl EventStore for PgStore {
    async fn append_all(&self, writes: &[StreamWrite]) -> Result<Vec<Appended>, StoreError> {
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| backend("append", e))?;
        // Each event continues the current trace, in a publish span that ends with the commit.
        let mut spans = Vec::new();
        let result = async {
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                let (bodies, s) = herald::hop::sent_bodies("herald", w.stream.as_str(), &w.events);
                spans.extend(s);
                out.push(append_in(&mut tx, &w.stream, &bodies, w.condition).await?);
            }
            Ok(out)
        }
        .await;
        // A write whose condition fails holds the append lock: rolled back at once.
        crate::tx::finish(tx, result, |e| backend("append (commit)", e)).await
    }

    async fn append(
        &self,
        stream: &StreamName,
        events: &[Event],
        condition: WriteCondition,
    ) -> Result<Appended, StoreError> {
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| backend("append", e))?;
        // Appended by a handler of a traced delivery: the trace goes on, in a publish span
        // per event that ends with the commit.
        let (bodies, _spans) = herald::hop::sent_bodies("herald", stream.as_str(), events);
        let result = append_in(&mut tx, stream, &bodies, condition).await;
        // A condition that fails holds the append lock: rolled back at once.
        crate::tx::finish(tx, result, |e| backend("append (commit)", e)).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM herald.events WHERE stream = $1 AND position >= $2 ORDER BY position LIMIT $3");
        self.select(&sql, |q| {
            q.bind(stream.to_string()).bind(from).bind(limit(max))
        })
        .await
    }

    async fn append_once(
        &self,
        stream: &StreamName,
        event: &Event,
        key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| backend("append", e))?;
        let (body, _span) = herald::hop::sent_body("herald", stream.as_str(), event);
        let result = async {
            // A second inbox with the same key waits on the row, then finds it taken.
            let new = sqlx::query(
                "INSERT INTO herald.event_keys (key, global_position) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("append", e))?;
            if new.rows_affected() == 0 {
                return Ok(None);
            }
            let done = append_in(&mut tx, stream, &[body], WriteCondition::Any).await?;
            sqlx::query("UPDATE herald.event_keys SET global_position = $2 WHERE key = $1")
                .bind(key)
                .bind(done.global_position)
                .execute(&mut *tx)
                .await
                .map_err(|e| backend("append", e))?;
            Ok(Some(done))
        }
        .await;
        // An error after the append lock was taken rolls back at once: dropped, the
        // transaction would keep the lock (every append waiting) until its connection's next use.
        crate::tx::finish(tx, result, |e| backend("append (commit)", e)).await
    }

    async fn append_once_all(&self, writes: &[KeyedWrite]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| backend("append", e))?;
        // Each event continues the current trace, in a publish span that ends with the commit.
        let mut spans = Vec::new();
        let result = async {
            let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
            // The keys not stored before, taken in this transaction (a second inbox waits on them).
            let new: std::collections::HashSet<String> = sqlx::query_scalar(
                "INSERT INTO herald.event_keys (key, global_position)
                 SELECT k, 0 FROM unnest($1::text[]) AS k ON CONFLICT (key) DO NOTHING RETURNING key",
            )
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| backend("append", e))?
            .into_iter()
            .collect();
            let mut out = vec![false; writes.len()];
            let mut taken = std::collections::HashSet::new();
            // Each stream's events in batch order, streams in order of first appearance.
            let mut streams: Vec<(&StreamName, Vec<usize>)> = Vec::new();
            for (i, w) in writes.iter().enumerate() {
                if !new.contains(&w.key) || !taken.insert(w.key.as_str()) {
                    continue;
                }
                out[i] = true;
                match streams.iter_mut().find(|(s, _)| *s == &w.stream) {
                    Some((_, at)) => at.push(i),
                    None => streams.push((&w.stream, vec![i])),
                }
            }
            let (mut done_keys, mut done_globals) = (Vec::new(), Vec::new());
            for (stream, at) in &streams {
                let bodies: Vec<String> = at
                    .iter()
                    .map(|&i| {
                        let (body, span) =
                            herald::hop::sent_body("herald", stream.as_str(), &writes[i].event);
                        spans.push(span);
                        body
                    })
                    .collect();
                let appended = append_in(&mut tx, stream, &bodies, WriteCondition::Any).await?;
                let first = appended.global_position - i64::try_from(at.len()).unwrap_or(0) + 1;
                for (k, &i) in at.iter().enumerate() {
                    done_keys.push(writes[i].key.as_str());
                    done_globals.push(first + i64::try_from(k).unwrap_or(0));
                }
            }
            sqlx::query(
                "UPDATE herald.event_keys AS k SET global_position = u.g
                 FROM unnest($1::text[], $2::bigint[]) AS u(key, g) WHERE k.key = u.key",
            )
            .bind(&done_keys)
            .bind(&done_globals)
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("append", e))?;
            Ok(out)
        }
        .await;
        // As `append_once`: an error rolls back at once, freeing the append lock.
        crate::tx::finish(tx, result, |e| backend("append (commit)", e)).await
    }

    async fn count_after(&self, category: &str, after: i64) -> Result<u64, StoreError> {
        let category = StreamName::category_name(category)?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM herald.events WHERE category = $1 AND global_position > $2",
        )
        .bind(category)
        .bind(after)
        .fetch_one(self.pool())
        .await
        .map_err(|e| backend("count events", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn read_category(
        &self,
        category: &str,
        from: i64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let category = StreamName::category_name(category)?;
        let sql = format!("SELECT {COLUMNS} FROM herald.events WHERE category = $1 AND global_position >= $2 ORDER BY global_position LIMIT $3");
        self.select(&sql, |q| {
            q.bind(category.to_owned()).bind(from).bind(limit(max))
        })
        .await
    }

    async fn read_all(&self, from: i64, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM herald.events WHERE global_position >= $1 ORDER BY global_position LIMIT $2");
        self.select(&sql, |q| q.bind(from).bind(limit(max))).await
    }

    async fn streams(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stream, max(position) FROM herald.events GROUP BY stream ORDER BY stream",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| backend("list streams", e))?;
        Ok(rows)
    }

    async fn checkpoint(
        &self,
        consumer: &str,
        source: &str,
    ) -> Result<Option<(i64, u64)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT position, epoch FROM herald.checkpoints WHERE consumer = $1 AND source = $2",
        )
        .bind(consumer)
        .bind(source)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| backend("read checkpoint", e))?;
        Ok(row.map(|(p, e)| (p, u64::try_from(e).unwrap_or(0))))
    }

    async fn save_checkpoint(
        &self,
        consumer: &str,
        source: &str,
        position: i64,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let e = i64::try_from(epoch).unwrap_or(i64::MAX);
        // One statement: written only if neither the stored checkpoint nor the source's
        // allocation carries a newer epoch.
        let written: Option<i64> = sqlx::query_scalar(
            "WITH alloc AS (SELECT coalesce(max(epoch), 0) AS e FROM herald.allocations WHERE grp = $1 AND source = $2)
             INSERT INTO herald.checkpoints AS c (consumer, source, position, epoch)
             SELECT $1, $2, $3, $4 FROM alloc WHERE alloc.e <= $4
             ON CONFLICT (consumer, source) DO UPDATE SET position = EXCLUDED.position, epoch = EXCLUDED.epoch
             WHERE c.epoch <= EXCLUDED.epoch
             RETURNING epoch",
        )
        .bind(consumer)
        .bind(source)
        .bind(position)
        .bind(e)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| backend("save checkpoint", e))?;
        if written.is_some() {
            return Ok(());
        }
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT max(epoch) FROM (SELECT epoch FROM herald.checkpoints WHERE consumer = $1 AND source = $2
             UNION ALL SELECT epoch FROM herald.allocations WHERE grp = $1 AND source = $2) AS e",
        )
        .bind(consumer)
        .bind(source)
        .fetch_one(self.pool())
        .await
        .map_err(|e| backend("save checkpoint", e))?;
        let current = current.map_or(0, |e| u64::try_from(e).unwrap_or(0));
        Err(StoreError::stale_epoch(consumer, source, epoch, current))
    }
}
