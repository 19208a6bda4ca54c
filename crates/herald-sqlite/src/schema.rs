//! The SQLite schema, created idempotently on open and versioned: one table of live messages
//! and one archive for all queues (queue names are bound values, never SQL), times in
//! microseconds since the Unix epoch.

use rusqlite::Connection;

/// The schema version this code writes and reads. 1: queues; 2: adds the event store; 3: adds
/// the broker state (nodes, allocations, lease) and the count projection; 4: adds the replay
/// counts of dead letters, the schedules and the inbox's event keys; 5: adds flow control's
/// policies and key states.
pub(crate) const VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS herald_schema (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_queues (
    name        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    total_sent  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS herald_messages (
    msg_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT NOT NULL,
    read_ct     INTEGER NOT NULL DEFAULT 0,
    enqueued_at INTEGER NOT NULL,
    vt          INTEGER NOT NULL,
    message     TEXT NOT NULL,
    flow_key    TEXT,
    flow_prio   INTEGER,
    flow_seq    INTEGER
);
CREATE INDEX IF NOT EXISTS herald_messages_ready ON herald_messages (queue, vt, msg_id);
CREATE TABLE IF NOT EXISTS herald_events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream          TEXT NOT NULL,
    category        TEXT NOT NULL,
    position        INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    body            TEXT NOT NULL,
    UNIQUE (stream, position)
);
CREATE INDEX IF NOT EXISTS herald_events_category ON herald_events (category, global_position);
CREATE TABLE IF NOT EXISTS herald_checkpoints (
    consumer TEXT NOT NULL,
    source   TEXT NOT NULL,
    position INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    PRIMARY KEY (consumer, source)
);
CREATE TABLE IF NOT EXISTS herald_nodes (
    node_id   TEXT PRIMARY KEY,
    role      TEXT NOT NULL,
    groups    TEXT NOT NULL,
    claims    TEXT NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_allocations (
    grp               TEXT NOT NULL,
    source            TEXT NOT NULL,
    node_id           TEXT,
    epoch             INTEGER NOT NULL,
    coordinator_epoch INTEGER NOT NULL,
    PRIMARY KEY (grp, source)
);
CREATE TABLE IF NOT EXISTS herald_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_counts (
    projection    TEXT NOT NULL,
    category      TEXT NOT NULL,
    count         INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    PRIMARY KEY (projection, category)
);
CREATE TABLE IF NOT EXISTS herald_dlq_replays (
    place       TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    replays     INTEGER NOT NULL,
    PRIMARY KEY (place, fingerprint)
);
CREATE TABLE IF NOT EXISTS herald_event_keys (
    key             TEXT PRIMARY KEY,
    global_position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_schedules (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    last_tick  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_flow_policies (
    queue      TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS herald_flow_keys (
    queue  TEXT NOT NULL,
    scope  INTEGER NOT NULL,
    key    TEXT NOT NULL,
    tokens REAL,
    at     INTEGER,
    served INTEGER,
    PRIMARY KEY (queue, scope, key)
);
CREATE TABLE IF NOT EXISTS herald_archive (
    msg_id      INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    read_ct     INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    vt          INTEGER NOT NULL,
    archived_at INTEGER NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (queue, msg_id)
);
";

/// Adds flow control's columns to `herald_messages` of a file made before version 5 (a
/// queue's messages' flow key, priority and place in send order, filled in by the first read
/// under a policy; NULL otherwise).
fn add_flow_columns(conn: &Connection) -> Result<(), String> {
    let has: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('herald_messages') WHERE name = 'flow_key'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| format!("reading the messages table: {e}"))?;
    if has {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE herald_messages ADD COLUMN flow_key TEXT;
         ALTER TABLE herald_messages ADD COLUMN flow_prio INTEGER;
         ALTER TABLE herald_messages ADD COLUMN flow_seq INTEGER;",
    )
    .map_err(|e| format!("adding the flow columns: {e}"))
}

/// Creates the schema if missing and checks its version.
pub(crate) fn ensure(conn: &Connection) -> Result<(), String> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA}"))
        .map_err(|e| format!("creating the schema: {e}"))?;
    if let Err(e) = add_flow_columns(conn).and_then(|()| {
        // A file whose keys were read before keys were registered (the short pass reads them
        // from herald_flow_keys) has them registered once, as the index comes.
        let registered: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'herald_flow_keys_served'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| format!("reading the schema: {e}"))?;
        if !registered {
            conn.execute_batch(
                "INSERT OR IGNORE INTO herald_flow_keys (queue, scope, key)
                 SELECT DISTINCT queue, 1, flow_key FROM herald_messages
                 WHERE flow_key IS NOT NULL",
            )
            .map_err(|e| format!("registering flow keys: {e}"))?;
        }
        // Only rows of queues under a policy have a flow key: others never enter it. The
        // index holds no column a lease or a retry changes (`vt`, `read_ct`), so a lease
        // leaves it alone: the covering index it replaces (herald_messages_flow, dropped
        // here) was rewritten at every lease, a leaf page for each key leased, and took the
        // write-ahead log from 77 to 181 KB per 16 steps leased and archived (136 KB with
        // this one).
        conn.execute_batch(
            "DROP INDEX IF EXISTS herald_messages_flow;
             CREATE INDEX IF NOT EXISTS herald_messages_flow_seq ON herald_messages
               (queue, flow_key, flow_seq, flow_prio) WHERE flow_key IS NOT NULL;
             CREATE INDEX IF NOT EXISTS herald_messages_prio ON herald_messages (queue, flow_prio)
               WHERE flow_prio > 0;
             CREATE INDEX IF NOT EXISTS herald_flow_keys_served ON herald_flow_keys
               (queue, scope, served)",
        )
        .map_err(|e| format!("creating the flow index: {e}"))
    }) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    let found: Option<i64> = conn
        .query_row("SELECT max(version) FROM herald_schema", [], |r| r.get(0))
        .map_err(|e| format!("reading the schema version: {e}"))?;
    let outcome = match found {
        None => conn
            .execute("INSERT INTO herald_schema (version) VALUES (?1)", [VERSION])
            .map(drop)
            .map_err(|e| format!("recording the schema version: {e}")),
        Some(v) if v == VERSION => Ok(()),
        // Versions 1 to 4 lacked tables the statement above has just added, and version 5's
        // three nullable columns of herald_messages (nothing existing was changed). Recorded,
        // and said.
        Some(v @ (1..=4)) => {
            tracing::info!("SQLite schema migrated from version {v} to {VERSION}: tables added");
            conn.execute("UPDATE herald_schema SET version = ?1", [VERSION])
                .map(drop)
                .map_err(|e| format!("recording the schema version: {e}"))
        }
        Some(v) => Err(format!(
            "the file has schema version {v}; this Herald reads version {VERSION} (never altered silently)"
        )),
    };
    match outcome {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| format!("committing the schema: {e}")),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
