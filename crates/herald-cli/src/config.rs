//! Herald's one typed config: a TOML file (`--config`, `HERALD_CONFIG`), then `HERALD_*`
//! environment overrides, then command-line flags; validated at load. Any error is one line
//! naming the key path and the file, and the process exits with 78 (EX_CONFIG). Secrets
//! (passwords in URLs) are redacted in everything it prints.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CliError;

/// The whole config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HeraldConfig {
    /// The durable store URL (may hold a password).
    pub(crate) store: String,
    /// The bus URL (may hold credentials).
    pub(crate) bus: String,
    /// Seed 001's `WorkerConfig` fields.
    pub(crate) worker: WorkerSection,
    /// The observability server.
    pub(crate) http: HttpSection,
    /// `herald node`: its role and its consumers.
    pub(crate) node: NodeSection,
    /// Span export (OpenTelemetry, OTLP/HTTP): off by default; the standard `OTEL_*`
    /// variables fill what it leaves empty. herald-otel owns the section.
    pub(crate) telemetry: herald_otel::TelemetrySettings,
    /// Flow policies by queue (`[flow.QUEUE]`, the fields of `herald queue policy set`);
    /// `herald worker` sets them on its store as it starts.
    pub(crate) flow: std::collections::BTreeMap<String, herald::queue::flow::Policy>,
    /// Where each key's value came from (`file PATH`, `environment $VAR`, `flag --x`);
    /// a key not here has its default.
    #[serde(skip)]
    pub(crate) sources: std::collections::BTreeMap<String, String>,
}

/// Seed 001's `WorkerConfig`, as a config section: herald-worker owns it (its keys, its
/// defaults, its validation).
pub(crate) type WorkerSection = herald_worker::WorkerSettings;

/// `herald node`'s settings, its flags override them: herald-runtime owns the section (its
/// keys, its defaults, its validation).
pub(crate) type NodeSection = herald_runtime::NodeSettings;

/// Where `/health` and friends are served: herald-http owns the section.
pub(crate) type HttpSection = herald_http::HttpSettings;

impl Default for HeraldConfig {
    fn default() -> Self {
        HeraldConfig {
            store: "sqlite://.herald/herald.db".into(),
            bus: "nats://127.0.0.1:4222".into(),
            worker: WorkerSection::default(),
            http: HttpSection::default(),
            node: NodeSection::default(),
            telemetry: herald_otel::TelemetrySettings::default(),
            flow: std::collections::BTreeMap::new(),
            sources: std::collections::BTreeMap::new(),
        }
    }
}

/// A config error: the key path, where it came from, and what is wrong.
fn bad(key: &str, from: &str, what: impl std::fmt::Display) -> CliError {
    CliError::Config(format!("config key `{key}` in {from}: {what}"))
}

/// Reads `file` (if any), applies the `HERALD_*` overrides, and validates.
pub(crate) fn load(file: Option<&Path>) -> Result<HeraldConfig, CliError> {
    let mut config = match file {
        Some(path) => read_file(path)?,
        None => HeraldConfig::default(),
    };
    apply_env(&mut config)?;
    config.validate()?;
    Ok(config)
}

/// The config a command runs with: the file, then `HERALD_*` variables, then the global
/// `--store` and `--bus` flags, validated once with each key blamed on where it came from.
pub(crate) fn resolve(global: &crate::cli::Global) -> Result<HeraldConfig, CliError> {
    let mut config = match global.config.as_deref() {
        Some(path) => read_file(path)?,
        None => HeraldConfig::default(),
    };
    apply_env(&mut config)?;
    if let Some(store) = &global.store {
        config.set("store", "flag --store", |c| c.store = store.clone());
    }
    if let Some(bus) = &global.bus {
        config.set("bus", "flag --bus", |c| c.bus = bus.clone());
    }
    config.validate()?;
    Ok(config)
}

fn read_file(path: &Path) -> Result<HeraldConfig, CliError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("config file {shown}: {e}")))?;
    from_text(&text, &shown)
}

/// A config file's text, read as `--config` reads it and validated, without the `HERALD_*`
/// overrides (the fuzz target's entry).
pub(crate) fn parse(text: &str, shown: &str) -> Result<HeraldConfig, CliError> {
    let config = from_text(text, shown)?;
    config.validate()?;
    Ok(config)
}

/// A config file's text (`shown` names it in errors), deserialized, its keys noted as set.
fn from_text(text: &str, shown: &str) -> Result<HeraldConfig, CliError> {
    let de = toml::Deserializer::new(text);
    let mut config: HeraldConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let what = one_line(&e.into_inner().to_string());
        if key == "." {
            CliError::Config(format!("config file {shown}: {what}"))
        } else {
            bad(&key, shown, what)
        }
    })?;
    // It parsed as a config, so it parses as a table: note which keys the file set.
    if let Ok(table) = text.parse::<toml::Table>() {
        for (k, v) in &table {
            match v.as_table() {
                Some(section) => {
                    for sub in section.keys() {
                        config
                            .sources
                            .insert(format!("{k}.{sub}"), format!("file {shown}"));
                    }
                }
                None => {
                    config.sources.insert(k.clone(), format!("file {shown}"));
                }
            }
        }
    }
    Ok(config)
}

/// The parser's message on one line, without the echo of the file's line (which could hold
/// a secret) or the caret under it.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| {
            let echo = l
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
            !l.is_empty() && !echo && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The worker fields `HERALD_WORKER_<FIELD>` sets.
const WORKER_VARS: [&str; 9] = [
    "WORKER_ID",
    "NAMESPACE",
    "ENVIRONMENT",
    "POLLING_INTERVAL_MS",
    "STARVATION_THRESHOLD_MS",
    "MAX_CONCURRENT_HANDLERS",
    "HANDLER_TIMEOUT_MS",
    "DISPATCH_BUFFER_SIZE",
    "COMPLETION_BUFFER_SIZE",
];

/// The node fields `HERALD_NODE_<FIELD>` sets.
const NODE_VARS: [&str; 7] = [
    "ROLE",
    "ID",
    "GROUP",
    "SOURCES",
    "HEARTBEAT_MS",
    "POLL_MS",
    "CHECKPOINT_EVERY",
];

/// A variable under a config section's prefix (`HERALD_WORKER_`, `HERALD_NODE_`,
/// `HERALD_HTTP_`) that names no key of it: a typo, refused like an unknown key in the file.
/// Other `HERALD_*` variables (`HERALD_LOG`, `HERALD_CONFIG`, the tests' `HERALD_TEST_*`)
/// are not config keys and are left alone.
fn unknown_var(name: &str) -> Option<String> {
    let known = |prefix: &str, fields: &[&str]| {
        name.strip_prefix(prefix)
            .map(|field| fields.contains(&field))
    };
    let verdict = known("HERALD_WORKER_", &WORKER_VARS)
        .or_else(|| known("HERALD_NODE_", &NODE_VARS))
        .or_else(|| known("HERALD_HTTP_", &["ADDR"]));
    match verdict {
        Some(false) => Some(name.to_owned()),
        _ => None,
    }
}

/// `HERALD_*` overrides: `HERALD_STORE`, `HERALD_BUS`, `HERALD_HTTP_ADDR`,
/// `HERALD_WORKER_<FIELD>` for each worker field and `HERALD_NODE_<FIELD>` for each node
/// field (`SOURCES` comma-separated).
fn apply_env(c: &mut HeraldConfig) -> Result<(), CliError> {
    for (name, _) in std::env::vars_os() {
        if let Some(unknown) = name.to_str().and_then(unknown_var) {
            return Err(CliError::Config(format!(
                "config variable ${unknown} in the environment: no such key (the {} section has {})",
                section_of(&unknown),
                keys_of(&unknown)
            )));
        }
    }
    let mut set = Vec::new();
    env_top(c, &mut set);
    env_node(&mut c.node, &mut set)?;
    env_worker(&mut c.worker, &mut set)?;
    for (key, env) in set {
        c.sources.insert(key, format!("environment ${env}"));
    }
    Ok(())
}

/// `(key, variable)` pairs of the values the environment set.
type SetBy = Vec<(String, String)>;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `HERALD_STORE`, `HERALD_BUS`, `HERALD_HTTP_ADDR`.
fn env_top(c: &mut HeraldConfig, set: &mut SetBy) {
    if let Some(v) = var("HERALD_STORE") {
        c.store = v;
        set.push(("store".to_owned(), "HERALD_STORE".to_owned()));
    }
    if let Some(v) = var("HERALD_BUS") {
        c.bus = v;
        set.push(("bus".to_owned(), "HERALD_BUS".to_owned()));
    }
    if let Some(v) = var("HERALD_HTTP_ADDR") {
        c.http.addr = v;
        set.push(("http.addr".to_owned(), "HERALD_HTTP_ADDR".to_owned()));
    }
}

/// `HERALD_NODE_*`.
fn env_node(n: &mut NodeSection, set: &mut SetBy) -> Result<(), CliError> {
    for (name, key, slot) in [
        ("HERALD_NODE_ROLE", "node.role", &mut n.role),
        ("HERALD_NODE_GROUP", "node.group", &mut n.group),
    ] {
        if let Some(v) = var(name) {
            *slot = v;
            set.push((key.to_owned(), name.to_owned()));
        }
    }
    if let Some(v) = var("HERALD_NODE_ID") {
        n.id = Some(v);
        set.push(("node.id".to_owned(), "HERALD_NODE_ID".to_owned()));
    }
    if let Some(v) = var("HERALD_NODE_SOURCES") {
        n.sources = v.split(',').map(|s| s.trim().to_owned()).collect();
        set.push(("node.sources".to_owned(), "HERALD_NODE_SOURCES".to_owned()));
    }
    for (name, key) in [
        ("HERALD_NODE_HEARTBEAT_MS", "node.heartbeat_ms"),
        ("HERALD_NODE_POLL_MS", "node.poll_ms"),
        ("HERALD_NODE_CHECKPOINT_EVERY", "node.checkpoint_every"),
    ] {
        if let Some(v) = var(name) {
            let parsed = number_var(key, name, &v)?;
            match key {
                "node.heartbeat_ms" => n.heartbeat_ms = Some(parsed),
                "node.poll_ms" => n.poll_ms = parsed,
                _ => n.checkpoint_every = parsed,
            }
            set.push((key.to_owned(), name.to_owned()));
        }
    }
    Ok(())
}

/// `HERALD_WORKER_*`.
fn env_worker(w: &mut WorkerSection, set: &mut SetBy) -> Result<(), CliError> {
    for (name, key, slot) in [
        ("WORKER_ID", "worker.worker_id", &mut w.worker_id),
        ("NAMESPACE", "worker.namespace", &mut w.namespace),
        ("ENVIRONMENT", "worker.environment", &mut w.environment),
    ] {
        let env = format!("HERALD_WORKER_{name}");
        if let Some(v) = var(&env) {
            *slot = v;
            set.push((key.to_owned(), env));
        }
    }
    for (name, key, slot) in [
        (
            "POLLING_INTERVAL_MS",
            "worker.polling_interval_ms",
            &mut w.polling_interval_ms,
        ),
        (
            "STARVATION_THRESHOLD_MS",
            "worker.starvation_threshold_ms",
            &mut w.starvation_threshold_ms,
        ),
        (
            "MAX_CONCURRENT_HANDLERS",
            "worker.max_concurrent_handlers",
            &mut w.max_concurrent_handlers,
        ),
        (
            "HANDLER_TIMEOUT_MS",
            "worker.handler_timeout_ms",
            &mut w.handler_timeout_ms,
        ),
        (
            "DISPATCH_BUFFER_SIZE",
            "worker.dispatch_buffer_size",
            &mut w.dispatch_buffer_size,
        ),
        (
            "COMPLETION_BUFFER_SIZE",
            "worker.completion_buffer_size",
            &mut w.completion_buffer_size,
        ),
    ] {
        let env = format!("HERALD_WORKER_{name}");
        if let Some(v) = var(&env) {
            *slot = number_var(key, &env, &v)?;
            set.push((key.to_owned(), env));
        }
    }
    Ok(())
}

fn section_of(var: &str) -> &'static str {
    if var.starts_with("HERALD_WORKER_") {
        "worker"
    } else if var.starts_with("HERALD_NODE_") {
        "node"
    } else {
        "http"
    }
}

fn keys_of(var: &str) -> String {
    let (prefix, fields): (&str, &[&str]) = match section_of(var) {
        "worker" => ("HERALD_WORKER_", &WORKER_VARS),
        "node" => ("HERALD_NODE_", &NODE_VARS),
        _ => ("HERALD_HTTP_", &["ADDR"]),
    };
    fields
        .iter()
        .map(|f| format!("${prefix}{f}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A whole number from a variable; zero is left to `validate`, which names the key.
fn number_var(key: &str, env: &str, v: &str) -> Result<u64, CliError> {
    v.trim().parse().map_err(|_| {
        bad(
            key,
            &format!("environment ${env}"),
            format!("expected a positive whole number, got {v:?}"),
        )
    })
}

impl HeraldConfig {
    /// Sets a key from `source` (`flag --x`, ...), noting where it came from.
    pub(crate) fn set(&mut self, key: &str, source: &str, apply: impl FnOnce(&mut Self)) {
        apply(self);
        self.sources.insert(key.to_owned(), source.to_owned());
    }

    /// `herald node`'s flags over the `[node]` section, before `validate`.
    pub(crate) fn apply_node_flags(&mut self, args: &crate::cli::NodeArgs) {
        if let Some(role) = &args.role {
            self.set("node.role", "flag --role", |c| c.node.role = role.clone());
        }
        if let Some(id) = &args.id {
            self.set("node.id", "flag --id", |c| c.node.id = Some(id.clone()));
        }
        if !args.sources.is_empty() {
            self.set("node.sources", "flag --sources", |c| {
                c.node.sources = args.sources.clone();
            });
        }
        if let Some(group) = &args.group {
            self.set("node.group", "flag --group", |c| {
                c.node.group = group.clone()
            });
        }
        if let Some(ms) = args.heartbeat_ms {
            self.set("node.heartbeat_ms", "flag --heartbeat-ms", |c| {
                c.node.heartbeat_ms = Some(ms);
            });
        }
        if let Some(ms) = args.poll_ms {
            self.set("node.poll_ms", "flag --poll-ms", |c| c.node.poll_ms = ms);
        }
        if let Some(n) = args.checkpoint_every {
            self.set("node.checkpoint_every", "flag --checkpoint-every", |c| {
                c.node.checkpoint_every = n;
            });
        }
    }

    /// The one validation the file, the variables and the flags all pass through; an error
    /// names the key and where its value came from.
    pub(crate) fn validate(&self) -> Result<(), CliError> {
        let at = |key: &str| self.blame(key);
        self.worker.validate().map_err(|e| {
            let key = format!("worker.{}", e.key);
            bad(&key, &at(&key), e.reason)
        })?;
        self.validate_node()?;
        self.http.validate().map_err(|e| {
            let key = format!("http.{}", e.key);
            bad(&key, &at(&key), e.reason)
        })?;
        self.telemetry
            .validate()
            .map_err(|e| bad(&e.key, &at(&e.key), e.reason))?;
        for (queue, policy) in &self.flow {
            let key = format!("flow.{queue}");
            herald::queue::QueueName::new(queue).map_err(|e| bad(&key, &at(&key), e))?;
            policy.validate().map_err(|e| bad(&key, &at(&key), e))?;
        }
        if !(self.store.starts_with("sqlite:") || self.store.starts_with("postgres")) {
            return Err(bad(
                "store",
                &at("store"),
                format!(
                    "{:?}: expected sqlite://PATH or postgres://...",
                    redact_password(&self.store)
                ),
            ));
        }
        if !(self.bus.starts_with("nats://")
            || self.bus.starts_with("tls://")
            || self.bus.starts_with("memory://"))
        {
            return Err(bad(
                "bus",
                &at("bus"),
                format!(
                    "{:?}: expected nats://HOST:PORT, tls://HOST:PORT or memory://",
                    redact(&self.bus)
                ),
            ));
        }
        Ok(())
    }

    fn validate_node(&self) -> Result<(), CliError> {
        self.node.validate().map_err(|e| {
            let key = format!("node.{}", e.key);
            bad(&key, &self.blame(&key), e.reason)
        })
    }
}

/// A database URL with its password (not its user name) replaced by `***`.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && url[s + 3..at].contains(':') => redact(url),
        _ => url.to_owned(),
    }
}

/// A URL with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

impl HeraldConfig {
    /// Where `key`'s value came from, as an error says it: `file PATH`, `environment $VAR`,
    /// `flag --x` or `the defaults`.
    fn blame(&self, key: &str) -> String {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| "the defaults".to_owned())
    }

    /// The store someone chose (a flag, a variable, the file), `None` on the default: the
    /// benchmarks and chaos then use scratch stores of their own.
    pub(crate) fn chosen_store(&self) -> Option<String> {
        self.sources
            .contains_key("store")
            .then(|| self.store.clone())
    }

    /// Where `key` (a dotted path) came from.
    pub(crate) fn source_of(&self, key: &str) -> String {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| "default".to_owned())
    }

    /// Every key of the redacted config with its value and where it came from.
    pub(crate) fn verbose(&self) -> serde_json::Value {
        let shown = serde_json::to_value(self.redacted()).unwrap_or_default();
        let mut out = serde_json::Map::new();
        if let Some(top) = shown.as_object() {
            for (k, v) in top {
                match v.as_object() {
                    Some(section) => {
                        for (sub, value) in section {
                            let key = format!("{k}.{sub}");
                            let source = self.source_of(&key);
                            out.insert(key, serde_json::json!({"value": value, "source": source}));
                        }
                    }
                    None => {
                        out.insert(
                            k.clone(),
                            serde_json::json!({"value": v, "source": self.source_of(k)}),
                        );
                    }
                }
            }
        }
        serde_json::Value::Object(out)
    }

    /// The config with every secret redacted, for printing.
    pub(crate) fn redacted(&self) -> HeraldConfig {
        HeraldConfig {
            store: redact(&self.store),
            bus: redact(&self.bus),
            ..self.clone()
        }
    }
}

/// `herald config`: the effective config, redacted; `--check FILE` only validates.
pub(crate) fn command(
    args: crate::cli::ConfigArgs,
    global: &crate::cli::Global,
) -> Result<(), CliError> {
    let config = match &args.check {
        Some(file) => load(Some(file))?,
        None => resolve(global)?,
    };
    if args.check.is_some() {
        crate::output::warn_line!("config OK");
        return Ok(());
    }
    let shown = config.redacted();
    let text = if args.json {
        serde_json::to_string_pretty(&shown).map_err(|e| CliError::Other(e.to_string()))?
    } else {
        toml::to_string(&shown).map_err(|e| CliError::Other(e.to_string()))?
    };
    let _ = crate::output::print_line(text.trim_end())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://u:s3cret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("nats://tok3n@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("sqlite://.herald/h.db"), "sqlite://.herald/h.db");
    }
}
