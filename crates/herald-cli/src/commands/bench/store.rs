//! `herald bench store`: the event store beside the raw library doing the same work in the
//! same run. PostgreSQL: appends one by one and in batches of 100, and a category read, beside
//! raw sqlx running the same INSERT/SELECT on a table of the same shape (without the append
//! lock and the write condition: the figure is their cost). SQLite: the same three, beside
//! raw rusqlite on a file with the same settings (WAL, `synchronous = FULL`).

use std::time::Instant;

use herald::store::{EventStore, StreamName, WriteCondition};
use herald_postgres::PgStore;
use herald_sqlite::SqliteStore;
use sqlx::PgPool;

use super::queue::{event, pg_url};
use super::{paired, rate, Figure, Report};
use crate::CliError;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

fn category() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench{}x{nanos}", std::process::id())
}

async fn herald_appends<S: EventStore>(s: &S, n: u64, batch: usize) -> Result<f64, CliError> {
    let stream = StreamName::new(&format!("{}-s", category()))?;
    let events: Vec<herald::Event> = (0..batch).map(|_| event()).collect::<Result<_, _>>()?;
    let start = Instant::now();
    for _ in 0..n {
        s.append(&stream, &events, WriteCondition::Any).await?;
    }
    Ok(rate(n * batch as u64, start))
}

const RAW_TABLE: &str = "CREATE TABLE IF NOT EXISTS herald_bench_raw_events (
    global_position BIGSERIAL PRIMARY KEY, stream TEXT NOT NULL, category TEXT NOT NULL,
    position BIGINT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    body JSONB NOT NULL, UNIQUE (stream, position))";

async fn raw_appends(pool: &PgPool, n: u64, batch: usize) -> Result<f64, CliError> {
    let cat = category();
    let stream = format!("{cat}-s");
    let body = String::from_utf8_lossy(&event()?.to_json()).into_owned();
    let mut position = 0i64;
    let start = Instant::now();
    for _ in 0..n {
        let mut tx = pool.begin().await.map_err(other)?;
        for _ in 0..batch {
            sqlx::query(
                "INSERT INTO herald_bench_raw_events (stream, category, position, body) VALUES ($1, $2, $3, $4::jsonb)",
            )
            .bind(&stream)
            .bind(&cat)
            .bind(position)
            .bind(&body)
            .execute(&mut *tx)
            .await
            .map_err(other)?;
            position += 1;
        }
        tx.commit().await.map_err(other)?;
    }
    Ok(rate(n * batch as u64, start))
}

async fn herald_category_read<S: EventStore>(
    s: &S,
    category: &str,
    n: u64,
) -> Result<f64, CliError> {
    let start = Instant::now();
    let mut read = 0u64;
    let mut from = 0;
    while read < n {
        let got = s.read_category(category, from, 1000).await?;
        let Some(last) = got.last() else { break };
        from = last.global_position + 1;
        read += got.len() as u64;
    }
    Ok(rate(read, start))
}

async fn raw_category_read(pool: &PgPool, category: &str, n: u64) -> Result<f64, CliError> {
    let start = Instant::now();
    let mut read = 0u64;
    let mut from = 0i64;
    while read < n {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT global_position, body::text FROM herald_bench_raw_events WHERE category = $1 AND global_position >= $2 ORDER BY global_position LIMIT 1000",
        )
        .bind(category)
        .bind(from)
        .fetch_all(pool)
        .await
        .map_err(other)?;
        let Some(last) = rows.last() else { break };
        from = last.0 + 1;
        read += rows.len() as u64;
    }
    Ok(rate(read, start))
}

async fn postgres(report: &mut Report, scale: f64, url: &str) -> Result<(), CliError> {
    let n = |base: f64| ((base * scale) as u64).max(10);
    let store = PgStore::connect(url).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await
        .map_err(other)?;
    sqlx::query(RAW_TABLE).execute(&pool).await.map_err(other)?;
    // The same index the store has, so the read compares like with like.
    sqlx::query("CREATE INDEX IF NOT EXISTS herald_bench_raw_events_category ON herald_bench_raw_events (category, global_position)")
        .execute(&pool)
        .await
        .map_err(other)?;
    let (h, r) = paired(
        3,
        || herald_appends(&store, n(500.0), 1),
        || raw_appends(&pool, n(500.0), 1),
    )
    .await?;
    report.add(Figure::higher(
        "store_pg_append_single",
        "events/s",
        h,
        r,
        "raw sqlx INSERT per transaction",
    ))?;
    let (h, r) = paired(
        3,
        || herald_appends(&store, n(30.0), 100),
        || raw_appends(&pool, n(30.0), 100),
    )
    .await?;
    report.add(Figure::higher(
        "store_pg_append_batch_100",
        "events/s",
        h,
        r,
        "raw sqlx 100 INSERTs per transaction",
    ))?;
    // A category of 5,000 events in each table, then read back in pages of 1,000.
    let cat = category();
    let stream = StreamName::new(&format!("{cat}-r"))?;
    let events: Vec<herald::Event> = (0..500).map(|_| event()).collect::<Result<_, _>>()?;
    let body = String::from_utf8_lossy(&event()?.to_json()).into_owned();
    for round in 0..10i64 {
        store.append(&stream, &events, WriteCondition::Any).await?;
        let mut tx = pool.begin().await.map_err(other)?;
        for i in 0..500i64 {
            sqlx::query("INSERT INTO herald_bench_raw_events (stream, category, position, body) VALUES ($1, $2, $3, $4::jsonb)")
                .bind(stream.as_str())
                .bind(&cat)
                .bind(round * 500 + i)
                .bind(&body)
                .execute(&mut *tx)
                .await
                .map_err(other)?;
        }
        tx.commit().await.map_err(other)?;
    }
    // Fresh statistics for both tables, so both plans use their index.
    for table in ["herald_bench_raw_events", "herald.events"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&pool)
            .await
            .map_err(other)?;
    }
    let (h, r) = paired(
        5,
        || herald_category_read(&store, &cat, 5000),
        || raw_category_read(&pool, &cat, 5000),
    )
    .await?;
    report.add(Figure::higher(
        "store_pg_category_read",
        "events/s",
        h,
        r,
        "raw sqlx SELECT by category, pages of 1,000",
    ))?;
    Ok(())
}

fn raw_sqlite(path: &std::path::Path) -> Result<rusqlite::Connection, CliError> {
    let c = rusqlite::Connection::open(path).map_err(other)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS raw_events (global_position INTEGER PRIMARY KEY AUTOINCREMENT,
             stream TEXT NOT NULL, category TEXT NOT NULL, position INTEGER NOT NULL, body TEXT NOT NULL,
             UNIQUE (stream, position));
         CREATE INDEX IF NOT EXISTS raw_events_category ON raw_events (category, global_position);",
    )
    .map_err(other)?;
    Ok(c)
}

/// `n` transactions of `batch` INSERTs each into one stream of `cat`.
fn raw_sqlite_appends(
    path: &std::path::Path,
    cat: &str,
    n: u64,
    batch: usize,
) -> Result<f64, CliError> {
    let mut c = raw_sqlite(path)?;
    let body = String::from_utf8_lossy(&event()?.to_json()).into_owned();
    let stream = format!("{cat}-s");
    let mut position = 0i64;
    let start = Instant::now();
    for _ in 0..n {
        let tx = c.transaction().map_err(other)?;
        for _ in 0..batch {
            tx.execute(
                "INSERT INTO raw_events (stream, category, position, body) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![stream, cat, position, body],
            )
            .map_err(other)?;
            position += 1;
        }
        tx.commit().map_err(other)?;
    }
    Ok(rate(n * batch as u64, start))
}

fn raw_sqlite_read(path: &std::path::Path, cat: &str, n: u64) -> Result<f64, CliError> {
    let c = raw_sqlite(path)?;
    let start = Instant::now();
    let (mut read, mut from) = (0u64, 0i64);
    let mut stmt = c
        .prepare("SELECT global_position, body FROM raw_events WHERE category = ?1 AND global_position >= ?2 ORDER BY global_position LIMIT 1000")
        .map_err(other)?;
    while read < n {
        let rows: Vec<(i64, String)> = stmt
            .query_map(rusqlite::params![cat, from], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(other)?;
        let Some(last) = rows.last() else { break };
        from = last.0 + 1;
        read += rows.len() as u64;
    }
    Ok(rate(read, start))
}

async fn sqlite(report: &mut Report, scale: f64) -> Result<(), CliError> {
    let n = ((300.0 * scale) as u64).max(10);
    let dir = std::env::temp_dir().join(format!("herald-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(other)?;
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("h.db").display())).await?;
    let raw_path = dir.join("raw.db");
    let (h, r) = paired(
        3,
        || herald_appends(&store, n, 1),
        || async { raw_sqlite_appends(&raw_path, &category(), n, 1) },
    )
    .await?;
    report.add(Figure::higher(
        "store_sqlite_append_single",
        "events/s",
        h,
        r,
        "raw rusqlite INSERT per transaction (WAL, FULL)",
    ))?;
    let batches = (n / 10).max(3);
    let (h, r) = paired(
        3,
        || herald_appends(&store, batches, 100),
        || async { raw_sqlite_appends(&raw_path, &category(), batches, 100) },
    )
    .await?;
    report.add(Figure::higher(
        "store_sqlite_append_batch_100",
        "events/s",
        h,
        r,
        "raw rusqlite 100 INSERTs per transaction",
    ))?;
    // One category of 5,000 events in each, then paged reads.
    let cat = category();
    let stream = StreamName::new(&format!("{cat}-s"))?;
    let events: Vec<herald::Event> = (0..500).map(|_| event()).collect::<Result<_, _>>()?;
    for _ in 0..10 {
        store.append(&stream, &events, WriteCondition::Any).await?;
    }
    raw_sqlite_appends(&raw_path, &cat, 10, 500)?;
    let (h, r) = paired(
        5,
        || herald_category_read(&store, &cat, 5000),
        || async { raw_sqlite_read(&raw_path, &cat, 5000) },
    )
    .await?;
    report.add(Figure::higher(
        "store_sqlite_category_read",
        "events/s",
        h,
        r,
        "raw rusqlite SELECT by category, pages of 1,000",
    ))?;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub(crate) async fn run(report: &mut Report, scale: f64, store: &str) -> Result<(), CliError> {
    match postgres(report, scale, &pg_url(store)).await {
        Ok(()) => {}
        Err(e) => crate::output::warn_line!("store bench: PostgreSQL figures skipped: {e}"),
    }
    sqlite(report, scale).await?;
    Ok(())
}
