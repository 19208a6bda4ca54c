//! The process's `tracing` subscriber: the log on stderr (`HERALD_LOG`), and, when telemetry
//! is on (`[telemetry]`, `OTEL_EXPORTER_OTLP_ENDPOINT`), Herald's hop spans exported by
//! OTLP/HTTP; `herald demo --trace` collects them in memory instead, to print.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::{Cli, Command, Tracing};
use crate::CliError;

/// The spans `herald demo --trace` collected.
static COLLECTOR: OnceLock<herald_otel::collect::Collector> = OnceLock::new();

/// The collector of `herald demo --trace` (`None` without it).
pub(crate) fn collector() -> Option<&'static herald_otel::collect::Collector> {
    COLLECTOR.get()
}

/// Keeps the exporter until the command is done: dropped, it sends what is buffered.
#[derive(Debug)]
pub struct Guard {
    _telemetry: Option<herald_otel::Telemetry>,
}

/// Sets the process's subscriber for `cli`: the log filtered by `HERALD_LOG` (else
/// `default_log_filter`), and the spans' exporter when telemetry is on.
///
/// # Errors
///
/// [`CliError::Config`] for a `[telemetry]` key or an `OTEL_*` variable that is not valid.
pub fn init(cli: &Cli) -> Result<Guard, CliError> {
    // The hop spans are for the exporter: the log leaves them out unless HERALD_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},{}=off",
            cli.default_log_filter(),
            herald::hop::SPAN_TARGET
        ))
    });
    let log = tracing_subscriber::fmt::layer()
        .with_writer(|| crate::output::LossyStderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let telemetry = match &cli.command {
        Command::Demo(args) if args.trace => {
            let collector = COLLECTOR.get_or_init(herald_otel::collect::Collector::new);
            Some(herald_otel::Telemetry::with_exporter(
                collector.clone(),
                "herald-demo",
            ))
        }
        Command::Bench(args) if args.tracing == Some(Tracing::On) => Some(
            herald_otel::Telemetry::with_batch_exporter(herald_otel::collect::Discard, "bench"),
        ),
        // A config that does not load is the command's own error, reported by it.
        _ => match crate::config::resolve(&cli.options()) {
            Ok(config) => herald_otel::Telemetry::start(&config.telemetry)
                .map_err(|e| CliError::Config(e.to_string()))?,
            Err(_) => None,
        },
    };
    let spans = telemetry.as_ref().map(|t| t.layer());
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok(Guard {
        _telemetry: telemetry,
    })
}
