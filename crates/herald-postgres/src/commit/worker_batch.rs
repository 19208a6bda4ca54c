//! The worker's batch of settles as one statement: guarded archives of one queue, each
//! sending one result to one target queue, with PGMQ's headers for traced results.

use herald::queue::{Settle, Settled};
use sqlx::PgPool;

use super::{guarded_archive, Done, Failed, Work};
use crate::error::store;
use crate::listen::channel;

/// The worker's batch: guarded archives of one queue, each sending one result to one same
/// target queue, as one statement (which commits on its own): the archive of every message
/// whose read count still matches, the results of exactly those in one `send_batch`, and the
/// notify. One round trip for the batch, however many settles. `None` when the batch has any
/// other shape (then `apply` does it in a transaction).
pub(super) async fn settles_in_one_statement(
    pool: &PgPool,
    works: &[&Work],
) -> Option<Result<Vec<Done>, Failed>> {
    let (queue, target) = match works.first()? {
        Work::Settle {
            queue,
            settle: Settle::Archive,
            sends,
            ..
        } if sends.len() == 1 => (queue.as_str(), sends[0].0.as_str()),
        _ => return None,
    };
    let mut ids = Vec::with_capacity(works.len());
    let mut cts = Vec::with_capacity(works.len());
    let mut bodies = Vec::with_capacity(works.len());
    let mut seen = std::collections::HashSet::with_capacity(works.len());
    for w in works {
        match w {
            Work::Settle {
                queue: q,
                msg_id,
                read_ct,
                settle: Settle::Archive,
                sends,
            } if q == queue && sends.len() == 1 && sends[0].0 == target => {
                if !seen.insert((*msg_id, *read_ct)) {
                    return None;
                }
                ids.push(*msg_id);
                cts.push(*read_ct);
                bodies.push(sends[0].1.as_str());
            }
            _ => return None,
        }
    }
    // `queue` and `target` are validated queue names (letters, digits, `_`).
    let archive = guarded_archive(queue);
    // With a traced result, PGMQ's headers column too ($6, beside the bodies).
    let headers = crate::headers::of(&bodies);
    let (hdr, hdr_col, hdrs, hdrs_arg) = if headers.is_some() {
        (
            ", $6::text[]",
            ", hdr",
            ", array_agg(w.hdr::jsonb ORDER BY w.ord) AS hdrs",
            " r.hdrs,",
        )
    } else {
        ("", "", "", "")
    };
    let sql = format!(
        "WITH want AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]{hdr}) WITH ORDINALITY
                 AS w(msg_id, read_ct, body{hdr_col}, ord)),
         {archive},
         results AS (
             SELECT array_agg(w.body::jsonb ORDER BY w.ord) AS msgs{hdrs}
             FROM want w JOIN arch a ON a.msg_id = w.msg_id),
         sent AS (
             SELECT pgmq.send_batch($4, r.msgs,{hdrs_arg} clock_timestamp()) AS id
             FROM results r WHERE r.msgs IS NOT NULL),
         woken AS (
             SELECT pg_notify($5, '') FROM (SELECT 1 FROM sent LIMIT 1) AS any_sent)
         SELECT coalesce((SELECT array_agg(msg_id) FROM arch), '{{}}'::bigint[]),
                coalesce((SELECT array_agg(id ORDER BY id) FROM sent), '{{}}'::bigint[]),
                (SELECT count(*) FROM woken)"
    );
    let mut query = sqlx::query_as(&sql)
        .bind(&ids)
        .bind(&cts)
        .bind(&bodies)
        .bind(target)
        .bind(channel(target));
    if let Some(h) = &headers {
        query = query.bind(h);
    }
    let row: Result<(Vec<i64>, Vec<i64>, i64), sqlx::Error> = query.fetch_one(pool).await;
    let (archived, sent, _) = match row {
        Ok(r) => r,
        Err(e) => return Some(Err(Failed::Op(store("settle", queue, e)))),
    };
    let archived: std::collections::HashSet<i64> = archived.into_iter().collect();
    let mut sent = sent.into_iter();
    let dones = ids
        .iter()
        .map(|id| {
            if archived.contains(id) {
                Done::Settled(Settled::Applied {
                    sent: sent.next().into_iter().collect(),
                })
            } else {
                Done::Settled(Settled::Stale)
            }
        })
        .collect();
    Some(Ok(dones))
}
