//! Lag, not only depth: what a store says about how far behind its work is (each queue's
//! depth, visible and delayed messages, oldest age and dead letters; each runtime consumer's
//! checkpoint lag with its allocation's epoch and holder; each node's heartbeat age; the
//! coordinator lease), the readiness rule over it (`Thresholds`, `judge`), and its Prometheus
//! text.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::flow::{FlowControl, Waiting};
use crate::queue::{Queue, QueueName};
use crate::store::{BrokerStore, EventStore};

/// One queue's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueLag {
    /// The queue.
    pub queue: String,
    /// Messages in it.
    pub depth: i64,
    /// Messages a read would get now.
    pub visible: i64,
    /// Messages hidden: being worked on, or sent with a delay.
    pub delayed: i64,
    /// Age of the oldest message, in seconds.
    pub oldest_age_seconds: Option<i64>,
    /// Letters in its dead-letter place (`{queue}_dlq`), when it has one.
    pub dead_letters: Option<i64>,
    /// Visible messages its flow policy holds back, by reason, when it has a policy.
    pub waiting: Option<Waiting>,
}

/// One runtime consumer's position on one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerLag {
    /// The consumer group.
    pub group: String,
    /// The source (a category).
    pub source: String,
    /// Its checkpoint (a global position), if it saved one.
    pub checkpoint: Option<i64>,
    /// Events of the source after the checkpoint: how far behind the head it is.
    pub lag: u64,
    /// The allocation's epoch.
    pub epoch: u64,
    /// The node that holds the source; none while revoked.
    pub holder: Option<String>,
}

/// One node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeLag {
    /// The node.
    pub node_id: String,
    /// Its role.
    pub role: String,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Whether it is live (seen within its time to live).
    pub live: bool,
}

/// The coordinator lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseLag {
    /// Who holds it.
    pub holder: String,
    /// Its epoch.
    pub epoch: u64,
    /// Whether it is held (not expired).
    pub live: bool,
}

/// Everything at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LagReport {
    /// Every queue of the store, by name (dead-letter places included).
    pub queues: Vec<QueueLag>,
    /// Every allocated consumer source, by group then source.
    pub consumers: Vec<ConsumerLag>,
    /// Every node that heartbeated, by id.
    pub nodes: Vec<NodeLag>,
    /// The lease, once taken.
    pub lease: Option<LeaseLag>,
}

/// Reads the report from `store`; nodes are live within `node_ttl` (or their own).
///
/// # Errors
///
/// The first store error, as its one-line report.
pub async fn collect<S>(store: &S, node_ttl: Duration) -> Result<LagReport, String>
where
    S: Queue + EventStore + BrokerStore + FlowControl,
{
    let err = |e: &dyn std::error::Error| crate::report(e);
    let names = store.list().await.map_err(|e| err(&e))?;
    let mut queues = Vec::with_capacity(names.len());
    for name in &names {
        let Ok(q) = QueueName::new(name) else {
            continue;
        };
        let m = store.metrics(&q).await.map_err(|e| err(&e))?;
        let dlq = format!("{name}_dlq");
        let dead_letters = if names.contains(&dlq) {
            let place = QueueName::new(&dlq).map_err(|e| err(&e))?;
            Some(
                store
                    .metrics(&place)
                    .await
                    .map_err(|e| err(&e))?
                    .queue_length,
            )
        } else {
            None
        };
        let flow = store.flow_status(&q).await.map_err(|e| err(&e))?;
        queues.push(QueueLag {
            queue: name.clone(),
            depth: m.queue_length,
            visible: m.queue_visible_length,
            delayed: m.queue_length - m.queue_visible_length,
            oldest_age_seconds: m.oldest_msg_age_sec,
            dead_letters,
            waiting: flow.policy.then_some(flow.waiting),
        });
    }
    let snap = store.snapshot(node_ttl).await.map_err(|e| err(&e))?;
    let mut consumers = Vec::with_capacity(snap.allocations.len());
    for a in &snap.allocations {
        let checkpoint = store
            .checkpoint(&a.group, &a.source)
            .await
            .map_err(|e| err(&e))?
            .map(|(p, _)| p);
        let lag = store
            .count_after(&a.source, checkpoint.unwrap_or(0))
            .await
            .map_err(|e| err(&e))?;
        consumers.push(ConsumerLag {
            group: a.group.clone(),
            source: a.source.clone(),
            checkpoint,
            lag,
            epoch: a.epoch,
            holder: a.node_id.clone(),
        });
    }
    let nodes = snap
        .nodes
        .iter()
        .map(|n| NodeLag {
            node_id: n.info.node_id.clone(),
            role: n.info.role.clone(),
            heartbeat_age_ms: u64::try_from(n.since_seen.as_millis()).unwrap_or(u64::MAX),
            live: n.since_seen < n.info.ttl.unwrap_or(node_ttl),
        })
        .collect();
    let lease = snap.lease.map(|l| LeaseLag {
        holder: l.holder,
        epoch: l.epoch,
        live: l.live,
    });
    Ok(LagReport {
        queues,
        consumers,
        nodes,
        lease,
    })
}

/// When readiness turns red (0 or `false`: that check is off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// The queues whose oldest message is judged (empty: the ones the process consumes, as
    /// its surface says; a queue nobody reads, such as a results queue, would always be old).
    pub queues: Vec<String>,
    /// One of those queues whose oldest message is older than this many seconds (default
    /// 300).
    pub max_oldest_age_seconds: u64,
    /// A consumer further behind its source than this many events.
    pub max_lag: u64,
    /// No live coordinator lease.
    pub require_lease: bool,
    /// A dead-letter place that grew by more than this many letters since the last check.
    pub max_dead_letter_growth: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            queues: Vec::new(),
            max_oldest_age_seconds: 300,
            max_lag: 0,
            require_lease: false,
            max_dead_letter_growth: 0,
        }
    }
}

/// Why a store is not ready: the threshold crossed, where, by how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    /// The threshold's key (`max_oldest_age_seconds`, `max_lag`, `require_lease`,
    /// `max_dead_letter_growth`).
    pub threshold: &'static str,
    /// The queue, consumer source or lease it concerns.
    pub subject: String,
    /// The figure seen.
    pub value: i64,
    /// The limit it crossed.
    pub limit: i64,
    /// One line saying it.
    pub reason: String,
}

/// The first threshold `now` crosses, if any; dead-letter growth is measured against
/// `before` (the previous report).
pub fn judge(now: &LagReport, before: Option<&LagReport>, t: &Thresholds) -> Result<(), NotReady> {
    let limit = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if t.max_oldest_age_seconds > 0 {
        for q in &now.queues {
            let age = q.oldest_age_seconds.unwrap_or(0);
            if t.queues.contains(&q.queue) && age > limit(t.max_oldest_age_seconds) {
                return Err(NotReady {
                    threshold: "max_oldest_age_seconds",
                    subject: q.queue.clone(),
                    value: age,
                    limit: limit(t.max_oldest_age_seconds),
                    reason: format!(
                        "queue {}: the oldest message has waited {age} s (more than {} s)",
                        q.queue, t.max_oldest_age_seconds
                    ),
                });
            }
        }
    }
    if t.max_lag > 0 {
        for c in &now.consumers {
            if c.lag > t.max_lag {
                return Err(NotReady {
                    threshold: "max_lag",
                    subject: format!("{}/{}", c.group, c.source),
                    value: limit(c.lag),
                    limit: limit(t.max_lag),
                    reason: format!(
                        "consumer {} on {}: {} event(s) behind the head (more than {})",
                        c.group, c.source, c.lag, t.max_lag
                    ),
                });
            }
        }
    }
    if t.require_lease && !now.lease.as_ref().is_some_and(|l| l.live) {
        return Err(NotReady {
            threshold: "require_lease",
            subject: "lease".into(),
            value: 0,
            limit: 1,
            reason: "no node holds the coordinator lease".into(),
        });
    }
    if let (true, Some(before)) = (t.max_dead_letter_growth > 0, before) {
        for q in &now.queues {
            let was = before
                .queues
                .iter()
                .find(|b| b.queue == q.queue)
                .and_then(|b| b.dead_letters)
                .unwrap_or(0);
            let grew = q.dead_letters.unwrap_or(0) - was;
            if grew > limit(t.max_dead_letter_growth) {
                return Err(NotReady {
                    threshold: "max_dead_letter_growth",
                    subject: format!("{}_dlq", q.queue),
                    value: grew,
                    limit: limit(t.max_dead_letter_growth),
                    reason: format!(
                        "dead-letter place {}_dlq grew by {grew} since the last check (more than {})",
                        q.queue, t.max_dead_letter_growth
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The report as Prometheus series (names with their units; one label set per queue,
/// consumer source and node).
pub fn prometheus(r: &LagReport, out: &mut String) {
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let q = |f: &dyn Fn(&QueueLag) -> Option<i64>| -> Vec<(String, f64)> {
        r.queues
            .iter()
            .filter_map(|x| f(x).map(|v| (format!("queue=\"{}\"", x.queue), v as f64)))
            .collect()
    };
    family(
        "herald_queue_depth_messages",
        "Messages in a durable queue.",
        q(&|x| Some(x.depth)),
    );
    family(
        "herald_queue_visible_messages",
        "Messages a read would get now.",
        q(&|x| Some(x.visible)),
    );
    family(
        "herald_queue_delayed_messages",
        "Messages hidden: in flight or delayed.",
        q(&|x| Some(x.delayed)),
    );
    family(
        "herald_queue_oldest_age_seconds",
        "Age of a queue's oldest message.",
        q(&|x| Some(x.oldest_age_seconds.unwrap_or(0))),
    );
    family(
        "herald_queue_dead_letters_messages",
        "Letters in a queue's dead-letter place.",
        q(&|x| x.dead_letters),
    );
    let waiting: Vec<(String, f64)> = r
        .queues
        .iter()
        .filter_map(|x| x.waiting.map(|w| (x, w)))
        .flat_map(|(x, w)| {
            [
                ("rate", w.rate),
                ("concurrency", w.concurrency),
                ("order", w.order),
            ]
            .map(|(reason, n)| {
                (
                    format!("queue=\"{}\",reason=\"{reason}\"", x.queue),
                    n as f64,
                )
            })
        })
        .collect();
    family(
        "herald_queue_waiting_messages",
        "Visible messages a queue's flow policy holds back, by reason (rate, concurrency, order).",
        waiting,
    );
    let c = |f: &dyn Fn(&ConsumerLag) -> f64| -> Vec<(String, f64)> {
        r.consumers
            .iter()
            .map(|x| {
                let holder = x.holder.as_deref().unwrap_or("");
                (
                    format!(
                        "group=\"{}\",source=\"{}\",holder=\"{holder}\"",
                        x.group, x.source
                    ),
                    f(x),
                )
            })
            .collect()
    };
    family(
        "herald_consumer_lag_events",
        "Events of a source after a consumer's checkpoint.",
        c(&|x| x.lag as f64),
    );
    family(
        "herald_consumer_allocation_epoch",
        "The epoch of a consumer source's allocation.",
        c(&|x| x.epoch as f64),
    );
    let n: Vec<(String, f64)> = r
        .nodes
        .iter()
        .map(|x| {
            (
                format!("node_id=\"{}\",role=\"{}\"", x.node_id, x.role),
                x.heartbeat_age_ms as f64 / 1000.0,
            )
        })
        .collect();
    family(
        "herald_node_heartbeat_age_seconds",
        "Time since a node's last heartbeat.",
        n,
    );
    let lease: Vec<(String, f64)> = r
        .lease
        .iter()
        .map(|l| {
            (
                format!("holder=\"{}\",epoch=\"{}\"", l.holder, l.epoch),
                if l.live { 1.0 } else { 0.0 },
            )
        })
        .collect();
    family(
        "herald_lease_held",
        "1 while the coordinator lease is held.",
        lease,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, age: i64, dead: Option<i64>) -> QueueLag {
        QueueLag {
            queue: name.into(),
            depth: 1,
            visible: 1,
            delayed: 0,
            oldest_age_seconds: Some(age),
            dead_letters: dead,
            waiting: None,
        }
    }

    #[test]
    fn each_threshold_names_itself_and_only_watched_queues_are_judged_by_age() {
        let t = Thresholds {
            queues: vec!["jobs".into()],
            max_oldest_age_seconds: 10,
            max_lag: 5,
            require_lease: true,
            max_dead_letter_growth: 2,
        };
        let mut now = LagReport {
            queues: vec![queue("results", 999, None), queue("jobs", 3, Some(1))],
            consumers: vec![],
            nodes: vec![],
            lease: Some(LeaseLag {
                holder: "n1".into(),
                epoch: 1,
                live: true,
            }),
        };
        assert_eq!(
            judge(&now, None, &t),
            Ok(()),
            "an unwatched queue's age is not judged"
        );
        now.queues[1].oldest_age_seconds = Some(11);
        let e = judge(&now, None, &t).expect_err("old");
        assert_eq!(
            (e.threshold, e.subject.as_str(), e.value, e.limit),
            ("max_oldest_age_seconds", "jobs", 11, 10)
        );
        now.queues[1].oldest_age_seconds = Some(1);
        now.consumers.push(ConsumerLag {
            group: "g".into(),
            source: "order".into(),
            checkpoint: Some(4),
            lag: 6,
            epoch: 2,
            holder: Some("n1".into()),
        });
        assert_eq!(judge(&now, None, &t).expect_err("lag").threshold, "max_lag");
        now.consumers[0].lag = 5;
        let before = now.clone();
        now.queues[1].dead_letters = Some(4);
        let e = judge(&now, Some(&before), &t).expect_err("growth");
        assert_eq!(
            (e.threshold, e.subject.as_str(), e.value),
            ("max_dead_letter_growth", "jobs_dlq", 3)
        );
        now.queues[1].dead_letters = Some(3);
        now.queues[1].waiting = Some(Waiting {
            rate: 4,
            concurrency: 0,
            order: 1,
        });
        assert_eq!(
            judge(&now, Some(&before), &t),
            Ok(()),
            "growth of 2 is within the limit"
        );
        now.lease = None;
        assert_eq!(
            judge(&now, None, &t).expect_err("lease").threshold,
            "require_lease"
        );
        assert_eq!(judge(&now, None, &Thresholds::default()), Ok(()));
        let mut text = String::new();
        prometheus(&now, &mut text);
        assert!(
            text.contains("herald_queue_dead_letters_messages{queue=\"jobs\"} 3"),
            "{text}"
        );
        assert!(text
            .contains("herald_consumer_lag_events{group=\"g\",source=\"order\",holder=\"n1\"} 5"));
        assert!(
            text.contains("herald_queue_waiting_messages{queue=\"jobs\",reason=\"rate\"} 4"),
            "{text}"
        );
    }
}
