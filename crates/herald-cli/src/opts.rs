//! The options verbs share (`--store`, `--bus`, `--config`), apart from `cli.rs` so that a
//! verb that defines its own arguments (`commands/dlq.rs`) can use them without importing
//! the command line that names it.

use std::path::PathBuf;

use clap::Args;

/// `--store` on a verb that uses a store.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct StoreOpt {
    /// Durable store: sqlite://PATH (embedded) or postgres://... (PGMQ) (default: the
    /// config's `store`, $HERALD_STORE, else sqlite://.herald/herald.db).
    #[arg(long, global = true)]
    pub(crate) store: Option<String>,
}

/// `--bus` on a verb that talks to NATS.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct BusOpt {
    /// Message bus: nats://HOST:PORT or memory:// (default: the config's `bus`, $HERALD_BUS,
    /// else nats://127.0.0.1:4222).
    #[arg(long, global = true)]
    pub(crate) bus: Option<String>,
}

/// `--config` on a verb that reads the config.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct ConfigOpt {
    /// A TOML config file (store, bus, [worker], [http], [node]); HERALD_* variables and
    /// flags override it. A bad file exits with 78.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}
