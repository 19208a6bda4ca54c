//! `herald chaos`'s arguments: which scenario, at which scale, with how many messages and
//! kills.

use clap::{Args, ValueEnum};

use crate::opts::{at_least_one, ConfigOpt, StoreOpt};

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    /// Which scenario.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) scenario: ChaosScenario,
    /// small (seconds) or full (1,000,000 messages, 20 kills).
    #[arg(long, value_enum, default_value = "small")]
    pub(crate) scale: ChaosScale,
    /// Messages per scenario (overrides the scale).
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one)]
    pub(crate) messages: Option<u64>,
    /// Kills per scenario (overrides the scale).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) kills: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ChaosScenario {
    /// JetStream publishes with ids and retries while one server is SIGKILLed and restarted.
    JetstreamKill,
    /// The same on a 3-node cluster with an R3 stream, one node killed at a time.
    JetstreamCluster,
    /// Core publishes across the same kills: accepted, refused, delivered, lost.
    CoreKill,
    /// `herald queue consume` processes SIGKILLed mid-batch on --store (default: a scratch
    /// SQLite file): lost 0, duplicates at most one batch per kill.
    QueueKill,
    /// Sends while a PostgreSQL server of its own is restarted with -m immediate.
    PgRestart,
    /// `herald relay` SIGKILLed under appends (lease 1 s), and the NATS server SIGKILLed
    /// under the relay every second kill: the stream equals the log, in order, once each.
    RelayKill,
    /// Two relays (lease 2 s), the active one SIGKILLed each round: the standby takes over
    /// within two lease periods; the stream equals the log.
    RelayFailover,
    /// `herald inbox` SIGKILLed while it takes a stream in: the store holds each message once.
    InboxKill,
    /// A relay on a PostgreSQL server of its own restarted with -m immediate under appends.
    RelayPgRestart,
    /// Every scenario.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ChaosScale {
    /// 2,000 messages, 3 kills.
    Small,
    /// 1,000,000 messages, 20 kills.
    Full,
}
