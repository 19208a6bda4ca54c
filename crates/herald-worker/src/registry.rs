//! `HandlerRegistry`: handler factories by name (register with a warning on overwrite,
//! unregister, resolve a fresh instance, list), and discovery the Rust way: handlers that
//! register themselves at link time with [`submit_step_handler!`](crate::submit_step_handler).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use herald::{BoxError, Bus, Event, Subject};
use parking_lot::RwLock;

use crate::handler::StepHandler;

/// Makes a fresh handler for one step.
pub type HandlerFactory = Arc<dyn Fn() -> Result<Box<dyn StepHandler>, BoxError> + Send + Sync>;

/// A handler registered at link time; collected by [`HandlerRegistry::discover`].
pub struct HandlerRegistration {
    /// The name steps use.
    pub name: &'static str,
    /// Makes an instance.
    pub make: fn() -> Result<Box<dyn StepHandler>, BoxError>,
}

inventory::collect!(HandlerRegistration);

/// Registers a handler at link time: `discover()` on any registry finds it.
///
/// ```
/// use herald_worker::{step_handler_fn, submit_step_handler, StepContext, StepHandlerResult};
///
/// fn make_noop() -> Result<Box<dyn herald_worker::StepHandler>, herald::BoxError> {
///     Ok(Box::new(step_handler_fn("doc.noop", |_c: StepContext| async {
///         StepHandlerResult::success(serde_json::Map::new())
///     })))
/// }
/// submit_step_handler!("doc.noop", make_noop);
/// ```
#[macro_export]
macro_rules! submit_step_handler {
    ($name:expr, $make:path) => {
        $crate::inventory::submit! {
            $crate::HandlerRegistration { name: $name, make: $make }
        }
    };
}

/// Why no handler could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is registered under that name.
    #[error("Handler not found: {0}")]
    NotFound(String),
    /// The factory failed or panicked.
    #[error("Failed to instantiate handler {name}: {reason}")]
    Construction {
        /// The handler's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// Handler factories by name. Share it with `Arc`.
#[derive(Default)]
pub struct HandlerRegistry {
    handlers: RwLock<BTreeMap<String, HandlerFactory>>,
    bus: Option<Bus>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("handlers", &self.list())
            .finish()
    }
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        HandlerRegistry::default()
    }

    /// An empty registry that emits `handler.registered` on `bus` for each registration.
    pub fn with_bus(bus: Bus) -> Self {
        HandlerRegistry {
            handlers: RwLock::default(),
            bus: Some(bus),
        }
    }

    /// Registers `factory` under `name`; an existing one is replaced, with a warning.
    pub fn register(
        &self,
        name: &str,
        factory: impl Fn() -> Result<Box<dyn StepHandler>, BoxError> + Send + Sync + 'static,
    ) {
        let replaced = self
            .handlers
            .write()
            .insert(name.to_owned(), Arc::new(factory))
            .is_some();
        if replaced {
            tracing::warn!("Overwriting existing handler: {name}");
        }
        if let Some(bus) = &self.bus {
            if let Ok(subject) = Subject::new("handler.registered") {
                let mut data = serde_json::Map::new();
                data.insert("handler_name".into(), name.into());
                data.insert("replaced".into(), replaced.into());
                let event = Event::new(subject)
                    .with_data(data)
                    .with_source("herald-worker");
                if let Err(e) = bus.emit(event) {
                    tracing::warn!("handler.registered not emitted: {e}");
                }
            }
        }
    }

    /// Registers a handler value that can be cloned for each step.
    pub fn register_handler<H: StepHandler + Clone>(&self, handler: H) {
        let name = handler.name().to_owned();
        self.register(&name, move || Ok(Box::new(handler.clone())));
    }

    /// Removes `name`; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.handlers.write().remove(name).is_some()
    }

    /// A fresh handler for `name`.
    ///
    /// # Errors
    ///
    /// [`ResolveError::NotFound`], or [`ResolveError::Construction`] when the factory
    /// returned an error or panicked (never a panic here).
    pub fn resolve(&self, name: &str) -> Result<Box<dyn StepHandler>, ResolveError> {
        let factory = self
            .handlers
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ResolveError::NotFound(name.to_owned()))?;
        let construction = |reason: String| ResolveError::Construction {
            name: name.to_owned(),
            reason,
        };
        match catch_unwind(AssertUnwindSafe(|| factory())) {
            Ok(Ok(handler)) => Ok(handler),
            Ok(Err(e)) => Err(construction(e.to_string())),
            Err(_) => Err(construction("the factory panicked".to_owned())),
        }
    }

    /// Whether `name` is registered.
    pub fn is_registered(&self, name: &str) -> bool {
        self.handlers.read().contains_key(name)
    }

    /// The registered names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.handlers.read().keys().cloned().collect()
    }

    /// Registers every handler submitted at link time with
    /// [`submit_step_handler!`](crate::submit_step_handler); returns how many.
    pub fn discover(&self) -> usize {
        let mut n = 0;
        for r in inventory::iter::<HandlerRegistration> {
            self.register(r.name, r.make);
            n += 1;
        }
        n
    }
}
