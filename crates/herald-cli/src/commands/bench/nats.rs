//! `herald bench nats`: Herald over NATS beside raw async-nats doing the same work.

use super::Report;
use crate::CliError;

pub(crate) async fn run(_report: &mut Report, _scale: f64, _url: &str) -> Result<(), CliError> {
    Err(CliError::Other("bench nats: not built yet".into()))
}
