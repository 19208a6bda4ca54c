//! `HttpSettings`: the observability server's config section (`[http]`: where `/health`,
//! `/metrics` and the live page are served), read with unknown keys refused and validated in
//! one place.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::DEFAULT_ADDR;

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// `HOST:PORT` to listen on (default [`DEFAULT_ADDR`]).
    pub addr: String,
    /// When `/readyz` turns 503 (`[http.ready]`): a consumed queue's oldest message, a
    /// consumer's lag, the coordinator lease, a dead-letter place's growth.
    pub ready: herald::observe::lag::Thresholds,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            addr: DEFAULT_ADDR.into(),
            ready: herald::observe::lag::Thresholds::default(),
        }
    }
}

/// A setting that is not valid: its key (in the section, as `http.KEY`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("http.{key}: {reason}")]
pub struct SettingsError {
    /// The key, without the section.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl HttpSettings {
    /// The address to listen on.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] for `addr` when it is not `HOST:PORT` with a literal IP.
    pub fn socket_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.addr.parse().map_err(|e| SettingsError {
            key: "addr",
            reason: format!("{:?}: {e}", self.addr),
        })
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// As [`HttpSettings::socket_addr`].
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.socket_addr().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_checked_and_unknown_keys_are_refused() {
        assert_eq!(HttpSettings::default().validate(), Ok(()));
        let bad = HttpSettings {
            addr: "nonsense".into(),
            ..HttpSettings::default()
        };
        assert_eq!(bad.validate().expect_err("not an address").key, "addr");
        let e = serde_json::from_str::<HttpSettings>(r#"{"adr": "x"}"#).expect_err("typo");
        assert!(e.to_string().contains("adr"), "{e}");
    }
}
