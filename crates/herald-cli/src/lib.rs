//! The `herald` command as a library: its modules, the one entry point [`run`] the binary
//! calls, and the hooks the fuzz targets use. Not a stable API: the binary is the product.

pub mod alloc;
pub mod cli;
mod commands;
mod config;
mod connect;
mod data;
mod error;
mod opts;
pub mod output;
mod signal;
pub mod telemetry;

pub use error::CliError;

/// Runs one parsed command line.
pub async fn run(cli: cli::Cli) -> Result<(), CliError> {
    use cli::Command;
    let options = cli.options();
    let global = &options;
    match cli.command {
        Command::Demo(args) => commands::demo::run(args, global).await,
        Command::Bench(args) => {
            let config = config::resolve(global)?;
            let store = config.chosen_store().unwrap_or_default();
            commands::bench::run(args, &store, &config.bus).await
        }
        Command::Chaos(args) => {
            let config = config::resolve(global)?;
            commands::chaos::run(args, config.chosen_store()).await
        }
        Command::Pub(args) => commands::nats::publish(args, &config::resolve(global)?.bus).await,
        Command::Sub(args) => commands::nats::subscribe(args, &config::resolve(global)?.bus).await,
        Command::Request(args) => {
            commands::nats::request(args, &config::resolve(global)?.bus).await
        }
        Command::Reply(args) => commands::nats::reply(args, &config::resolve(global)?.bus).await,
        Command::Streams(args) => {
            commands::nats::streams(args, &config::resolve(global)?.bus).await
        }
        Command::Queue(args) => commands::queue::run(args, &config::resolve(global)?.store).await,
        Command::Worker(args) => commands::worker::run(args, config::resolve(global)?).await,
        Command::Serve(mut args) => {
            let config = config::resolve(global)?;
            args.http.get_or_insert_with(|| config.http.addr.clone());
            commands::worker::run(args, config).await
        }
        Command::Config(args) => config::command(args, global),
        Command::Store(args) => commands::store::run(args, &config::resolve(global)?.store).await,
        Command::Dlq(args) => commands::dlq::run(args, &config::resolve(global)?.store).await,
        Command::Inbox(args) => {
            let config = config::resolve(global)?;
            commands::relay::inbox(args, &config.store, &config.bus).await
        }
        Command::Relay(args) => {
            let config = config::resolve(global)?;
            commands::relay::run(args, &config.store, &config.bus).await
        }
        Command::Schedule(args) => {
            commands::schedule::run(args, &config::resolve(global)?.store).await
        }
        Command::Node(args) => {
            let mut config = config::resolve(global)?;
            config.apply_node_flags(&args);
            config.validate()?;
            commands::node::run(args, &config.store, config.node).await
        }
        Command::Health(args) => {
            commands::observe::health(args, &config::resolve(global)?.http.addr).await
        }
        Command::Metrics(args) => {
            commands::observe::metrics(args, &config::resolve(global)?.http.addr).await
        }
    }
}

/// Entry points for `fuzz/` (cargo-fuzz): each takes arbitrary bytes and must not panic.
#[doc(hidden)]
pub mod fuzz {
    /// Parses `data` as a config file's text and validates it, as `--config` would: either a
    /// config or one `Config` error line that names the key or the file.
    pub fn config(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match crate::config::parse(text, "fuzz.toml") {
            Ok(_) => {}
            Err(crate::CliError::Config(line)) => {
                assert!(!line.contains('\n'), "a config error is one line: {line:?}");
                assert!(
                    line.starts_with("config key `") || line.starts_with("config file fuzz.toml"),
                    "a config error names its key or its file: {line:?}"
                );
            }
            Err(other) => panic!("a config error must be CliError::Config, got {other:?}"),
        }
    }
}
