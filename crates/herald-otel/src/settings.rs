//! The `[telemetry]` section: whether spans are exported, where to, under which service
//! name; the standard `OTEL_*` variables fill what it leaves empty.

use serde::{Deserialize, Serialize};

/// The `[telemetry]` section. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Export spans. Also on, without this, when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none` turns it off whatever is set here.
    pub enabled: bool,
    /// The collector's base URL, `http://HOST:PORT` or `https://HOST:PORT` (spans go to
    /// `{endpoint}/v1/traces`).
    /// Empty: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as given), else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`.
    pub endpoint: String,
    /// `service.name`. Empty: `OTEL_SERVICE_NAME`, else `herald`.
    pub service_name: String,
    /// For an `https://` endpoint: a PEM file of the certificates that may sign the
    /// collector's (a private CA). Empty: `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, else
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's certificate store.
    pub certificate: String,
}

/// A setting that is not valid: its key (as `telemetry.KEY` or the variable) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SettingsError {
    /// The key or the environment variable.
    pub key: String,
    /// What is wrong with its value.
    pub reason: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Checks an endpoint: `http://HOST[:PORT][/PATH]` or `https://...`.
fn check_endpoint(key: &str, url: &str) -> Result<(), SettingsError> {
    let bad = |reason: &str| SettingsError {
        key: key.to_owned(),
        reason: format!("{url:?}: {reason}"),
    };
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(bad("not an http:// or https:// URL"));
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    Ok(())
}

impl TelemetrySettings {
    /// Checks the section's own values.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming `telemetry.endpoint` when it is not an `http://` or
    /// `https://` URL.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.endpoint.is_empty() {
            check_endpoint("telemetry.endpoint", &self.endpoint)?;
        }
        Ok(())
    }

    /// Whether spans are exported: the section's `enabled` or an `OTEL_*` endpoint variable,
    /// unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn active(&self) -> bool {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return false;
        }
        self.enabled
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    }

    /// The URL spans are sent to (see [`TelemetrySettings::endpoint`]).
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the key or variable whose URL is not `http://` or
    /// `https://`.
    pub fn traces_url(&self) -> Result<String, SettingsError> {
        let (key, url) = if !self.endpoint.is_empty() {
            ("telemetry.endpoint", base(&self.endpoint))
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base(&url))
        } else {
            (
                "telemetry.endpoint",
                "http://localhost:4318/v1/traces".to_owned(),
            )
        };
        check_endpoint(key, &url)?;
        Ok(url)
    }

    /// The PEM file of the certificates an `https://` collector's may be signed by (see
    /// [`TelemetrySettings::certificate`]); `None`: the system's store.
    pub fn certificate_file(&self) -> Option<String> {
        if !self.certificate.is_empty() {
            return Some(self.certificate.clone());
        }
        var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
            .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    }

    /// The `service.name` spans are exported under.
    pub fn service(&self) -> String {
        if !self.service_name.is_empty() {
            return self.service_name.clone();
        }
        var("OTEL_SERVICE_NAME").unwrap_or_else(|| "herald".to_owned())
    }
}

/// A base URL with OTLP's trace path.
fn base(url: &str) -> String {
    format!("{}/v1/traces", url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_that_is_not_http_is_named() {
        for (url, why) in [
            ("ftp://collector:4318", "not an http:// or https:// URL"),
            ("collector:4318", "not an http:// or https:// URL"),
            ("https://", "no host"),
            ("http://", "no host"),
        ] {
            let s = TelemetrySettings {
                endpoint: url.into(),
                ..Default::default()
            };
            let e = s.validate().expect_err(url);
            assert_eq!(e.key, "telemetry.endpoint");
            assert!(e.to_string().contains(why), "{e}");
        }
        let s = TelemetrySettings {
            endpoint: "http://127.0.0.1:4318/".into(),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        assert_eq!(
            s.traces_url().as_deref(),
            Ok("http://127.0.0.1:4318/v1/traces")
        );
        let s = TelemetrySettings {
            endpoint: "https://collector.example:4318".into(),
            ..Default::default()
        };
        assert_eq!(
            s.traces_url().as_deref(),
            Ok("https://collector.example:4318/v1/traces")
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = serde_json::from_str::<TelemetrySettings>(r#"{"endpont": "http://x"}"#)
            .expect_err("a typo");
        assert!(e.to_string().contains("endpont"), "{e}");
    }
}
