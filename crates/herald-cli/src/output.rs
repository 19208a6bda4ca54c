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
