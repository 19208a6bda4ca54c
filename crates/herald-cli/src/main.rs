//! The `herald` binary: parse the command line, run the verb, print any error as one line.

mod alloc;
mod cli;
mod commands;
mod config;
mod connect;
mod error;
mod output;

pub(crate) use error::CliError;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as every other error: clap's first line, without its tips and usage.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("herald: {first} (see herald --help)");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Handler panics are caught and reported by the bus; keep the default hook's multi-line
    // output out of the way and print one line instead.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("herald: panic{at}: {msg}");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CliError::Config(_)) => {
            eprintln!("herald: {e}");
            ExitCode::from(78)
        }
        Err(CliError::Exit(code, why)) => {
            eprintln!("herald: {why}");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> Result<(), CliError> {
    use cli::Command;
    match cli.command {
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Bench(args) => commands::bench::run(args, &cli.global).await,
        Command::Chaos(args) => commands::chaos::run(args).await,
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
