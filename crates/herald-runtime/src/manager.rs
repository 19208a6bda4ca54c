//! `ServiceManager` (seed 003): registers services with an execution mode and an isolation mode
//! (the caller's runtime, one shared secondary runtime, or a thread of their own), starts them,
//! stops them draining within a bound, and waits for a failure, an exit request, a foreground
//! service's end, or SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use herald::Shutdown;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::service::{Service, ServiceError};
use crate::status::{ProcessStatus, StatusCell};

/// Whether the manager's [`ServiceManager::wait`] ends when the service ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Its end (even a clean one) ends the wait: the process's main job.
    Foreground,
    /// Runs beside the others; only a failure ends the wait.
    Background,
}

/// Where a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMode {
    /// On the Tokio runtime that called `start` (the default).
    MainThread,
    /// On one secondary runtime, on its own thread, shared by every service that asks for it.
    SharedThread,
    /// On a runtime and thread of its own.
    DedicatedThread,
}

/// One registered service.
#[derive(Clone)]
pub struct Registration {
    /// The service.
    pub service: Arc<dyn Service>,
    /// Its execution mode.
    pub execution_mode: ExecutionMode,
    /// Its isolation mode.
    pub isolation_mode: IsolationMode,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.service.name())
            .field("execution_mode", &self.execution_mode)
            .field("isolation_mode", &self.isolation_mode)
            .finish()
    }
}

/// Why [`ServiceManager::wait`] returned.
#[derive(Debug)]
pub enum Ended {
    /// A foreground service ended cleanly.
    Finished(String),
    /// A service failed or asked to exit.
    Error(ServiceError),
    /// The stop future given to `wait` completed (the caller's SIGINT or SIGTERM), with the
    /// name it gave.
    Signal(&'static str),
    /// The services' [`Shutdown`] was triggered from elsewhere.
    Stopped,
}

/// What a stop left behind.
#[derive(Debug, Default)]
pub struct StopReport {
    /// Services that ended within the bound.
    pub stopped: usize,
    /// Services still running when the bound ran out (aborted where they could be).
    pub abandoned: Vec<String>,
    /// Errors services ended with while stopping.
    pub errors: Vec<ServiceError>,
}

struct Running {
    /// Every service runs under it, started through it: the stop signal and the drain.
    stop: Shutdown,
    tasks: Vec<(String, JoinHandle<()>)>,
    ended: mpsc::UnboundedReceiver<(String, ExecutionMode, Result<(), ServiceError>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Keeps the services' own runtime threads alive until every service has stopped.
    runtime_stop: Shutdown,
}

/// Runs services (seed 003's `ServiceManager`).
#[derive(Default)]
pub struct ServiceManager {
    registrations: Vec<Registration>,
    running: Option<Running>,
    status: Arc<StatusCell>,
}

impl std::fmt::Debug for ServiceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceManager")
            .field("registrations", &self.registrations)
            .field("status", &self.status.get())
            .finish_non_exhaustive()
    }
}

/// A runtime on a thread of its own, kept alive until `until` is triggered.
fn runtime_thread(
    name: &str,
    until: Shutdown,
) -> std::io::Result<(tokio::runtime::Handle, std::thread::JoinHandle<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || rt.block_on(until.cancelled_owned()))?;
    Ok((handle, thread))
}

impl ServiceManager {
    /// An empty manager.
    pub fn new() -> Self {
        ServiceManager::default()
    }

    /// Registers `service`.
    pub fn register(
        &mut self,
        service: Arc<dyn Service>,
        execution_mode: ExecutionMode,
        isolation_mode: IsolationMode,
    ) -> &mut Self {
        self.registrations.push(Registration {
            service,
            execution_mode,
            isolation_mode,
        });
        self
    }

    /// What is registered, in order.
    pub fn registrations(&self) -> &[Registration] {
        &self.registrations
    }

    /// Its status.
    pub fn status(&self) -> ProcessStatus {
        self.status.get()
    }

    /// Starts every registered service (on the current Tokio runtime, the shared secondary
    /// runtime or a thread of its own, as registered). Starting twice does nothing more.
    ///
    /// # Errors
    ///
    /// An I/O error when a thread cannot be made.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        self.status.set(ProcessStatus::Starting);
        let stop = Shutdown::new();
        let runtime_stop = Shutdown::new();
        let (tx, ended) = mpsc::unbounded_channel();
        let mut threads = Vec::new();
        let mut shared: Option<tokio::runtime::Handle> = None;
        let mut tasks = Vec::new();
        for (i, r) in self.registrations.iter().enumerate() {
            let handle = match r.isolation_mode {
                IsolationMode::MainThread => tokio::runtime::Handle::current(),
                IsolationMode::SharedThread => match &shared {
                    Some(h) => h.clone(),
                    None => {
                        let (h, t) = runtime_thread("herald-shared", runtime_stop.clone())?;
                        threads.push(t);
                        shared = Some(h.clone());
                        h
                    }
                },
                IsolationMode::DedicatedThread => {
                    let (h, t) = runtime_thread(&format!("herald-svc-{i}"), runtime_stop.clone())?;
                    threads.push(t);
                    h
                }
            };
            let (service, mode, tx, signal) = (
                r.service.clone(),
                r.execution_mode,
                tx.clone(),
                stop.clone(),
            );
            let name = service.name();
            let task_name = name.clone();
            let task = async move {
                let result = service.execute(signal).await;
                let _ = tx.send((task_name, mode, result));
            };
            tasks.push((name, stop.spawn_on(task, &handle)));
        }
        self.running = Some(Running {
            stop,
            tasks,
            ended,
            threads,
            runtime_stop,
        });
        self.status.set(ProcessStatus::Running);
        Ok(())
    }

    /// The services' [`Shutdown`]: triggering it stops every service (what `stop` triggers
    /// first), and a task started through it is drained with them.
    pub fn shutdown_handle(&self) -> Option<Shutdown> {
        self.running.as_ref().map(|r| r.stop.clone())
    }

    /// Waits until a foreground service ends, a service fails or asks to exit, the services' [`Shutdown`]
    /// is triggered, or `stop` completes with the name of what asked (a signal's name, for
    /// [`Ended::Signal`]). Installs no signal handler: the caller owns the process's signals
    /// (axum's `with_graceful_shutdown` takes a future the same way). Does not stop anything:
    /// call [`ServiceManager::stop`] next.
    pub async fn wait(&mut self, stop: impl std::future::Future<Output = &'static str>) -> Ended {
        let Some(running) = self.running.as_mut() else {
            return Ended::Stopped;
        };
        let signal = stop;
        tokio::pin!(signal);
        loop {
            tokio::select! {
                name = &mut signal => return Ended::Signal(name),
                () = running.stop.cancelled() => return Ended::Stopped,
                next = running.ended.recv() => match next {
                    None => return Ended::Stopped,
                    Some((_, _, Err(e))) => return Ended::Error(e),
                    Some((name, ExecutionMode::Foreground, Ok(()))) => return Ended::Finished(name),
                    Some((_, ExecutionMode::Background, Ok(()))) => {}
                },
            }
        }
    }

    /// Stops every service: triggers their [`Shutdown`], waits up to `within` for them (and
    /// the tasks they started through it) to drain, aborts the services left, and says what
    /// happened.
    pub async fn stop(&mut self, within: Duration) -> StopReport {
        let mut report = StopReport::default();
        let Some(mut running) = self.running.take() else {
            return report;
        };
        self.status.set(ProcessStatus::Stopping);
        running.stop.trigger();
        let deadline = tokio::time::Instant::now() + within;
        for (name, task) in running.tasks {
            tokio::pin!(task);
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => report.stopped += 1,
                Err(_) => {
                    task.abort();
                    report.abandoned.push(name);
                }
            }
        }
        while let Ok((_, _, result)) = running.ended.try_recv() {
            if let Err(e) = result {
                report.errors.push(e);
            }
        }
        // Tasks the services started through their Shutdown get what is left of the bound.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = running.stop.shutdown(left).await {
            tracing::warn!("{e}");
        }
        running.runtime_stop.trigger();
        for t in running.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.status.set(if report.abandoned.is_empty() {
            ProcessStatus::Stopped
        } else {
            ProcessStatus::Errored
        });
        report
    }
}
