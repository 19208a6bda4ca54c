//! Dead-letter places on SQLite: `{queue}_dlq` queues of `herald_messages`, the replay count
//! of each letter's body in `herald_dlq_replays`, and every replay or abandon done in one
//! writer transaction with its audit append to `herald-audit`.

use herald::dlq::{
    decide, taken, Action, DeadLetterStore, DlqError, Letter, Operator, Pick, Place, Report, Step,
    AUDIT_STREAM,
};
use herald::queue::{QueueError, QueueName};
use herald::store::{StreamName, WriteCondition};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::store;
use crate::event_store::append_in;
use crate::queue::{archive_one, insert, SqliteStore};
use crate::rows::{exists, now_micros};

fn replays(c: &Connection, place: &str, fingerprint: &str) -> Result<u32, QueueError> {
    c.prepare_cached("SELECT replays FROM herald_dlq_replays WHERE place = ?1 AND fingerprint = ?2")
        .and_then(|mut s| {
            s.query_row(params![place, fingerprint], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|n| n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
        .map_err(|e| store("dlq replays", place, e))
}

/// `(msg_id, body)` rows of `place` that `pick` names.
fn rows(c: &Connection, place: &str, pick: &Pick) -> Result<Vec<(i64, String)>, QueueError> {
    let err = |e| store("dlq read", place, e);
    match pick {
        Pick::Ids(ids) => {
            let mut stmt = c
                .prepare_cached(
                    "SELECT msg_id, message FROM herald_messages WHERE queue = ?1 AND msg_id = ?2",
                )
                .map_err(err)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(row) = stmt
                    .query_row(params![place, id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(err)?
                {
                    out.push(row);
                }
            }
            Ok(out)
        }
        Pick::After { after, limit } => c
            .prepare_cached(
                "SELECT msg_id, message FROM herald_messages WHERE queue = ?1 AND msg_id > ?2
                 ORDER BY msg_id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![place, after, i64::try_from(*limit).unwrap_or(i64::MAX)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect()
            })
            .map_err(err),
    }
}

fn letters_in(
    c: &Connection,
    place: &QueueName,
    rows: Vec<(i64, String)>,
) -> Result<Vec<Letter>, QueueError> {
    rows.into_iter()
        .map(|(id, body)| {
            // The count is kept by the original body's fingerprint, so parse first.
            let letter = Letter::parse(place, id, body.as_bytes(), 0);
            let n = replays(c, place.as_str(), &letter.fingerprint())?;
            Ok(Letter {
                replays: n,
                ..letter
            })
        })
        .collect()
}

/// Settles `pick` inside the writer's transaction. A [`DlqError`] in the `Ok` side is found
/// before anything is written; a write that fails is an `Err`, which rolls it all back.
fn settle_in(
    c: &Connection,
    place: &QueueName,
    pick: &Pick,
    action: &Action,
    operator: &Operator,
) -> Result<Result<Report, DlqError>, QueueError> {
    if let Err(QueueError::NoSuchQueue { .. }) = exists(c, place.as_str()) {
        return Ok(Err(DlqError::NoSuchPlace {
            place: place.to_string(),
        }));
    }
    let rows = rows(c, place.as_str(), pick)?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    let mut report = match taken(place.as_str(), pick, &ids) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let steps: Vec<Step> = letters_in(c, place, rows)?
        .into_iter()
        .map(|letter| decide(place.as_str(), letter, action, operator))
        .collect();
    for step in &steps {
        if let Step::Replay { letter, .. } = step {
            if exists(c, &letter.origin).is_err() {
                return Ok(Err(DlqError::TargetGone {
                    place: place.to_string(),
                    id: letter.id,
                    queue: letter.origin.clone(),
                }));
            }
        }
    }
    let mut audits = Vec::new();
    for step in steps {
        match step {
            Step::Replay { letter, audit } => {
                let mut body = letter.replay_body();
                if let Some(seq) = letter.origin_msg_id {
                    if crate::flow::policy_in(c, &letter.origin)?.is_some_and(|p| p.ordered) {
                        body = herald::queue::flow::sequenced(&body, seq);
                    }
                }
                insert(c, &letter.origin, &body, std::time::Duration::ZERO)?;
                c.prepare_cached("DELETE FROM herald_messages WHERE queue = ?1 AND msg_id = ?2")
                    .and_then(|mut s| s.execute(params![place.as_str(), letter.id]))
                    .map_err(|e| store("dlq replay", place.as_str(), e))?;
                c.prepare_cached(
                    "INSERT INTO herald_dlq_replays (place, fingerprint, replays) VALUES (?1, ?2, 1)
                     ON CONFLICT (place, fingerprint) DO UPDATE SET replays = replays + 1",
                )
                .and_then(|mut s| s.execute(params![place.as_str(), letter.fingerprint()]))
                .map_err(|e| store("dlq replay", place.as_str(), e))?;
                audits.push(audit.to_json_string());
                report.done.push(letter.id);
            }
            Step::Abandon { letter, audit } => {
                archive_one(c, place.as_str(), letter.id, None)?;
                audits.push(audit.to_json_string());
                report.done.push(letter.id);
            }
            Step::Refuse(refusal) => report.refused.push(refusal),
        }
    }
    if !audits.is_empty() {
        let stream = StreamName::new(AUDIT_STREAM)
            .map_err(|e| QueueError::store("dlq audit", place.as_str(), false, e))?;
        append_in(c, &stream, &audits, WriteCondition::Any)
            .map_err(|e| QueueError::store("dlq audit", place.as_str(), false, e))?;
    }
    Ok(Ok(report))
}

impl DeadLetterStore for SqliteStore {
    async fn places(&self) -> Result<Vec<Place>, DlqError> {
        let places = self
            .writer()
            .run("dlq places", "*", |c| {
                let now = now_micros();
                c.prepare_cached(
                    "SELECT q.name, count(m.msg_id), min(m.enqueued_at) FROM herald_queues q
                     LEFT JOIN herald_messages m ON m.queue = q.name
                     WHERE q.name LIKE '%!_dlq' ESCAPE '!' GROUP BY q.name ORDER BY q.name",
                )
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        let name: String = r.get(0)?;
                        let oldest: Option<i64> = r.get(2)?;
                        Ok(Place {
                            origin: name
                                .strip_suffix(herald::dlq::DLQ_SUFFIX)
                                .unwrap_or(&name)
                                .to_owned(),
                            count: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                            oldest_age_ms: oldest
                                .map(|t| u64::try_from((now - t).max(0) / 1_000).unwrap_or(0)),
                            name,
                        })
                    })?
                    .collect()
                })
                .map_err(|e| store("dlq places", "*", e))
            })
            .await?;
        Ok(places)
    }

    async fn letters(
        &self,
        place: &QueueName,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Letter>, DlqError> {
        let (name, place) = (place.clone(), place.clone());
        let found = self
            .writer()
            .run("dlq show", name.as_str(), move |c| {
                if exists(c, place.as_str()).is_err() {
                    return Ok(Err(DlqError::NoSuchPlace {
                        place: place.to_string(),
                    }));
                }
                let rows = rows(c, place.as_str(), &Pick::After { after, limit })?;
                letters_in(c, &place, rows).map(Ok)
            })
            .await?;
        found
    }

    async fn settle_letters(
        &self,
        place: &QueueName,
        pick: Pick,
        action: &Action,
        operator: &Operator,
    ) -> Result<Report, DlqError> {
        let name = place.clone();
        let (place, action, operator) = (place.clone(), action.clone(), operator.clone());
        let report = self
            .writer()
            .run("dlq settle", name.as_str(), move |c| {
                settle_in(c, &place, &pick, &action, &operator)
            })
            .await??;
        if !report.done.is_empty() {
            self.notify_sent();
        }
        Ok(report)
    }
}
