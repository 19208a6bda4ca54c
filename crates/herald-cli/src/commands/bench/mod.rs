//! `herald bench`: each Herald figure beside the raw library's figure, measured in the same run,
//! printed as a table or as one JSON line per figure.

pub(crate) mod bus;
pub(crate) mod nats;
pub(crate) mod queue;
pub(crate) mod relay;
pub(crate) mod runtime;
pub(crate) mod store;
pub(crate) mod trace;
pub(crate) mod worker;

use std::future::Future;
use std::time::Instant;

use serde::Serialize;

use crate::cli::{BenchArgs, Suite};
use crate::output::print_line;
use crate::CliError;

/// One measured figure. `ratio > 1` means Herald is better.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) herald: f64,
    pub(crate) baseline: f64,
    pub(crate) ratio: f64,
    pub(crate) unit: String,
    #[serde(skip)]
    pub(crate) baseline_name: String,
    #[serde(skip)]
    pub(crate) target: Option<f64>,
}

impl Figure {
    /// A figure where more is better (throughput).
    pub(crate) fn higher(
        name: &str,
        unit: &str,
        herald: f64,
        baseline: f64,
        baseline_name: &str,
    ) -> Self {
        Figure {
            name: name.into(),
            herald,
            baseline,
            ratio: if baseline > 0.0 {
                herald / baseline
            } else {
                0.0
            },
            unit: unit.into(),
            baseline_name: baseline_name.into(),
            target: None,
        }
    }

    /// A figure where less is better (latency, memory).
    pub(crate) fn lower(
        name: &str,
        unit: &str,
        herald: f64,
        baseline: f64,
        baseline_name: &str,
    ) -> Self {
        Figure {
            ratio: if herald > 0.0 { baseline / herald } else { 0.0 },
            ..Figure::higher(name, unit, herald, baseline, baseline_name)
        }
    }

    pub(crate) fn target(mut self, t: f64) -> Self {
        self.target = Some(t);
        self
    }
}

/// Prints figures as they come. A closed pipe (`| head`) is not an error; any other failure
/// to write is.
pub(crate) struct Report {
    json: bool,
}

impl Report {
    pub(crate) fn new(json: bool) -> Result<Self, CliError> {
        if !json {
            print_line(&format!(
                "{:<34} {:>14} {:>14} {:>8}  {:<10} baseline",
                "figure", "herald", "baseline", "ratio", "unit"
            ))?;
        }
        Ok(Report { json })
    }

    pub(crate) fn add(&mut self, f: Figure) -> Result<(), CliError> {
        let line = if self.json {
            serde_json::to_string(&f).map_err(|e| CliError::Other(e.to_string()))?
        } else {
            let target = match f.target {
                Some(t) if f.ratio >= t => format!(" (target {t}x: met)"),
                Some(t) => format!(" (target {t}x: NOT met)"),
                None => String::new(),
            };
            format!(
                "{:<34} {:>14} {:>14} {:>7.2}x  {:<10} {}{}",
                f.name,
                human(f.herald),
                human(f.baseline),
                f.ratio,
                f.unit,
                f.baseline_name,
                target
            )
        };
        print_line(&line)?;
        Ok(())
    }
}

fn human(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// Runs `a` and `b` alternately `runs` times each (so that drift in the machine or the
/// server hits both alike) and returns the median of each.
pub(crate) async fn paired<FA, FutA, FB, FutB>(
    runs: usize,
    mut a: FA,
    mut b: FB,
) -> Result<(f64, f64), CliError>
where
    FA: FnMut() -> FutA,
    FutA: Future<Output = Result<f64, CliError>>,
    FB: FnMut() -> FutB,
    FutB: Future<Output = Result<f64, CliError>>,
{
    let (mut va, mut vb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        if i % 2 == 0 {
            va.push(a().await?);
            vb.push(b().await?);
        } else {
            vb.push(b().await?);
            va.push(a().await?);
        }
    }
    va.sort_by(|x, y| x.total_cmp(y));
    vb.sort_by(|x, y| x.total_cmp(y));
    Ok((va[va.len() / 2], vb[vb.len() / 2]))
}

/// Operations per second for `n` operations that took since `start`.
pub(crate) fn rate(n: u64, start: Instant) -> f64 {
    n as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

pub(crate) async fn run(args: BenchArgs, store: &str, bus: &str) -> Result<(), CliError> {
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        return Err(CliError::Usage(format!(
            "--scale must be in (0, 100], got {}",
            args.scale
        )));
    }
    if let Some(side) = args.tracing {
        return trace::side(side, args.scale, bus).await;
    }
    let mut report = Report::new(args.json)?;
    if matches!(args.suite, Suite::Bus | Suite::All) {
        bus::run(&mut report, args.scale).await?;
    }
    if matches!(args.suite, Suite::Nats | Suite::All) {
        nats::run(&mut report, args.scale, bus).await?;
    }
    if matches!(args.suite, Suite::Queue | Suite::All) {
        queue::run(&mut report, args.scale, store).await?;
    }
    if matches!(args.suite, Suite::Store | Suite::All) {
        store::run(&mut report, args.scale, store).await?;
    }
    if matches!(args.suite, Suite::Runtime | Suite::All) {
        runtime::run(&mut report, args.scale, store).await?;
    }
    if matches!(args.suite, Suite::Relay | Suite::All) {
        relay::run(&mut report, args.scale, store, bus).await?;
    }
    if matches!(args.suite, Suite::Worker | Suite::All) {
        worker::run(&mut report, args.scale, store).await?;
    }
    if matches!(args.suite, Suite::Trace | Suite::All) {
        trace::run(&mut report, args.scale, bus).await?;
    }
    if !args.json {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        print_line(&format!("machine load (1/5/15 min): {}", load.join(" ")))?;
    }
    Ok(())
}
