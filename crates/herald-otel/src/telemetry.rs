//! [`Telemetry`]: the tracer provider, its OTLP/HTTP (protobuf) exporter on a small runtime of
//! its own, the `tracing` layer, and the [`Bridge`](crate::Bridge) installed once per
//! process.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::settings::{SettingsError, TelemetrySettings};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A setting is not valid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The exporter's runtime or client could not be built.
    #[error("telemetry: {0}")]
    Exporter(String),
}

/// The exporter's HTTP client: hyper's, through [`Connector`](crate::tls::Connector) (TLS for
/// `https://`), run on the exporter's own runtime (the SDK's batch processor exports from a
/// thread of its own, outside any runtime).
#[derive(Debug, Clone)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient<crate::tls::Connector>,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.handle
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// Exported spans: the provider and the runtime its exporter sends from. Flushes and shuts
/// down when dropped ([`Telemetry::shutdown`]).
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The per-export deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl Telemetry {
    /// Starts exporting by OTLP/HTTP (protobuf) when `settings` say telemetry is on
    /// ([`TelemetrySettings::active`]), in batches from a thread of the SDK's; `None` when it
    /// is off. Installs the [`Bridge`](crate::Bridge).
    ///
    /// # Errors
    ///
    /// [`TelemetryError::Settings`] naming a key or variable that is not valid;
    /// [`TelemetryError::Exporter`] when the exporter cannot be built.
    pub fn start(settings: &TelemetrySettings) -> Result<Option<Telemetry>, TelemetryError> {
        settings.validate()?;
        if !settings.active() {
            return Ok(None);
        }
        let url = settings.traces_url()?;
        // TLS only for an https:// collector: its roots are loaded now, so a bad certificate
        // file is an error at start, not a silent failure of every export (and
        // before the runtime exists: dropping one inside an async caller would panic).
        let tls = if url.starts_with("https://") {
            let file = settings.certificate_file();
            Some(
                crate::tls::client_config(file.as_deref().map(std::path::Path::new))
                    .map_err(|e| TelemetryError::Exporter(format!("TLS: {e}")))?,
            )
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herald-otlp")
            .enable_all()
            .build()
            .map_err(|e| TelemetryError::Exporter(format!("the exporter's runtime: {e}")))?;
        let client = OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::new(
                crate::tls::Connector::new(tls),
                EXPORT_TIMEOUT,
                None,
            ),
            handle: runtime.handle().clone(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let builder = SdkTracerProvider::builder().with_batch_exporter(exporter);
        Ok(Some(Telemetry::installed(
            builder,
            &settings.service(),
            Some(runtime),
        )))
    }

    /// Spans to `exporter`, each as it ends (the in-memory exporter of a test, the collector
    /// of `herald demo --trace`). Installs the [`Bridge`](crate::Bridge).
    pub fn with_exporter(exporter: impl SpanExporter + 'static, service: &str) -> Telemetry {
        let builder = SdkTracerProvider::builder().with_simple_exporter(exporter);
        Telemetry::installed(builder, service, None)
    }

    /// Spans to `exporter` in batches, from the SDK's own thread, as [`Telemetry::start`]
    /// sends them (with a [`Discard`](crate::collect::Discard) exporter: what tracing costs
    /// the hops themselves, for `herald bench trace`). Installs the [`Bridge`](crate::Bridge).
    pub fn with_batch_exporter(exporter: impl SpanExporter + 'static, service: &str) -> Telemetry {
        let builder = SdkTracerProvider::builder().with_batch_exporter(exporter);
        Telemetry::installed(builder, service, None)
    }

    /// The provider `builder` makes, named `service`, with the bridge installed.
    fn installed(
        builder: opentelemetry_sdk::trace::TracerProviderBuilder,
        service: &str,
        runtime: Option<tokio::runtime::Runtime>,
    ) -> Telemetry {
        let provider = builder
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        herald::hop::install_bridge(crate::Bridge);
        Telemetry { provider, runtime }
    }

    /// The `tracing` layer that records spans (Herald's hops and the program's own) into
    /// OpenTelemetry.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("herald"))
    }

    /// Sends what is still buffered now.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("telemetry: flush: {e}");
        }
    }

    /// Sends what is still buffered and stops (also done on drop).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("telemetry: shutdown: {e}");
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
