//! `ProcessStatus` (seed 003): the lifecycle of a service, a broker component or a runtime, kept
//! in an atomic cell so any task can read it, and how several statuses roll up into one.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessStatus {
    /// Made, not started.
    Initialised,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Stopping (draining).
    Stopping,
    /// Stopped.
    Stopped,
    /// Stopped by an error.
    Errored,
}

impl ProcessStatus {
    /// The lowercase name (`running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Initialised => "initialised",
            ProcessStatus::Starting => "starting",
            ProcessStatus::Running => "running",
            ProcessStatus::Stopping => "stopping",
            ProcessStatus::Stopped => "stopped",
            ProcessStatus::Errored => "errored",
        }
    }

    const ALL: [ProcessStatus; 6] = [
        ProcessStatus::Initialised,
        ProcessStatus::Starting,
        ProcessStatus::Running,
        ProcessStatus::Stopping,
        ProcessStatus::Stopped,
        ProcessStatus::Errored,
    ];
}

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status for several processes: errored if any is; the common status if they agree;
/// otherwise starting, then stopping, then running if any is; else initialised.
pub fn determine_multi_process_status(statuses: &[ProcessStatus]) -> ProcessStatus {
    let any = |s: ProcessStatus| statuses.contains(&s);
    match statuses.first() {
        None => ProcessStatus::Initialised,
        _ if any(ProcessStatus::Errored) => ProcessStatus::Errored,
        Some(first) if statuses.iter().all(|s| s == first) => *first,
        _ if any(ProcessStatus::Starting) => ProcessStatus::Starting,
        _ if any(ProcessStatus::Stopping) => ProcessStatus::Stopping,
        _ if any(ProcessStatus::Running) => ProcessStatus::Running,
        _ => ProcessStatus::Initialised,
    }
}

/// A status any task can set and read.
#[derive(Debug)]
pub struct StatusCell(AtomicU8);

impl Default for StatusCell {
    fn default() -> Self {
        StatusCell(AtomicU8::new(0))
    }
}

impl StatusCell {
    /// Reads it.
    pub fn get(&self) -> ProcessStatus {
        ProcessStatus::ALL[usize::from(self.0.load(Ordering::Acquire)).min(5)]
    }

    /// Sets it.
    pub fn set(&self, status: ProcessStatus) {
        let i = ProcessStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0);
        self.0
            .store(u8::try_from(i).unwrap_or(0), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::{determine_multi_process_status as roll, ProcessStatus as P, StatusCell};

    #[test]
    fn statuses_roll_up() {
        assert_eq!(roll(&[]), P::Initialised);
        assert_eq!(roll(&[P::Running, P::Running]), P::Running);
        assert_eq!(roll(&[P::Running, P::Errored]), P::Errored);
        assert_eq!(roll(&[P::Running, P::Starting]), P::Starting);
        assert_eq!(roll(&[P::Stopped, P::Stopping]), P::Stopping);
        assert_eq!(roll(&[P::Stopped, P::Running]), P::Running);
        let cell = StatusCell::default();
        assert_eq!(cell.get(), P::Initialised);
        cell.set(P::Stopping);
        assert_eq!(cell.get(), P::Stopping);
    }
}
