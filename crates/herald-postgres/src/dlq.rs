//! Dead-letter places on PostgreSQL: PGMQ's `{queue}_dlq` queues, the replay count of each
//! letter's body in `herald.dlq_replays`, and every replay or abandon in one transaction with
//! its audit append to `herald-audit`. Letters are taken `FOR UPDATE SKIP LOCKED`, so two
//! operators replaying one place at once never take the same letter.

use std::collections::{BTreeMap, HashMap, HashSet};

use herald::dlq::{
    decide, taken, Action, DeadLetterStore, DlqError, Letter, Operator, Pick, Place, Report, Step,
    AUDIT_STREAM, DLQ_SUFFIX,
};
use herald::queue::{QueueError, QueueName};
use herald::store::{StreamName, WriteCondition};
use sqlx::{PgConnection, Row};

use crate::error::store;
use crate::event_store::append_in;
use crate::listen::channel;
use crate::queue::PgStore;

async fn queue_exists(c: &mut PgConnection, queue: &str) -> Result<bool, QueueError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)")
        .bind(queue)
        .fetch_one(c)
        .await
        .map_err(|e| store("dlq", queue, e))
}

/// The letters of `rows`, with their replay counts (one query for all).
async fn letters_of(
    c: &mut PgConnection,
    place: &QueueName,
    rows: Vec<(i64, String)>,
) -> Result<Vec<Letter>, QueueError> {
    let letters: Vec<Letter> = rows
        .into_iter()
        .map(|(id, body)| Letter::parse(place, id, body.as_bytes(), 0))
        .collect();
    let prints: Vec<String> = letters.iter().map(Letter::fingerprint).collect();
    let counts: Vec<(String, i32)> = sqlx::query_as(
        "SELECT fingerprint, replays FROM herald.dlq_replays WHERE place = $1 AND fingerprint = ANY($2)",
    )
    .bind(place.as_str())
    .bind(&prints)
    .fetch_all(&mut *c)
    .await
    .map_err(|e| store("dlq replays", place.as_str(), e))?;
    let counts: HashMap<String, u32> = counts
        .into_iter()
        .map(|(f, n)| (f, u32::try_from(n).unwrap_or(0)))
        .collect();
    Ok(letters
        .into_iter()
        .zip(prints)
        .map(|(letter, print)| Letter {
            replays: counts.get(&print).copied().unwrap_or(0),
            ..letter
        })
        .collect())
}

/// `(msg_id, body)` rows of `place` that `pick` names; with `lock`, locked for this
/// transaction and skipping rows another holds.
async fn rows(
    c: &mut PgConnection,
    place: &QueueName,
    pick: &Pick,
    lock: bool,
) -> Result<Vec<(i64, String)>, QueueError> {
    let locking = if lock { " FOR UPDATE SKIP LOCKED" } else { "" };
    let q = place.as_str();
    let sql = match pick {
        Pick::Ids(_) => format!(
            "SELECT msg_id, message::text FROM pgmq.\"q_{q}\" WHERE msg_id = ANY($1) ORDER BY msg_id{locking}"
        ),
        Pick::After { .. } => format!(
            "SELECT msg_id, message::text FROM pgmq.\"q_{q}\" WHERE msg_id > $1 ORDER BY msg_id LIMIT $2{locking}"
        ),
    };
    let query = match pick {
        Pick::Ids(ids) => sqlx::query(&sql).bind(ids.clone()),
        Pick::After { after, limit } => sqlx::query(&sql)
            .bind(*after)
            .bind(i64::try_from(*limit).unwrap_or(i64::MAX)),
    };
    let found = query
        .fetch_all(&mut *c)
        .await
        .map_err(|e| store("dlq read", q, e))?;
    found
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| store("dlq read", q, e))
}

/// Runs the steps inside `c`'s transaction, set-based: one `send_batch` per target queue,
/// one delete, one archive, one upsert of the replay counts, one append of the audit events.
async fn apply(
    c: &mut PgConnection,
    place: &QueueName,
    steps: Vec<Step>,
    report: &mut Report,
) -> Result<(), DlqError> {
    let q = place.as_str();
    let mut audits = Vec::new();
    let mut sends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut replayed, mut abandoned) = (Vec::new(), Vec::new());
    let mut prints: BTreeMap<String, i32> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Replay { letter, audit } => {
                let mut body = letter.replay_body();
                if let Some(seq) = letter.origin_msg_id {
                    let ordered = crate::flow::policy_on(c, &letter.origin)
                        .await
                        .map_err(DlqError::from)?
                        .is_some_and(|p| p.ordered);
                    if ordered {
                        body = herald::queue::flow::sequenced(&body, seq);
                    }
                }
                sends.entry(letter.origin.clone()).or_default().push(body);
                *prints.entry(letter.fingerprint()).or_default() += 1;
                replayed.push(letter.id);
                audits.push(audit.to_json_string());
            }
            Step::Abandon { letter, audit } => {
                abandoned.push(letter.id);
                audits.push(audit.to_json_string());
            }
            Step::Refuse(refusal) => report.refused.push(refusal),
        }
    }
    for (target, bodies) in &sends {
        sqlx::query("SELECT pgmq.send_batch($1, $2::jsonb[])")
            .bind(target)
            .bind(bodies)
            .execute(&mut *c)
            .await
            .map_err(|e| store("dlq replay", target, e))?;
        // Herald's own connections skip the insert trigger: wake the target's readers here
        // (delivered at commit, as the send is).
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel(target))
            .execute(&mut *c)
            .await
            .map_err(|e| store("notify", target, e))?;
    }
    if !replayed.is_empty() {
        sqlx::query(&format!(
            "DELETE FROM pgmq.\"q_{q}\" WHERE msg_id = ANY($1)"
        ))
        .bind(&replayed)
        .execute(&mut *c)
        .await
        .map_err(|e| store("dlq replay", q, e))?;
        let (fps, ns): (Vec<String>, Vec<i32>) = prints.into_iter().unzip();
        sqlx::query(
            "INSERT INTO herald.dlq_replays AS r (place, fingerprint, replays)
             SELECT $1, f, n FROM unnest($2::text[], $3::int[]) AS t(f, n)
             ON CONFLICT (place, fingerprint) DO UPDATE SET replays = r.replays + EXCLUDED.replays",
        )
        .bind(q)
        .bind(fps)
        .bind(ns)
        .execute(&mut *c)
        .await
        .map_err(|e| store("dlq replay", q, e))?;
    }
    if !abandoned.is_empty() {
        sqlx::query("SELECT pgmq.archive($1, $2::bigint[])")
            .bind(q)
            .bind(&abandoned)
            .execute(&mut *c)
            .await
            .map_err(|e| store("dlq abandon", q, e))?;
    }
    report.done.extend(replayed);
    report.done.extend(abandoned);
    report.done.sort_unstable();
    if !audits.is_empty() {
        let stream = StreamName::new(AUDIT_STREAM)?;
        append_in(c, &stream, &audits, WriteCondition::Any).await?;
    }
    Ok(())
}

impl DeadLetterStore for PgStore {
    async fn places(&self) -> Result<Vec<Place>, DlqError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT queue_name::text FROM pgmq.meta WHERE queue_name LIKE '%\\_dlq' ORDER BY queue_name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| store("dlq places", "*", e))?;
        let mut places = Vec::new();
        for name in names {
            // Names from the catalogue are checked before they go into SQL.
            let Ok(queue) = QueueName::new(&name) else {
                continue;
            };
            let q = queue.as_str();
            let row = sqlx::query(&format!(
                "SELECT count(*)::bigint, (extract(epoch FROM clock_timestamp() - min(enqueued_at)) * 1000)::bigint
                 FROM pgmq.\"q_{q}\""
            ))
            .fetch_one(self.pool())
            .await
            .map_err(|e| store("dlq places", q, e))?;
            let count: i64 = row.try_get(0).map_err(|e| store("dlq places", q, e))?;
            let oldest: Option<i64> = row.try_get(1).map_err(|e| store("dlq places", q, e))?;
            places.push(Place {
                origin: q.strip_suffix(DLQ_SUFFIX).unwrap_or(q).to_owned(),
                count: u64::try_from(count).unwrap_or(0),
                oldest_age_ms: oldest.map(|ms| u64::try_from(ms.max(0)).unwrap_or(0)),
                name,
            });
        }
        Ok(places)
    }

    async fn letters(
        &self,
        place: &QueueName,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Letter>, DlqError> {
        let mut c = self
            .pool()
            .acquire()
            .await
            .map_err(|e| store("dlq show", place.as_str(), e))?;
        if !queue_exists(&mut c, place.as_str()).await? {
            return Err(DlqError::NoSuchPlace {
                place: place.to_string(),
            });
        }
        let rows = rows(&mut c, place, &Pick::After { after, limit }, false).await?;
        Ok(letters_of(&mut c, place, rows).await?)
    }

    async fn settle_letters(
        &self,
        place: &QueueName,
        pick: Pick,
        action: &Action,
        operator: &Operator,
    ) -> Result<Report, DlqError> {
        let q = place.as_str();
        let mut tx = crate::tx::begin(self.pool(), None)
            .await
            .map_err(|e| store("dlq settle", q, e))?;
        let result = settle_in(&mut tx, place, &pick, action, operator).await;
        // Rolled back before an error is returned: until then its row locks would hide the
        // letters from the next `FOR UPDATE SKIP LOCKED` pick (an abandon right after a
        // refused replay found none).
        crate::tx::finish(tx, result, |e| store("dlq settle (commit)", q, e).into()).await
    }
}

/// [`DeadLetterStore::settle_letters`] inside `c`'s transaction (the caller commits or rolls
/// back).
async fn settle_in(
    c: &mut PgConnection,
    place: &QueueName,
    pick: &Pick,
    action: &Action,
    operator: &Operator,
) -> Result<Report, DlqError> {
    let q = place.as_str();
    if !queue_exists(&mut *c, q).await? {
        return Err(DlqError::NoSuchPlace {
            place: place.to_string(),
        });
    }
    let rows = rows(&mut *c, place, pick, true).await?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    let mut report = taken(q, pick, &ids)?;
    let steps: Vec<Step> = letters_of(&mut *c, place, rows)
        .await?
        .into_iter()
        .map(|letter| decide(place.as_str(), letter, action, operator))
        .collect();
    let mut checked = HashSet::new();
    for step in &steps {
        if let Step::Replay { letter, .. } = step {
            if checked.insert(letter.origin.clone())
                && !queue_exists(&mut *c, &letter.origin).await?
            {
                return Err(DlqError::TargetGone {
                    place: place.to_string(),
                    id: letter.id,
                    queue: letter.origin.clone(),
                });
            }
        }
    }
    apply(&mut *c, place, steps, &mut report).await?;
    Ok(report)
}
