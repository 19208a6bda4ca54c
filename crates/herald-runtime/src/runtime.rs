//! `EventRuntime` (seed 003, phase 2): registration of subscribers and consumers over a broker
//! and a service manager, wrapping each consumer in an `ErrorHandlingService` inside a
//! `PollingService`, and the runtime's start and stop. Registering after start is refused.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{BrokerError, EventBroker, EventSubscriber};
use crate::consumer::{ErrorHandler, EventConsumer};
use crate::manager::{Ended, ExecutionMode, IsolationMode, ServiceManager, StopReport};
use crate::polling::{ErrorHandlingService, PollingService};
use crate::service::Service;

/// How a registered consumer runs (seed 003's `EventConsumerSettings`). A value: a copy
/// changed later does not change what was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventConsumerSettings {
    /// What a failed pass does (default [`ErrorHandler::Continue`]). An event's own failure
    /// is handled by the consumer's [`crate::ConsumerSettings::error_handler`].
    pub error_handler: ErrorHandler,
    /// How often it polls (default 1 s).
    pub poll_interval: Duration,
    /// Where it runs (default the main runtime).
    pub isolation_mode: IsolationMode,
}

impl Default for EventConsumerSettings {
    fn default() -> Self {
        EventConsumerSettings {
            error_handler: ErrorHandler::Continue,
            poll_interval: PollingService::DEFAULT_INTERVAL,
            isolation_mode: IsolationMode::MainThread,
        }
    }
}

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Registration after `start` (dynamic registration is not supported).
    #[error("cannot register after the runtime of node {node_id} has started")]
    AlreadyStarted {
        /// The node.
        node_id: String,
    },
    /// The broker refused.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A thread for a service could not be made.
    #[error("starting the services failed")]
    Start(#[source] std::io::Error),
}

/// Seed 003's `EventRuntime`.
pub struct EventRuntime {
    node_id: String,
    broker: Arc<dyn EventBroker>,
    manager: ServiceManager,
    defaults: EventConsumerSettings,
    started: bool,
}

impl std::fmt::Debug for EventRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRuntime")
            .field("node_id", &self.node_id)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl EventRuntime {
    /// A runtime for `node_id` over `broker` and `manager`; consumers registered without
    /// settings get `defaults` (or [`EventConsumerSettings::default`]).
    pub fn new(
        node_id: &str,
        broker: Arc<dyn EventBroker>,
        manager: ServiceManager,
        defaults: Option<EventConsumerSettings>,
    ) -> Self {
        EventRuntime {
            node_id: node_id.to_owned(),
            broker,
            manager,
            defaults: defaults.unwrap_or_default(),
            started: false,
        }
    }

    /// Its node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Its service manager (what is registered, its status).
    pub fn service_manager(&self) -> &ServiceManager {
        &self.manager
    }

    /// Its broker.
    pub fn broker(&self) -> &Arc<dyn EventBroker> {
        &self.broker
    }

    fn check_not_started(&self) -> Result<(), RuntimeError> {
        if self.started {
            return Err(RuntimeError::AlreadyStarted {
                node_id: self.node_id.clone(),
            });
        }
        Ok(())
    }

    /// Registers `subscriber` with the broker for allocation only.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::AlreadyStarted`]; the broker's refusal.
    pub fn register_subscriber(
        &mut self,
        subscriber: Arc<dyn EventSubscriber>,
    ) -> Result<(), RuntimeError> {
        self.check_not_started()?;
        self.broker.register(subscriber)?;
        Ok(())
    }

    /// Registers `consumer` for continuous consumption: an [`ErrorHandlingService`] inside a
    /// [`PollingService`], in the background, isolated as `settings` say.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::AlreadyStarted`].
    pub fn register_consumer(
        &mut self,
        consumer: Arc<dyn EventConsumer>,
        settings: Option<EventConsumerSettings>,
    ) -> Result<(), RuntimeError> {
        self.check_not_started()?;
        let settings = settings.unwrap_or(self.defaults);
        let errors = Arc::new(ErrorHandlingService::new(consumer, settings.error_handler));
        let polling: Arc<dyn Service> =
            Arc::new(PollingService::new(errors, settings.poll_interval));
        self.manager
            .register(polling, ExecutionMode::Background, settings.isolation_mode);
        Ok(())
    }

    /// Registers `consumer` with the broker (allocation) and for consumption.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::AlreadyStarted`]; the broker's refusal (nothing is registered then).
    pub fn register_subscription_consumer<C>(
        &mut self,
        consumer: Arc<C>,
        settings: Option<EventConsumerSettings>,
    ) -> Result<(), RuntimeError>
    where
        C: EventConsumer + EventSubscriber,
    {
        self.check_not_started()?;
        self.broker.register(consumer.clone())?;
        self.register_consumer(consumer, settings)
    }

    /// Registers the broker with the service manager and starts every service. No
    /// registration is taken afterwards.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::AlreadyStarted`]; [`RuntimeError::Start`].
    pub fn start(&mut self) -> Result<(), RuntimeError> {
        self.check_not_started()?;
        let broker: Arc<dyn Service> = self.broker.clone();
        self.manager
            .register(broker, ExecutionMode::Background, IsolationMode::MainThread);
        self.started = true;
        self.manager.start().map_err(RuntimeError::Start)
    }

    /// Waits until a service fails or asks to exit, or `stop` completes with the name of what
    /// asked (see [`ServiceManager::wait`]; no signal handler is installed here).
    pub async fn wait(&mut self, stop: impl std::future::Future<Output = &'static str>) -> Ended {
        self.manager.wait(stop).await
    }

    /// Stops every service, the broker included, draining within `within`.
    pub async fn stop(&mut self, within: Duration) -> StopReport {
        self.manager.stop(within).await
    }
}
