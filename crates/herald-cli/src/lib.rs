//! The `herald` command as a library: its modules, the one entry point [`run`] the binary
//! calls, and the hooks the fuzz targets use. Not a stable API: the binary is the product.

pub mod alloc;
pub mod cli;
mod commands;
mod config;
mod connect;
mod error;
mod output;

pub use error::CliError;

/// Runs one parsed command line.
pub async fn run(cli: cli::Cli) -> Result<(), CliError> {
    use cli::Command;
    match cli.command {
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Bench(args) => commands::bench::run(args, &cli.global).await,
        Command::Chaos(args) => commands::chaos::run(args, cli.global.store.clone()).await,
        Command::Pub(args) => commands::nats::publish(args, &cli.global.bus).await,
        Command::Sub(args) => commands::nats::subscribe(args, &cli.global.bus).await,
        Command::Request(args) => commands::nats::request(args, &cli.global.bus).await,
        Command::Reply(args) => commands::nats::reply(args, &cli.global.bus).await,
        Command::Streams(args) => commands::nats::streams(args, &cli.global.bus).await,
        Command::Queue(args) => {
            let config = config::load(cli.global.config.as_deref())?;
            let store = cli.global.store.clone().unwrap_or(config.store);
            commands::queue::run(args, &store).await
        }
        Command::Worker(args) => {
            let mut config = config::load(cli.global.config.as_deref())?;
            if cli.global.bus != cli::DEFAULT_BUS {
                config.bus = cli.global.bus.clone();
            }
            commands::worker::run(args, cli.global.store.clone(), config).await
        }
        Command::Serve(mut args) => {
            let mut config = config::load(cli.global.config.as_deref())?;
            if cli.global.bus != cli::DEFAULT_BUS {
                config.bus = cli.global.bus.clone();
            }
            args.http.get_or_insert_with(|| config.http.addr.clone());
            commands::worker::run(args, cli.global.store.clone(), config).await
        }
        Command::Config(args) => config::command(args, cli.global.config.as_ref()),
        Command::Store(args) => {
            let config = config::load(cli.global.config.as_deref())?;
            let store = cli.global.store.clone().unwrap_or(config.store);
            commands::store::run(args, &store).await
        }
        Command::Node(args) => {
            let config = config::load(cli.global.config.as_deref())?;
            let store = cli.global.store.clone().unwrap_or(config.store);
            commands::node::run(args, &store, config.node).await
        }
        Command::Health(args) => commands::observe::health(args).await,
        Command::Metrics(args) => commands::observe::metrics(args).await,
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
