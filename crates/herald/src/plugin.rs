//! Plugins (seed 002): a `Plugin` trait with setup/teardown, a context that stamps the
//! plugin's name as owner and source, and a manager that loads, unloads and reloads plugins
//! and removes every subscription an unloaded plugin left behind.
//!
//! # Examples
//!
//! ```
//! use herald::plugin::{Plugin, PluginContext, PluginManager};
//! use herald::{sync_handler, BoxError, Bus, Event};
//!
//! struct Stats;
//! impl Plugin for Stats {
//!     fn name(&self) -> &str { "stats" }
//!     fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
//!         ctx.subscribe("trivia.*", sync_handler(|e: &Event| println!("{}", e.subject)))?;
//!         Ok(())
//!     }
//! }
//!
//! let bus = Bus::new();
//! let plugins = PluginManager::new(bus.clone());
//! plugins.load(Stats).unwrap();
//! assert_eq!(bus.subscriptions().len(), 1);
//! plugins.unload("stats").unwrap();
//! assert!(bus.subscriptions().is_empty());
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::bus::subscription::{SubscribeOptions, SubscriptionId};
use crate::bus::{Bus, EmitError, PublishError};
use crate::dispatch::DispatchReport;
use crate::handler::{BoxError, Handler};
use crate::message::event::{EnvelopeError, Event};
use crate::message::pattern::IntoPattern;
use crate::message::priority::Priority;
use crate::message::subject::SubjectError;

/// A unit of behaviour that talks to others only over the bus.
///
/// `setup` subscribes (through the [`PluginContext`], which stamps the plugin's name as
/// owner); `teardown` releases what the plugin holds. Whatever `teardown` forgets, the
/// manager unsubscribes anyway.
pub trait Plugin: Send + 'static {
    /// The plugin's unique name: its owner tag and its events' source.
    fn name(&self) -> &str;

    /// Called on load and on each reload.
    ///
    /// # Errors
    ///
    /// Any error aborts the load; subscriptions made so far are removed.
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError>;

    /// Called on unload and before each reload. The default does nothing.
    ///
    /// # Errors
    ///
    /// An error is logged and reported; the plugin is unloaded all the same.
    fn teardown(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }
}

/// A plugin's handle on the bus: everything it subscribes is owned by it, everything it
/// publishes carries its name as source. Cheap to clone into handlers.
#[derive(Clone, Debug)]
pub struct PluginContext {
    bus: Bus,
    name: Arc<str>,
}

impl PluginContext {
    /// A context for `name` on `bus`.
    pub fn new(bus: Bus, name: &str) -> Self {
        PluginContext {
            bus,
            name: Arc::from(name),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Subscribes with normal priority, owned by the plugin (kept until unsubscribed or the
    /// plugin is unloaded).
    ///
    /// # Errors
    ///
    /// [`SubjectError`] for a malformed pattern.
    pub fn subscribe<P>(
        &self,
        pattern: P,
        handler: impl Into<Handler>,
    ) -> Result<SubscriptionId, SubjectError>
    where
        P: IntoPattern,
    {
        self.subscribe_with_priority(pattern, Priority::Normal, handler)
    }

    /// Subscribes with a priority, owned by the plugin.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] for a malformed pattern.
    pub fn subscribe_with_priority<P>(
        &self,
        pattern: P,
        priority: Priority,
        handler: impl Into<Handler>,
    ) -> Result<SubscriptionId, SubjectError>
    where
        P: IntoPattern,
    {
        let options = SubscribeOptions::owner(self.name.clone()).priority(priority);
        Ok(self.bus.subscribe_with(pattern, options, handler)?.detach())
    }

    /// Removes this plugin's subscriptions made with exactly `pattern`.
    pub fn unsubscribe(&self, pattern: &str) -> usize {
        self.bus.unsubscribe(pattern, &self.name)
    }

    /// A new event from this plugin.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] for a malformed subject or a `data` that is not an object.
    pub fn event(&self, subject: &str, data: Value) -> Result<Event, EnvelopeError> {
        Ok(Event::try_new(subject, data)?.with_source(&*self.name))
    }

    /// Publishes with this plugin as source and waits for the handlers.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Bus::publish`].
    pub async fn publish(&self, event: Event) -> Result<DispatchReport, PublishError> {
        self.bus.publish(event.with_source(&*self.name)).await
    }

    /// Emits with this plugin as source.
    ///
    /// # Errors
    ///
    /// As [`Bus::emit`].
    pub fn emit(&self, event: Event) -> Result<(), EmitError> {
        self.bus.emit(event.with_source(&*self.name))
    }
}

/// Why a plugin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A plugin with that name is loaded already.
    #[error("plugin {0:?} is already loaded")]
    AlreadyLoaded(String),
    /// No plugin with that name is loaded.
    #[error("plugin {0:?} is not loaded")]
    NotLoaded(String),
    /// `setup` failed; the plugin is not loaded and its subscriptions were removed.
    #[error("plugin {name:?} setup failed: {source}")]
    Setup {
        /// The plugin.
        name: String,
        /// What setup returned.
        source: BoxError,
    },
}

/// Loads, unloads and reloads plugins on one bus.
///
/// Load, unload and reload are serialised (one at a time), so two loads of the same name
/// cannot both succeed.
///
/// A plugin's name is its owner name on the bus, and owners are per bus, not per manager:
/// unloading a plugin calls [`Bus::unsubscribe_all`] with its name, which removes **every**
/// subscription of that owner on the bus, including ones made outside the plugin (with
/// [`SubscribeOptions::owner`](crate::SubscribeOptions::owner)) or by a second manager on
/// the same bus that loaded a plugin of the same name. Give plugins names no other code
/// subscribes under, and keep one manager per bus.
pub struct PluginManager {
    bus: Bus,
    plugins: Mutex<BTreeMap<String, Box<dyn Plugin>>>,
    /// Held for the whole of a load, unload or reload.
    lifecycle: Mutex<()>,
}

impl std::fmt::Debug for PluginManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginManager")
            .field("loaded", &self.loaded())
            .finish()
    }
}

impl PluginManager {
    /// A manager for plugins on `bus`.
    pub fn new(bus: Bus) -> Self {
        PluginManager {
            bus,
            plugins: Mutex::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
        }
    }

    /// The names of the loaded plugins, sorted.
    pub fn loaded(&self) -> Vec<String> {
        self.plugins.lock().keys().cloned().collect()
    }

    fn context(&self, name: &str) -> PluginContext {
        PluginContext::new(self.bus.clone(), name)
    }

    fn set_up(&self, mut plugin: Box<dyn Plugin>) -> Result<(), PluginError> {
        let name = plugin.name().to_owned();
        if let Err(source) = plugin.setup(&self.context(&name)) {
            self.bus.unsubscribe_all(&name);
            return Err(PluginError::Setup { name, source });
        }
        tracing::info!(plugin = %name, "plugin loaded");
        self.plugins.lock().insert(name, plugin);
        Ok(())
    }

    /// Loads and sets up a plugin.
    ///
    /// # Errors
    ///
    /// [`PluginError::AlreadyLoaded`], or [`PluginError::Setup`] (nothing left subscribed).
    pub fn load(&self, plugin: impl Plugin) -> Result<(), PluginError> {
        self.load_boxed(Box::new(plugin))
    }

    /// [`PluginManager::load`] for a boxed plugin.
    ///
    /// # Errors
    ///
    /// As [`PluginManager::load`].
    pub fn load_boxed(&self, plugin: Box<dyn Plugin>) -> Result<(), PluginError> {
        let _one_at_a_time = self.lifecycle.lock();
        if self.plugins.lock().contains_key(plugin.name()) {
            return Err(PluginError::AlreadyLoaded(plugin.name().to_owned()));
        }
        self.set_up(plugin)
    }

    fn take_down(&self, name: &str) -> Result<Box<dyn Plugin>, PluginError> {
        let mut plugin = self
            .plugins
            .lock()
            .remove(name)
            .ok_or_else(|| PluginError::NotLoaded(name.to_owned()))?;
        if let Err(e) = plugin.teardown(&self.context(name)) {
            tracing::warn!(plugin = name, error = %e, "plugin teardown failed; unloading anyway");
        }
        let removed = self.bus.unsubscribe_all(name);
        tracing::info!(plugin = name, removed, "plugin unloaded");
        Ok(plugin)
    }

    /// Tears a plugin down and removes all of its subscriptions.
    ///
    /// # Errors
    ///
    /// [`PluginError::NotLoaded`].
    pub fn unload(&self, name: &str) -> Result<(), PluginError> {
        let _one_at_a_time = self.lifecycle.lock();
        self.take_down(name).map(drop)
    }

    /// Tears a plugin down, removes its subscriptions, and sets it up again: afterwards it
    /// receives each event exactly once.
    ///
    /// # Errors
    ///
    /// [`PluginError::NotLoaded`], or [`PluginError::Setup`] (then it stays unloaded).
    pub fn reload(&self, name: &str) -> Result<(), PluginError> {
        let _one_at_a_time = self.lifecycle.lock();
        let plugin = self.take_down(name)?;
        self.set_up(plugin)
    }

    /// Unloads every plugin.
    pub fn unload_all(&self) {
        for name in self.loaded() {
            let _ = self.unload(&name);
        }
    }
}
