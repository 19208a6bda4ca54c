//! The options verbs share (`--store`, `--bus`, `--config`) and the parsers of their numbers,
//! apart from `cli.rs` so that a
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
    /// A TOML config file (store, bus, [worker], [http], [node], [telemetry], [flow.QUEUE]);
    /// HERALD_* variables and flags override it. A bad file exits with 78.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// The longest `queue send --delay`: a year, in seconds.
pub(crate) const MAX_DELAY_SECS: u64 = 365 * 24 * 3600;

pub(crate) fn whole(s: &str) -> Result<u64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("{s} must not be negative"));
    }
    s.parse::<u64>()
        .map_err(|e| format!("{s:?} is not a whole number: {e}"))
}

/// A count or size: a whole number, at least 1.
pub(crate) fn at_least_one(s: &str) -> Result<u64, String> {
    match whole(s)? {
        0 => Err("0 must be at least 1".to_owned()),
        n => Ok(n),
    }
}

/// [`at_least_one`] as a `usize`.
pub(crate) fn at_least_one_usize(s: &str) -> Result<usize, String> {
    at_least_one(s).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// A whole number of seconds, zero allowed.
pub(crate) fn seconds(s: &str) -> Result<u64, String> {
    whole(s)
}

/// A delay: whole seconds, at most [`MAX_DELAY_SECS`].
pub(crate) fn delay(s: &str) -> Result<u64, String> {
    match whole(s)? {
        n if n > MAX_DELAY_SECS => Err(format!(
            "{n} seconds is more than a year (at most {MAX_DELAY_SECS})"
        )),
        n => Ok(n),
    }
}

/// A time in seconds, fractions allowed: more than 0, at most a day.
pub(crate) fn positive_secs(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(n > 0.0 && n <= 86_400.0) {
        return Err(format!(
            "{s} seconds: must be more than 0 and at most 86400"
        ));
    }
    Ok(n)
}

/// A position: a whole number, zero allowed.
pub(crate) fn position(s: &str) -> Result<i64, String> {
    let n = whole(s)?;
    i64::try_from(n).map_err(|e| format!("{s}: {e}"))
}

/// A stream's byte limit: -1 (unlimited) or a positive number.
pub(crate) fn max_bytes(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(-1),
        Ok(n) if n > 0 => Ok(n),
        Ok(0) => Err(
            "0 would hold nothing: give a positive number of bytes, or -1 for unlimited".to_owned(),
        ),
        Ok(n) => Err(format!("{n}: the only negative value is -1 (unlimited)")),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}
