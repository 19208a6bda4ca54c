//! `NatsConfig`: a connection's settings as a config file holds them (serde), with the one
//! `validate` that names the bad key; `options.rs` turns it into a `NatsBuilder`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::NatsError;

/// Connection settings, as they appear in a config file.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`), tried in order.
    pub servers: Vec<String>,
    /// Client name shown by the server.
    pub name: String,
    /// Token auth.
    pub token: Option<String>,
    /// User for user/password auth.
    pub user: Option<String>,
    /// Password for user/password auth.
    pub password: Option<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// Reconnect attempts before giving up; `None` = forever (seed 004's `-1`).
    pub max_reconnects: Option<usize>,
    /// Delay between reconnect attempts, in milliseconds (a random 0-25% is added).
    pub reconnect_delay_ms: u64,
    /// How many outgoing messages may wait while disconnected; more are refused.
    pub reconnect_buffer: usize,
    /// How long one connection attempt may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Keep retrying the first connection instead of failing (for long-running processes).
    pub retry_on_initial_connect: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            name: "herald".to_owned(),
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            max_reconnects: None,
            reconnect_delay_ms: 2_000,
            reconnect_buffer: 8_192,
            connect_timeout_ms: 3_000,
            retry_on_initial_connect: false,
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("name", &self.name)
            .field("token", &redact(&self.token))
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("credentials_file", &self.credentials_file)
            .field("max_reconnects", &self.max_reconnects)
            .field("reconnect_delay_ms", &self.reconnect_delay_ms)
            .field("reconnect_buffer", &self.reconnect_buffer)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("retry_on_initial_connect", &self.retry_on_initial_connect)
            .finish()
    }
}

impl NatsConfig {
    /// Checks every field; the error names the key.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] naming the first bad key.
    pub fn validate(&self) -> Result<(), NatsError> {
        let bad = |key, reason: &str| {
            Err(NatsError::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.servers.is_empty() {
            return bad("servers", "at least one server URL is needed");
        }
        for s in &self.servers {
            let rest = s.split_once("://").map_or(s.as_str(), |(scheme, rest)| {
                if matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                    rest
                } else {
                    ""
                }
            });
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(NatsError::Config {
                    key: "servers",
                    reason: format!("{s:?} is not a nats://host:port URL"),
                });
            }
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user", "user and password go together");
        }
        if self.reconnect_buffer == 0 {
            return bad("reconnect_buffer", "must be at least 1");
        }
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms", "must be at least 1");
        }
        Ok(())
    }
}
