//! Services (seed 003): the `Service` trait the `ServiceManager` runs and `ServiceError`, how
//! one ends badly. The consumer services (`ErrorHandlingService`, `PollingService`) are in
//! `polling.rs`.

use std::any::Any;
use std::sync::Arc;

use herald::{BoxError, BoxFuture, Shutdown};

/// Why a service ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// It failed (an error handler raised it).
    #[error("service {service} failed")]
    Failed {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// An exit error handler asks the process to exit with `code`.
    #[error("service {service} asks the process to exit with code {code}")]
    Exit {
        /// The service.
        service: String,
        /// The exit code.
        code: i32,
        /// Why.
        #[source]
        source: BoxError,
    },
}

impl ServiceError {
    /// The exit code asked for, if any.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ServiceError::Exit { code, .. } => Some(*code),
            ServiceError::Failed { .. } => None,
        }
    }
}

/// Something the [`crate::ServiceManager`] runs until `stop` is triggered.
pub trait Service: Send + Sync + 'static {
    /// Its name, for logs and status.
    fn name(&self) -> String;

    /// Runs it until `stop` is triggered (or it ends by itself). Tasks it starts go
    /// through `stop` too ([`Shutdown::spawn`]), so the manager's stop drains them.
    fn execute(self: Arc<Self>, stop: Shutdown) -> BoxFuture<Result<(), ServiceError>>;

    /// For tests and tooling that inspect what was registered.
    fn as_any(&self) -> &dyn Any;
}
