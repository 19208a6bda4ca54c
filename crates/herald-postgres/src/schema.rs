//! Installs PGMQ's SQL (the `pgmq` crate's embedded scripts, idempotent, tracked by its own
//! migrations table) and Herald's versioned schema, under an advisory lock so that several
//! processes starting at once install it once.

use herald::queue::QueueError;
use sqlx::PgPool;

use crate::error::store;

/// The version of Herald's own schema (`herald.schema_version`). 1: the version table;
/// 2: adds the event store (`herald.events`); 3: adds the broker state (`herald.nodes`,
/// `herald.allocations`, `herald.lease`) and the count projection (`herald.counts`); 4: adds the
/// replay counts of dead letters (`herald.dlq_replays`) the schedules (`herald.schedules`) and the
/// inbox's event keys (`herald.event_keys`); 5: adds flow control's policies
/// (`herald.flow_policies`), key states (`herald.flow_keys`) and the key of each message of a
/// queue under a policy (`herald.flow_index`, kept by triggers that only such queues have; the
/// insert trigger also registers each key a send brings in `herald.flow_keys`, and two
/// indexes, of priorities above 0 and of keys by last served, came later in version 5, as did
/// the fair-queuing tags, `flow_index.flow_tag` with its index, `flow_keys.tag` and
/// `flow_policies.tag`: added where missing, as the function is replaced, at every start).
pub(crate) const VERSION: i32 = 5;

const EVENTS: &str = "
CREATE TABLE IF NOT EXISTS herald.events (
    global_position BIGSERIAL PRIMARY KEY,
    stream          TEXT NOT NULL,
    category        TEXT NOT NULL,
    position        BIGINT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    body            JSONB NOT NULL,
    UNIQUE (stream, position)
);
DO $i$ BEGIN
    -- As the flow indexes below: made where missing, looked up without a table lock.
    IF to_regclass('herald.events_category') IS NULL THEN
        CREATE INDEX events_category ON herald.events (category, global_position);
    END IF;
END $i$;
CREATE TABLE IF NOT EXISTS herald.checkpoints (
    consumer TEXT NOT NULL,
    source   TEXT NOT NULL,
    position BIGINT NOT NULL,
    epoch    BIGINT NOT NULL,
    PRIMARY KEY (consumer, source)
);
CREATE TABLE IF NOT EXISTS herald.nodes (
    node_id   TEXT PRIMARY KEY,
    role      TEXT NOT NULL,
    groups    JSONB NOT NULL,
    claims    JSONB NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS herald.allocations (
    grp               TEXT NOT NULL,
    source            TEXT NOT NULL,
    node_id           TEXT,
    epoch             BIGINT NOT NULL,
    coordinator_epoch BIGINT NOT NULL,
    PRIMARY KEY (grp, source)
);
CREATE TABLE IF NOT EXISTS herald.lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION herald.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_notify('pgmq.' || TG_TABLE_NAME || '.INSERT', '');
    RETURN NULL;
END
$f$;
CREATE TABLE IF NOT EXISTS herald.dlq_replays (
    place       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    replays     INTEGER NOT NULL,
    PRIMARY KEY (place, fingerprint)
);
CREATE TABLE IF NOT EXISTS herald.event_keys (
    key             TEXT PRIMARY KEY,
    global_position BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS herald.schedules (
    name       TEXT PRIMARY KEY,
    spec       JSONB NOT NULL,
    paused     BOOLEAN NOT NULL DEFAULT false,
    last_tick  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS herald.flow_policies (
    queue      TEXT PRIMARY KEY,
    policy     JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS herald.flow_keys (
    queue  TEXT NOT NULL,
    scope  SMALLINT NOT NULL,
    key    TEXT NOT NULL,
    tokens FLOAT8,
    at     BIGINT,
    served BIGINT,
    PRIMARY KEY (queue, scope, key)
);
CREATE TABLE IF NOT EXISTS herald.flow_index (
    queue     TEXT NOT NULL,
    msg_id    BIGINT NOT NULL,
    flow_key  TEXT NOT NULL,
    flow_seq  BIGINT NOT NULL,
    flow_prio INTEGER NOT NULL,
    PRIMARY KEY (queue, msg_id)
);
-- Each index made only where missing, looked up without a lock: CREATE INDEX IF NOT EXISTS
-- takes its table's SHARE lock even when the index is there, and two of those held to the
-- end of this script, at every start, deadlock with a writer of both tables (drop_queue).
DO $i$ BEGIN
    IF to_regclass('herald.flow_index_key') IS NULL THEN
        CREATE INDEX flow_index_key ON herald.flow_index (queue, flow_key, flow_seq);
    END IF;
    IF to_regclass('herald.flow_index_prio') IS NULL THEN
        CREATE INDEX flow_index_prio ON herald.flow_index (queue, flow_prio) WHERE flow_prio > 0;
    END IF;
    IF to_regclass('herald.flow_keys_served') IS NULL THEN
        CREATE INDEX flow_keys_served ON herald.flow_keys (queue, scope, served NULLS FIRST);
    END IF;
    -- The fair-queuing tags (columns looked up first, as the indexes: ALTER TABLE would take
    -- the table's exclusive lock even when they are there).
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'herald'
                   AND table_name = 'flow_index' AND column_name = 'flow_tag') THEN
        ALTER TABLE herald.flow_index ADD COLUMN flow_tag FLOAT8 NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'herald'
                   AND table_name = 'flow_keys' AND column_name = 'tag') THEN
        ALTER TABLE herald.flow_keys ADD COLUMN tag FLOAT8;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'herald'
                   AND table_name = 'flow_policies' AND column_name = 'tag') THEN
        ALTER TABLE herald.flow_policies ADD COLUMN tag FLOAT8 NOT NULL DEFAULT 0;
    END IF;
    IF to_regclass('herald.flow_index_tag') IS NULL THEN
        CREATE INDEX flow_index_tag ON herald.flow_index (queue, flow_tag, msg_id);
    END IF;
END $i$;
CREATE OR REPLACE FUNCTION herald.flow_index_insert() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    v float8;
BEGIN
    -- The queue's virtual time (start-time fair queuing, see flow_fn.rs): a key idle until
    -- now starts there, not behind the keys that kept sending.
    SELECT p.tag INTO v FROM herald.flow_policies p WHERE p.queue = TG_ARGV[0];
    v := coalesce(v, 0);
    WITH n AS MATERIALIZED (
        SELECT n.msg_id,
            coalesce(n.message #>> '{metadata,flow_key}', n.message #>> TG_ARGV[1]::text[],
                     n.message #>> TG_ARGV[2]::text[], '') AS flow_key,
            CASE WHEN jsonb_typeof(n.message->'metadata'->'flow_seq') = 'number'
                 THEN least(greatest((n.message->'metadata'->>'flow_seq')::numeric, 0), 9e18)::int8
                 ELSE n.msg_id END AS flow_seq,
            CASE WHEN jsonb_typeof(n.message->'metadata'->'flow_priority') = 'number'
                 THEN least(greatest((n.message->'metadata'->>'flow_priority')::numeric, 0), 9)::int
                 ELSE 0 END AS flow_prio
        FROM new_rows n),
    -- Each key a send brings is registered, so that a read finds it among the keys, and its
    -- last tag moves on by its new messages (in key order, as every writer of
    -- herald.flow_keys takes its rows: two sends of the same new keys wait for each other
    -- instead of deadlocking).
    c AS MATERIALIZED (SELECT n.flow_key, count(*) AS cnt FROM n GROUP BY n.flow_key),
    k AS (
        INSERT INTO herald.flow_keys AS k (queue, scope, key, tag)
        SELECT TG_ARGV[0], 1::int2, c.flow_key, v + c.cnt FROM c ORDER BY 3
        ON CONFLICT (queue, scope, key) DO UPDATE
            SET tag = greatest(v, coalesce(k.tag, v)) + (excluded.tag - v)
        RETURNING k.key, k.tag)
    -- A message's tag: its key's last tag before this send, plus its place among the key's
    -- messages of this send.
    INSERT INTO herald.flow_index (queue, msg_id, flow_key, flow_seq, flow_prio, flow_tag)
    SELECT TG_ARGV[0], n.msg_id, n.flow_key, n.flow_seq, n.flow_prio,
        k.tag - c.cnt + row_number() OVER (PARTITION BY n.flow_key ORDER BY n.flow_seq, n.msg_id) - 1
    FROM n JOIN c ON c.flow_key = n.flow_key JOIN k ON k.key = n.flow_key
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$f$;
CREATE OR REPLACE FUNCTION herald.flow_index_delete() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    DELETE FROM herald.flow_index f USING old_rows o
    WHERE f.queue = TG_ARGV[0] AND f.msg_id = o.msg_id;
    RETURN NULL;
END
$f$;
CREATE TABLE IF NOT EXISTS herald.counts (
    projection    TEXT NOT NULL,
    category      TEXT NOT NULL,
    count         BIGINT NOT NULL,
    last_position BIGINT NOT NULL,
    PRIMARY KEY (projection, category)
);
";

/// Makes sure PGMQ and Herald's schema are installed.
pub(crate) async fn ensure(pool: &PgPool) -> Result<(), QueueError> {
    let mut lock = pool.acquire().await.map_err(|e| store("install", "*", e))?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('herald.install'))")
        .execute(&mut *lock)
        .await
        .map_err(|e| store("install", "*", e))?;
    let result = install(pool).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext('herald.install'))")
        .execute(&mut *lock)
        .await;
    result?;
    unlocked.map_err(|e| store("install", "*", e))?;
    crate::headers::detect(pool).await
}

async fn install(pool: &PgPool) -> Result<(), QueueError> {
    let installed: Option<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'pgmq'")
            .fetch_optional(pool)
            .await
            .map_err(|e| store("install", "*", e))?;
    let has_functions: bool = if installed.is_some() {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'pgmq' AND p.proname = 'send_batch')",
        )
        .fetch_one(pool)
        .await
        .map_err(|e| store("install", "*", e))?
    } else {
        false
    };
    if !has_functions {
        pgmq::install::install_sql_from_embedded(pool)
            .await
            .map_err(|e| QueueError::store("install PGMQ", "*", false, e.to_string()))?;
    }
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS herald;
         CREATE TABLE IF NOT EXISTS herald.schema_version (version INTEGER NOT NULL);",
    )
    .execute(pool)
    .await
    .map_err(|e| store("install", "*", e))?;
    sqlx::raw_sql(EVENTS)
        .execute(pool)
        .await
        .map_err(|e| store("install", "*", e))?;
    let found: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM herald.schema_version")
        .fetch_one(pool)
        .await
        .map_err(|e| store("install", "*", e))?;
    match found {
        None => {
            sqlx::query("INSERT INTO herald.schema_version (version) VALUES ($1)")
                .bind(VERSION)
                .execute(pool)
                .await
                .map_err(|e| store("install", "*", e))?;
            Ok(())
        }
        Some(v) if v == VERSION => Ok(()),
        // Versions 1 to 4 lacked tables that were just added (nothing else changed).
        Some(v @ (1..=4)) => {
            tracing::info!("Herald schema migrated from version {v} to {VERSION}: tables added");
            sqlx::query("UPDATE herald.schema_version SET version = $1")
                .bind(VERSION)
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| store("install", "*", e))
        }
        Some(v) => Err(QueueError::store(
            "install",
            "*",
            false,
            format!("the database has Herald schema version {v}; this Herald reads version {VERSION} (never altered silently)"),
        )),
    }
}
