//! Connecting: `NatsBuilder` (consuming builder with callbacks, ending in `connect`), made
//! from a `NatsConfig` (`config.rs`) or by hand, and `Nats::builder`/`Nats::connect`. Defaults follow seed 004 and DESIGN.md: reconnect forever,
//! about 2 s apart plus jitter, a bounded reconnect buffer.

use herald::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Nats;
use crate::config::NatsConfig;
use crate::error::NatsError;
use crate::state::{ConnectionState, StateCallback, StateCell};

impl Nats {
    /// A builder with the defaults (reconnect forever, 2 s apart).
    pub fn builder() -> NatsBuilder {
        NatsBuilder::default()
    }

    /// Connects to one server with the defaults.
    ///
    /// # Errors
    ///
    /// As [`NatsBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<Nats, NatsError> {
        Nats::builder().server(url).connect().await
    }
}

impl NatsConfig {
    /// A builder starting from this config.
    pub fn into_builder(self) -> NatsBuilder {
        NatsBuilder {
            config: self,
            on_state: None,
            shutdown: Shutdown::new(),
        }
    }
}

/// Builds a connection: settings, callbacks, then [`NatsBuilder::connect`].
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_nats::NatsError> {
/// use herald_nats::{ConnectionState, Nats};
/// let nats = Nats::builder()
///     .server("nats://127.0.0.1:4222")
///     .name("billing")
///     .on_state_change(|s: ConnectionState| eprintln!("nats: {s:?}"))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct NatsBuilder {
    config: NatsConfig,
    on_state: Option<StateCallback>,
    shutdown: Shutdown,
}

impl NatsBuilder {
    /// Replaces the server list with one URL.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.config.servers = vec![url.into()];
        self
    }

    /// Replaces the server list.
    pub fn servers(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.config.servers = urls.into_iter().map(Into::into).collect();
        self
    }

    /// The client name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Token auth.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// User/password auth.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.config.user = Some(user.into());
        self.config.password = Some(password.into());
        self
    }

    /// A credentials file.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.credentials_file = Some(path.into());
        self
    }

    /// Reconnect attempts; `None` = forever (the default).
    pub fn max_reconnects(mut self, n: Option<usize>) -> Self {
        self.config.max_reconnects = n;
        self
    }

    /// Delay between reconnect attempts (default 2 s, plus up to 25% jitter).
    pub fn reconnect_delay(mut self, d: Duration) -> Self {
        self.config.reconnect_delay_ms = d.as_millis() as u64;
        self
    }

    /// Outgoing messages that may wait while disconnected (default 8,192).
    pub fn reconnect_buffer(mut self, n: usize) -> Self {
        self.config.reconnect_buffer = n;
        self
    }

    /// How long one connection attempt may take (default 3 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout_ms = d.as_millis() as u64;
        self
    }

    /// Keep retrying the first connection instead of failing.
    pub fn retry_on_initial_connect(mut self, yes: bool) -> Self {
        self.config.retry_on_initial_connect = yes;
        self
    }

    /// The [`Shutdown`] handler and responder tasks run under (default: the connection's own).
    /// Share one with the rest of the service to stop everything with one call.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Called on every state change (connected, disconnected, reconnecting, closed).
    pub fn on_state_change(mut self, f: impl Fn(ConnectionState) + Send + Sync + 'static) -> Self {
        self.on_state = Some(Arc::new(f));
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for invalid settings; [`NatsError::Connect`] when no server
    /// answers within the connect timeout (unless `retry_on_initial_connect`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it abandons the attempt.
    pub async fn connect(self) -> Result<Nats, NatsError> {
        let config = self.config;
        config.validate()?;
        let servers = config.servers.join(",");
        let connect_err = |e: herald::BoxError| NatsError::Connect {
            servers: servers.clone(),
            source: e,
        };
        let state = StateCell::new(self.on_state);
        let delay = Duration::from_millis(config.reconnect_delay_ms);
        let (s1, s2) = (state.clone(), state.clone());
        let mut opts = async_nats::ConnectOptions::new()
            .name(&config.name)
            .max_reconnects(config.max_reconnects)
            .client_capacity(config.reconnect_buffer)
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .reconnect_delay_callback(move |attempts| {
                // `attempts` counts from 1 for the first try of each (re)connection round.
                if s1.get() != ConnectionState::Connecting {
                    s1.set(ConnectionState::Reconnecting);
                }
                if attempts <= 1 {
                    return Duration::ZERO;
                }
                jitter(delay)
            })
            .event_callback(move |event| {
                let s = s2.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => s.set(ConnectionState::Connected),
                        async_nats::Event::Disconnected => s.set(ConnectionState::Disconnected),
                        async_nats::Event::Closed => s.set(ConnectionState::Closed),
                        async_nats::Event::SlowConsumer(sid) => {
                            // One event per dropped message: every one is counted, the first
                            // and then every 10,000th logged, so a flood does not flood the log.
                            let total = s.add_slow_consumer();
                            if total == 1 || total % 10_000 == 0 {
                                tracing::warn!(sid, total, "NATS slow consumer: the client dropped messages for a subscription whose handler fell behind (counted in stats().slow_consumers)");
                            }
                        }
                        other => tracing::warn!("NATS: {other}"),
                    }
                }
            });
        if let Some(token) = &config.token {
            opts = opts.token(token.clone());
        }
        if let (Some(u), Some(p)) = (&config.user, &config.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(path) = &config.credentials_file {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| connect_err(Box::new(e)))?;
        }
        if config.retry_on_initial_connect {
            opts = opts.retry_on_initial_connect();
        }
        let addrs: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| NatsError::Config {
                key: "servers",
                reason: e.to_string(),
            })?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| connect_err(Box::new(e)))?;
        if client.connection_state() == async_nats::connection::State::Connected {
            state.set(ConnectionState::Connected);
        }
        Ok(Nats::from_parts(client, state, config, self.shutdown))
    }
}

/// `d` plus a pseudo-random 0-25%.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_names_the_key() {
        let c = NatsConfig {
            servers: vec!["http://x".into()],
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(NatsError::Config { key: "servers", .. })
        ));
        let c = NatsConfig {
            user: Some("u".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(NatsError::Config { key: "user", .. })
        ));
        assert!(NatsConfig::default().validate().is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = NatsConfig {
            token: Some("s3cret".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn config_reads_from_toml_like_json_with_defaults() {
        let c: NatsConfig =
            serde_json::from_str(r#"{"servers": ["nats://10.0.0.1:4222"], "max_reconnects": 5}"#)
                .expect("config");
        assert_eq!(c.max_reconnects, Some(5));
        assert_eq!(c.reconnect_delay_ms, 2_000);
        assert!(serde_json::from_str::<NatsConfig>(r#"{"serverz": []}"#).is_err());
    }
}
