//! Writing results to stdout: one line at a time, flushed, and a closed pipe ends quietly.

use std::io::Write;

use crate::CliError;

/// Writes one line to stdout. `Ok(false)` when the reader has gone (a closed pipe, as with
/// `| head`): the command should stop, without an error.
pub(crate) fn print_line(line: &str) -> Result<bool, CliError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Other(format!("writing to stdout: {e}"))),
    }
}

/// `println!` for commands that return `Result<_, CliError>`: a closed pipe is ignored, any
/// other write error is returned.
macro_rules! out {
    ($($arg:tt)*) => {
        let _reader_still_there: bool = $crate::output::print_line(&format!($($arg)*))?;
    };
}
pub(crate) use out;

/// Writes one line to stderr; a closed or failing stderr is ignored (`eprintln!` would panic,
/// and a panic while printing that panic aborts the process).
pub fn note(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Stderr for the log: a write that fails (stderr closed, as with `2>&1 | head`) is dropped.
/// tracing-subscriber reports a failed write with `eprintln!`, which panics then.
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `eprintln!` that never panics: see [`note`].
macro_rules! warn_line {
    ($($arg:tt)*) => {
        $crate::output::note(&format!($($arg)*))
    };
}
pub(crate) use warn_line;

static QUIET_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the panic hook stays silent (the demo's `--quiet`: its panics are deliberate and
/// counted in its summary).
pub fn panics_are_quiet() -> bool {
    QUIET_PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Silences the panic hook (see [`panics_are_quiet`]).
pub(crate) fn quiet_panics() {
    QUIET_PANICS.store(true, std::sync::atomic::Ordering::Relaxed);
}
