//! OpenTelemetry for Herald's hop spans: the [`Bridge`] that ties the core's `tracing` spans
//! (`publish {destination}`, `process {destination}`, see [`herald::hop`]) to OpenTelemetry,
//! and [`Telemetry`], the OTLP/HTTP (protobuf) exporter a surface turns on.
//!
//! The core has no OpenTelemetry dependency; a program that wants the spans exported starts
//! a [`Telemetry`] and adds its [`Telemetry::layer`] to its `tracing` subscriber:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let settings = herald_otel::TelemetrySettings {
//!     enabled: true,
//!     ..Default::default()
//! };
//! let telemetry = herald_otel::Telemetry::start(&settings).expect("settings").expect("on");
//! let subscriber = tracing_subscriber::registry().with(telemetry.layer());
//! tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
//! // ... run the bus, the worker, the consumers ...
//! telemetry.shutdown(); // the last spans are sent
//! ```
//!
//! Off by default: [`TelemetrySettings::active`] says when it is on (the `[telemetry]`
//! section, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` and friends).

mod bridge;
pub mod collect;
mod settings;
mod telemetry;
mod tls;

pub use bridge::Bridge;
pub use settings::{SettingsError, TelemetrySettings};
pub use telemetry::{Telemetry, TelemetryError};
