//! The one place that turns a `--bus` URL into a backend: `nats://`/`tls://` connects to NATS,
//! `memory://` names the in-process bus; anything else is one line naming the value.

use std::time::Duration;

use herald_nats::Nats;

use crate::CliError;

/// What a `--bus` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BusUrl {
    /// The in-process bus (`memory://`).
    Memory,
    /// A NATS server (`nats://HOST:PORT` or `tls://HOST:PORT`).
    Nats(String),
}

/// Parses a `--bus` URL.
pub(crate) fn parse_bus(bus: &str) -> Result<BusUrl, CliError> {
    if bus.starts_with("memory://") {
        return Ok(BusUrl::Memory);
    }
    if bus.starts_with("nats://") || bus.starts_with("tls://") {
        return Ok(BusUrl::Nats(bus.to_owned()));
    }
    Err(CliError::Usage(format!(
        "--bus {bus:?}: expected nats://HOST:PORT or memory://"
    )))
}

/// Connects to `--bus`, which must name a NATS server, within seconds. The connection's name
/// (the `source` of the responses `herald reply` sends) is `herald-cli`.
pub(crate) async fn connect_nats(bus: &str) -> Result<Nats, CliError> {
    nats_connection(bus, "this command needs a NATS server", false).await
}

/// Connects to `--bus` for a long-running service that reports the connection in its health
/// (`serve --nats`): it starts at once whether or not the server answers, and keeps trying
/// (the component shows unhealthy, the service degraded, until it connects).
pub(crate) async fn connect_nats_degraded(bus: &str) -> Result<Nats, CliError> {
    nats_connection(bus, "--nats reports a NATS server's connection", true).await
}

async fn nats_connection(bus: &str, needs: &str, keep_trying: bool) -> Result<Nats, CliError> {
    let url = match parse_bus(bus)? {
        BusUrl::Nats(url) => url,
        BusUrl::Memory => {
            return Err(CliError::Usage(format!(
            "--bus {bus}: the in-process bus lives inside one process; {needs} (nats://HOST:PORT)"
        )))
        }
    };
    Ok(Nats::builder()
        .server(url)
        .name("herald-cli")
        .connect_timeout(Duration::from_secs(3))
        .retry_on_initial_connect(keep_trying)
        .connect()
        .await?)
}

/// A durable store, as `--store` names it.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// `sqlite://PATH`, the embedded default.
    Sqlite(herald_sqlite::SqliteStore),
    /// `postgres://...`, PGMQ on PostgreSQL.
    Postgres(herald_postgres::PgStore),
}

/// Runs `$body` with `$s` bound to the store's concrete backend.
/// Every contract a `--store` backend serves to the CLI's verbs (both backends serve all).
pub(crate) trait CliStore:
    herald::queue::Queue
    + herald::store::EventStore
    + herald::store::BrokerStore
    + herald::schedule::ScheduleStore
    + herald::dlq::DeadLetterStore
    + herald::queue::flow::FlowControl
{
}

impl<S> CliStore for S where
    S: herald::queue::Queue
        + herald::store::EventStore
        + herald::store::BrokerStore
        + herald::schedule::ScheduleStore
        + herald::dlq::DeadLetterStore
        + herald::queue::flow::FlowControl
{
}

macro_rules! with_store {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            $crate::connect::Store::Sqlite($s) => $body,
            $crate::connect::Store::Postgres($s) => $body,
        }
    };
}
pub(crate) use with_store;

/// Opens the store for a verb that only reads (`queue ls`, `store read`, `node status`, ...):
/// an SQLite file that does not exist is an error naming it, and nothing is created (a typo in
/// the path leaves no directories and no empty database behind).
pub(crate) async fn open_existing_store(url: &str) -> Result<Store, CliError> {
    if url.starts_with("sqlite:") {
        let path = herald_sqlite::SqliteOptions::from_url(url)?.path;
        if !path.exists() {
            return Err(CliError::Other(format!(
                "no store at {}: nothing has been written there yet (check --store; a verb that writes creates it)",
                path.display()
            )));
        }
    }
    open_store(url).await
}

/// Opens the store `--store` names: `sqlite://PATH` or `postgres://...`; anything else is
/// one line naming the value.
pub(crate) async fn open_store(url: &str) -> Result<Store, CliError> {
    if url.starts_with("sqlite:") {
        return Ok(Store::Sqlite(herald_sqlite::SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Store::Postgres(
            herald_postgres::PgStore::connect(url).await?,
        ));
    }
    if url.starts_with("memory://") {
        return Err(CliError::Usage(format!(
            "--store {url}: the memory store lives inside one process; use sqlite://PATH or postgres://..."
        )));
    }
    Err(CliError::Usage(format!(
        "--store {url:?}: expected sqlite://PATH or postgres://..."
    )))
}
