//! `NodeSettings`: a runtime node's config section (`[node]`: role, id, the built-in
//! projection's group and sources, timings), read with unknown keys refused and validated in
//! one place that the file, environment variables and flags all pass through.

use serde::{Deserialize, Serialize};

use crate::broker::BrokerRole;

/// The `[node]` section: one node of the processing runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// `coordinator`, `observer` or `full`.
    pub role: String,
    /// The node id (default: node-{pid}).
    pub id: Option<String>,
    /// The built-in counts projection's consumer group.
    pub group: String,
    /// The categories it consumes.
    pub sources: Vec<String>,
    /// Heartbeat interval; unset: the seed project's timings (10 s heartbeat, 60 s TTL).
    pub heartbeat_ms: Option<u64>,
    /// How often the consumer polls.
    pub poll_ms: u64,
    /// Checkpoint after this many events per source.
    pub checkpoint_every: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            role: "full".into(),
            id: None,
            group: "counts".into(),
            sources: Vec::new(),
            heartbeat_ms: None,
            poll_ms: 1000,
            checkpoint_every: 100,
        }
    }
}

/// A setting that is not valid: its key (in the section, as `node.KEY`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node.{key}: {reason}")]
pub struct SettingsError {
    /// The key, without the section.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

fn error(key: &'static str, reason: impl std::fmt::Display) -> SettingsError {
    SettingsError {
        key,
        reason: reason.to_string(),
    }
}

/// A node id: letters, digits, `_`, `-` and `.`, 1 to 64.
pub fn node_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A consumer group: letters, digits, `_` and `-`, 1 to 64 (it names dead-letter streams,
/// `deadletter-{group}.{source}`).
pub fn group_ok(group: &str) -> bool {
    (1..=64).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl NodeSettings {
    /// The role, parsed.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] for `role` when it is not coordinator, observer or full.
    pub fn broker_role(&self) -> Result<BrokerRole, SettingsError> {
        self.role
            .parse::<BrokerRole>()
            .map_err(|e| error("role", e))
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the first key that is not valid: an unknown role, a source
    /// that is not a category or is named twice, a malformed id or group, a timing of 0.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.broker_role()?;
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            herald::store::StreamName::category_name(s).map_err(|e| error("sources", e))?;
            if !seen.insert(s) {
                return Err(error("sources", format!("{s:?} is named twice")));
            }
        }
        if let Some(id) = &self.id {
            if !node_id_ok(id) {
                return Err(error(
                    "id",
                    format!("{id:?}: expected letters, digits, _, - and . (1 to 64)"),
                ));
            }
        }
        if !group_ok(&self.group) {
            return Err(error(
                "group",
                format!(
                    "{:?}: expected letters, digits, _ and - (1 to 64)",
                    self.group
                ),
            ));
        }
        for (key, v) in [
            ("heartbeat_ms", self.heartbeat_ms.unwrap_or(1)),
            ("poll_ms", self.poll_ms),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if v == 0 {
                return Err(error(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_each_bad_value_is_named() {
        let e = serde_json::from_str::<NodeSettings>(r#"{"rol": "full"}"#).expect_err("typo");
        assert!(e.to_string().contains("rol"), "{e}");
        assert_eq!(NodeSettings::default().validate(), Ok(()));
        let cases: [(NodeSettings, &str); 5] = [
            (
                NodeSettings {
                    role: "leader".into(),
                    ..NodeSettings::default()
                },
                "role",
            ),
            (
                NodeSettings {
                    sources: vec!["a".into(), "a".into()],
                    ..NodeSettings::default()
                },
                "sources",
            ),
            (
                NodeSettings {
                    id: Some("bad id".into()),
                    ..NodeSettings::default()
                },
                "id",
            ),
            (
                NodeSettings {
                    group: "a.b".into(),
                    ..NodeSettings::default()
                },
                "group",
            ),
            (
                NodeSettings {
                    poll_ms: 0,
                    ..NodeSettings::default()
                },
                "poll_ms",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(settings.validate().expect_err(key).key, key);
        }
    }
}
