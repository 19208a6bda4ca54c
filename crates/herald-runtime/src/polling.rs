//! The consumer services (seed 003): `ErrorHandlingService` runs a consumer's pass and says
//! what a failed pass means for the service (its [`ErrorHandler`] was already applied to the
//! failing event, once); `PollingService` runs that every interval until stopped.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::{BoxFuture, Shutdown};

use crate::consumer::{ConsumerError, ErrorHandler, EventConsumer};
use crate::service::{Service, ServiceError};

/// Runs one pass of a consumer (seed 003's `ErrorHandlingService`). The error handler is
/// applied once, to the event that failed, by the consumer itself (retries, dead letter);
/// what reaches this service is a pass that ended in an error: under raise it fails the
/// service, under exit it asks the process to exit, under continue or retry it is logged and
/// counted and the next poll tries again.
pub struct ErrorHandlingService {
    consumer: Arc<dyn EventConsumer>,
    error_handler: ErrorHandler,
    errors: AtomicU64,
}

impl std::fmt::Debug for ErrorHandlingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorHandlingService")
            .field("consumer", &self.consumer.name())
            .field("error_handler", &self.error_handler)
            .finish_non_exhaustive()
    }
}

impl ErrorHandlingService {
    /// Runs `consumer`'s pass under `error_handler`.
    pub fn new(consumer: Arc<dyn EventConsumer>, error_handler: ErrorHandler) -> Self {
        ErrorHandlingService {
            consumer,
            error_handler,
            errors: AtomicU64::new(0),
        }
    }

    /// The handler.
    pub fn error_handler(&self) -> ErrorHandler {
        self.error_handler
    }

    /// The consumer's name.
    pub fn consumer_name(&self) -> String {
        self.consumer.name()
    }

    /// Passes that ended in an error (handled or not).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// One pass.
    ///
    /// # Errors
    ///
    /// [`ServiceError`] when the handler raises or exits.
    pub async fn execute(&self) -> Result<(), ServiceError> {
        let error = match self.consumer.consume_once().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        let service = self.consumer.name();
        if let ConsumerError::Processor {
            exit_code: Some(code),
            ..
        } = &error
        {
            return Err(ServiceError::Exit {
                service,
                code: *code,
                source: Box::new(error),
            });
        }
        match self.error_handler {
            ErrorHandler::Raise => Err(ServiceError::Failed {
                service,
                source: Box::new(error),
            }),
            ErrorHandler::Exit { code } => Err(ServiceError::Exit {
                service,
                code,
                source: Box::new(error),
            }),
            ErrorHandler::Continue | ErrorHandler::Retry { .. } => {
                tracing::warn!(
                    consumer = service.as_str(),
                    "pass failed, trying again at the next poll: {}",
                    herald::report(&error)
                );
                Ok(())
            }
        }
    }
}

/// Runs an [`ErrorHandlingService`] every `poll_interval` until stopped (seed 003's
/// `PollingService`, default interval 1 s). A stop lets the pass in progress finish.
#[derive(Debug)]
pub struct PollingService {
    inner: Arc<ErrorHandlingService>,
    poll_interval: Duration,
}

impl PollingService {
    /// The default interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// Polls `inner` every `poll_interval`.
    pub fn new(inner: Arc<ErrorHandlingService>, poll_interval: Duration) -> Self {
        PollingService {
            inner,
            poll_interval,
        }
    }

    /// The interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// What it polls.
    pub fn inner(&self) -> &Arc<ErrorHandlingService> {
        &self.inner
    }
}

impl Service for PollingService {
    fn name(&self) -> String {
        format!("polling {}", self.inner.consumer_name())
    }

    fn execute(self: Arc<Self>, stop: Shutdown) -> BoxFuture<Result<(), ServiceError>> {
        Box::pin(async move {
            while !stop.is_triggered() {
                self.inner.execute().await?;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(self.poll_interval) => {}
                }
            }
            Ok(())
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
