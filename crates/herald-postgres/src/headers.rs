//! PGMQ's `headers` column: a message sent with a trace context in its envelope also gets
//! `{"traceparent": ..., "tracestate": ...}` as its PGMQ headers, so a reader of PGMQ's table
//! that does not parse Herald's envelope sees the trace. Only where the installed PGMQ has
//! the column (its four-argument `send_batch`, looked up when a store connects); a batch with
//! no traced message is sent exactly as before.

use std::sync::atomic::{AtomicU8, Ordering};

use herald::queue::QueueError;
use sqlx::PgPool;

/// 0: no store connected yet; 1: every connected database's PGMQ has headers; 2: one lacks
/// them (then no send uses them, in any store of the process).
static SUPPORTED: AtomicU8 = AtomicU8::new(0);

/// Looks up whether `pool`'s PGMQ has `send_batch(queue, msgs, headers, delay)`.
pub(crate) async fn detect(pool: &PgPool) -> Result<(), QueueError> {
    let has: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'pgmq' AND p.proname = 'send_batch'
           AND pg_get_function_identity_arguments(p.oid)
               = 'queue_name text, msgs jsonb[], headers jsonb[], delay timestamp with time zone')",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| QueueError::store("install", "*", false, e.to_string()))?;
    if has {
        let _ = SUPPORTED.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
    } else {
        SUPPORTED.store(2, Ordering::Relaxed);
    }
    Ok(())
}

/// The headers of `bodies`, in order (`None` for a body without a trace context), when at
/// least one carries a context and PGMQ has the column; `None` otherwise.
pub(crate) fn of(bodies: &[&str]) -> Option<Vec<Option<String>>> {
    if SUPPORTED.load(Ordering::Relaxed) != 1 {
        return None;
    }
    let mut any = false;
    let headers = bodies
        .iter()
        .map(|b| {
            let ctx = herald::TraceContext::of_body(b.as_bytes())?;
            any = true;
            let mut h = serde_json::Map::new();
            h.insert("traceparent".into(), ctx.traceparent().into());
            if let Some(ts) = ctx.tracestate() {
                h.insert("tracestate".into(), ts.into());
            }
            Some(serde_json::Value::Object(h).to_string())
        })
        .collect();
    any.then_some(headers)
}
