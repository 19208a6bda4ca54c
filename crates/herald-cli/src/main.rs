//! The `herald` binary: parse the command line, run the verb, print any error as one line.

use std::process::ExitCode;

use clap::Parser;
use herald_cli::{alloc, cli, run, CliError};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let telemetry = match herald_cli::telemetry::init(&cli) {
        Ok(t) => t,
        Err(e) => {
            herald_cli::output::note(&format!("herald: {e}"));
            return ExitCode::from(78);
        }
    };
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
        if !herald_cli::output::panics_are_quiet() {
            herald_cli::output::note(&format!("herald: panic{at}: {msg}"));
        }
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            herald_cli::output::note(&format!("herald: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // The command is done: tasks it left behind (a publisher of an interrupted chaos run, a
    // blocking call still waiting) get a bounded moment, never a hang at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // The last spans go out before the process ends.
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CliError::Config(_)) => {
            herald_cli::output::note(&format!("herald: {e}"));
            ExitCode::from(78)
        }
        Err(CliError::Exit(code, why)) => {
            herald_cli::output::note(&format!("herald: {why}"));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            herald_cli::output::note(&format!("herald: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refused, or `--help`/`--version`, or a bare verb that has sub-verbs
/// (its help, exit 2). An error keeps everything clap says: the first line holds the whole
/// message (a list of missing arguments folded into it), then clap's own lines (the "did
/// you mean" tip, possible values, the usage) follow.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    herald_cli::output::note(&herald_cli::cli::render_usage_error(
        &e.render().to_string(),
    ));
    ExitCode::from(2)
}
