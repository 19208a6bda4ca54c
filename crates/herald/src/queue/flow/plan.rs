//! What one read hands out under a policy, decided from the facts a backend read in its
//! transaction (each key's window of visible messages, its in-flight count, its bucket, when
//! it was last served, whether a dead letter holds it): the same rules on every backend,
//! tested here without a database.

use super::policy::Policy;
use super::rate::Rate;
use super::MAX_PRIORITY;

/// One visible message a read may hand out.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its msg_id.
    pub msg_id: i64,
    /// Its place in its key's send order (`metadata.flow_seq`, else its msg_id).
    pub seq: i64,
    /// Its priority as sent (0 to 9).
    pub priority: i64,
    /// When it was sent, in microseconds since the epoch.
    pub enqueued_us: i64,
}

/// One key as a backend found it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyWindow {
    /// The key.
    pub key: String,
    /// Its first visible messages (at most as many as a read may take of it).
    pub candidates: Vec<Candidate>,
    /// Its messages in flight (read and not settled, or waiting out a retry).
    pub in_flight: u32,
    /// The lowest `seq` of its messages, visible or not (ordering keys).
    pub head_seq: i64,
    /// Its visible messages in all.
    pub visible: u64,
    /// When a read last served it (microseconds), if ever.
    pub served_us: Option<i64>,
    /// Its bucket as stored (tokens, at microseconds), if it has one yet.
    pub bucket: Option<(f64, i64)>,
    /// Whether a dead letter of it holds it (ordering keys).
    pub held: bool,
}

/// Visible messages held back, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// Waiting for a token (per key or for the queue).
    pub rate: u64,
    /// Waiting for a slot (per key or for the queue).
    pub concurrency: u64,
    /// Waiting behind an earlier message of their ordering key, or held by its dead letter.
    pub order: u64,
}

/// One message to hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its msg_id.
    pub msg_id: i64,
    /// Its key.
    pub key: String,
}

/// What a read does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The messages to hand out, in the order they were chosen.
    pub take: Vec<Planned>,
    /// Buckets to store, as of now: (key, tokens left).
    pub buckets: Vec<(String, f64)>,
    /// The queue's bucket to store, as of now.
    pub queue_bucket: Option<f64>,
    /// Keys served by this read (their `served` becomes now).
    pub served: Vec<String>,
    /// What was held back, by reason.
    pub waiting: Waiting,
    /// When a token comes, if a rate held something back (microseconds from now).
    pub next_token_us: Option<i64>,
}

/// One row of a backend's window query: a visible message with its key's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its key.
    pub key: String,
    /// The message.
    pub candidate: Candidate,
    /// Its key's messages in flight.
    pub in_flight: u32,
    /// Its key's lowest `seq`, visible or not.
    pub head_seq: i64,
    /// Its key's visible messages.
    pub visible: u64,
}

/// A stored key state: its bucket and when it was last served. `key: None` is the queue's.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// The key, or `None` for the queue's own bucket.
    pub key: Option<String>,
    /// Its bucket (tokens, at microseconds), if one was stored.
    pub bucket: Option<(f64, i64)>,
    /// When a read last served it.
    pub served_us: Option<i64>,
}

/// Groups a backend's rows by key (in the order keys first appear) with their stored states
/// and holds; also returns the queue's bucket.
pub fn windows(
    rows: Vec<Row>,
    states: Vec<KeyState>,
    held: &std::collections::HashSet<String>,
) -> (Vec<KeyWindow>, Option<(f64, i64)>) {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<KeyWindow> = Vec::new();
    for row in rows {
        let i = *index.entry(row.key.clone()).or_insert_with(|| {
            out.push(KeyWindow {
                held: held.contains(&row.key),
                key: row.key,
                in_flight: row.in_flight,
                head_seq: row.head_seq,
                visible: row.visible,
                ..KeyWindow::default()
            });
            out.len() - 1
        });
        out[i].candidates.push(row.candidate);
    }
    let mut queue_bucket = None;
    for s in states {
        match s.key {
            None => queue_bucket = s.bucket,
            Some(k) => {
                if let Some(&i) = index.get(&k) {
                    out[i].bucket = s.bucket;
                    out[i].served_us = s.served_us;
                }
            }
        }
    }
    (out, queue_bucket)
}

/// Each key's hidden messages as a backend counts them: (in flight, lowest place in send
/// order among them).
pub type Hidden = std::collections::HashMap<String, (u32, i64)>;

/// How many candidates per key a read of `qty` needs, given each key's best visible message
/// (`heads`): with as many keys able to give as the read has room, one each is all
/// round-robin takes (so a backend's one grouped pass is enough); otherwise the window.
pub fn candidates_per_key(
    policy: &Policy,
    qty: usize,
    heads: &[(String, Candidate)],
    hidden: &Hidden,
    held: &std::collections::HashSet<String>,
) -> usize {
    let open = heads
        .iter()
        .filter(|(key, _)| {
            let in_flight = hidden.get(key).map_or(0, |h| h.0);
            !(policy.ordered && (in_flight > 0 || held.contains(key)))
                && policy.concurrency.is_none_or(|c| in_flight < c)
        })
        .count();
    let heaviest = policy.weights.values().copied().max().unwrap_or(1).max(1) as usize;
    window_size(policy, qty).min(qty.div_ceil(open.max(1)) * heaviest)
}

/// A backend's candidates as rows: each with its key's in-flight count and head (the lowest
/// place among its hidden messages and its best visible one, `heads`), and its key's visible
/// count where the backend counted them (1 otherwise: a read does not need it).
pub fn rows_of(
    found: Vec<(String, Candidate)>,
    heads: &std::collections::HashMap<String, i64>,
    hidden: &Hidden,
    visible: Option<&std::collections::HashMap<String, u64>>,
) -> Vec<Row> {
    found
        .into_iter()
        .map(|(key, candidate)| {
            let (in_flight, hidden_head) = hidden.get(&key).copied().unwrap_or((0, i64::MAX));
            let head_seq = hidden_head.min(heads.get(&key).copied().unwrap_or(candidate.seq));
            let visible = visible.and_then(|v| v.get(&key).copied()).unwrap_or(1);
            Row {
                key,
                candidate,
                in_flight,
                head_seq,
                visible,
            }
        })
        .collect()
}

/// How many of a key's first visible messages a read of `qty` needs to see.
pub fn window_size(policy: &Policy, qty: usize) -> usize {
    if policy.ordered {
        return 1;
    }
    let per_key = policy.concurrency.map_or(qty, |c| c as usize);
    qty.min(per_key).max(1)
}

/// A bucket's tokens now.
fn refill(rate: &Rate, stored: Option<(f64, i64)>, now_us: i64) -> f64 {
    let burst = f64::from(rate.burst);
    match stored {
        None => burst,
        Some((tokens, at)) => {
            let gained = (now_us - at).max(0) as f64 * rate.per_micro();
            (tokens + gained).min(burst)
        }
    }
}

/// Microseconds until `tokens` reaches 1.
fn until_token(rate: &Rate, tokens: f64) -> i64 {
    ((1.0 - tokens).max(0.0) / rate.per_micro()).ceil() as i64
}

/// A message's priority after aging, at `now_us`.
pub fn effective_priority(policy: &Policy, c: &Candidate, now_us: i64) -> i64 {
    let step = i64::from(policy.aging_secs) * 1_000_000;
    let aged = (now_us - c.enqueued_us).max(0) / step.max(1);
    (c.priority.clamp(0, MAX_PRIORITY) + aged).min(MAX_PRIORITY)
}

struct Slot {
    window: KeyWindow,
    available: usize,
    taken: usize,
    tokens: Option<f64>,
}

/// Decides what a read of up to `qty` messages hands out under `policy`, at `now_us`, given
/// each key's window, the queue's messages in flight, the queue's bucket and `ceiling`, the
/// highest priority sent among the queue's messages: between keys a head ages up to it and
/// no higher, so that among equal priorities the least recently served key goes first, however
/// long its head has waited.
pub fn plan(
    policy: &Policy,
    now_us: i64,
    qty: usize,
    windows: Vec<KeyWindow>,
    queue_in_flight: u32,
    queue_bucket: Option<(f64, i64)>,
    ceiling: i64,
) -> Plan {
    let mut out = Plan::default();
    let mut next_token: Option<i64> = None;
    let mut soonest = |us: i64| next_token = Some(next_token.map_or(us, |n: i64| n.min(us)));
    let mut slots: Vec<Slot> = Vec::with_capacity(windows.len());
    for mut w in windows {
        if policy.ordered {
            w.candidates.sort_by_key(|c| c.seq);
        } else {
            w.candidates.sort_by_key(|c| {
                (
                    std::cmp::Reverse(effective_priority(policy, c, now_us)),
                    c.seq,
                )
            });
        }
        let mut available = w.candidates.len();
        let tokens = policy.rate.as_ref().map(|r| refill(r, w.bucket, now_us));
        if policy.ordered {
            // Held by a dead letter, something in flight, or an earlier message not visible.
            let head_visible = w.candidates.first().is_some_and(|c| c.seq == w.head_seq);
            if w.held || w.in_flight > 0 || !head_visible {
                out.waiting.order += w.visible;
                available = 0;
            } else {
                available = available.min(1);
            }
        }
        if available > 0 {
            if let Some(limit) = policy.concurrency {
                let room = limit.saturating_sub(w.in_flight) as usize;
                if room == 0 {
                    out.waiting.concurrency += w.visible;
                }
                available = available.min(room);
            }
        }
        if available > 0 {
            if let (Some(rate), Some(t)) = (&policy.rate, tokens) {
                let whole = t.floor().max(0.0) as usize;
                if whole == 0 {
                    out.waiting.rate += w.visible;
                    soonest(until_token(rate, t));
                }
                available = available.min(whole);
            }
        }
        slots.push(Slot {
            window: w,
            available,
            taken: 0,
            tokens,
        });
    }
    // Round-robin: the highest priority first (aged up to the ceiling), then the least
    // recently served, then the oldest head.
    let ceiling = ceiling.clamp(0, MAX_PRIORITY);
    slots.sort_by_key(|s| {
        let head = s.window.candidates.first();
        (
            std::cmp::Reverse(
                head.map_or(0, |c| effective_priority(policy, c, now_us).min(ceiling)),
            ),
            s.window.served_us.unwrap_or(i64::MIN),
            head.map_or(i64::MAX, |c| c.seq),
        )
    });
    let mut room = qty;
    let mut queue_room = policy
        .max_in_flight
        .map_or(usize::MAX, |m| m.saturating_sub(queue_in_flight) as usize);
    let mut queue_tokens = policy
        .queue_rate
        .as_ref()
        .map(|r| refill(r, queue_bucket, now_us));
    let queue_whole = |t: Option<f64>| t.map_or(usize::MAX, |t| t.floor().max(0.0) as usize);
    let mut limited_by: Option<&'static str> = None;
    loop {
        let mut progress = false;
        for s in slots.iter_mut() {
            let weight = policy.weight(&s.window.key) as usize;
            let mut n = 0;
            while n < weight && s.taken < s.available {
                if room == 0 {
                    break;
                }
                if queue_room == 0 {
                    limited_by = Some("concurrency");
                    break;
                }
                if queue_whole(queue_tokens) == 0 {
                    limited_by = Some("rate");
                    break;
                }
                let c = &s.window.candidates[s.taken];
                out.take.push(Planned {
                    msg_id: c.msg_id,
                    key: s.window.key.clone(),
                });
                s.taken += 1;
                n += 1;
                room -= 1;
                queue_room = queue_room.saturating_sub(1);
                if let Some(t) = queue_tokens.as_mut() {
                    *t -= 1.0;
                }
                progress = true;
            }
        }
        if !progress || room == 0 {
            break;
        }
    }
    if let Some(reason) = limited_by {
        let left: u64 = slots
            .iter()
            .filter(|s| s.available > s.taken)
            .map(|s| s.window.visible.saturating_sub(s.taken as u64))
            .sum();
        if reason == "rate" {
            out.waiting.rate += left;
            if let (Some(rate), Some(t)) = (&policy.queue_rate, queue_tokens) {
                soonest(until_token(rate, t));
            }
        } else {
            out.waiting.concurrency += left;
        }
    }
    for s in &slots {
        if s.taken > 0 {
            out.served.push(s.window.key.clone());
        }
        if let Some(t) = s.tokens {
            if s.taken > 0 || s.window.bucket.is_none() {
                out.buckets.push((s.window.key.clone(), t - s.taken as f64));
            }
        }
    }
    out.queue_bucket = queue_tokens;
    out.next_token_us = next_token;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(key: &str, ids: std::ops::Range<i64>) -> KeyWindow {
        KeyWindow {
            key: key.into(),
            candidates: ids
                .clone()
                .map(|i| Candidate {
                    msg_id: i,
                    seq: i,
                    priority: 0,
                    enqueued_us: 0,
                })
                .collect(),
            head_seq: ids.start,
            visible: (ids.end - ids.start) as u64,
            ..KeyWindow::default()
        }
    }

    fn ids(p: &Plan) -> Vec<i64> {
        p.take.iter().map(|t| t.msg_id).collect()
    }

    #[test]
    fn keys_are_served_round_robin_least_recently_served_first_with_weights() {
        let policy = Policy {
            weights: [("b".to_owned(), 2)].into(),
            ..Policy::default()
        };
        let mut a = window("a", 1..100);
        a.served_us = Some(5);
        let b = window("b", 200..210);
        let c = window("c", 300..301);
        let p = plan(&policy, 10, 6, vec![a, b, c], 0, None, 9);
        // b and c were never served: first; b takes two per round.
        assert_eq!(ids(&p), vec![200, 201, 300, 1, 202, 203]);
        assert_eq!(p.served, vec!["b", "c", "a"]);
    }

    #[test]
    fn between_equal_priorities_the_least_recently_served_key_goes_first_however_old_its_head() {
        let policy = Policy::default();
        // A big key whose head has waited ten minutes, served a moment ago; a small key sent
        // just now, never served. Everything is priority 0 (the ceiling): fairness decides.
        let mut big = window("big", 1..1000);
        big.served_us = Some(599_000_000);
        let mut small = window("small", 5000..5001);
        small.candidates[0].enqueued_us = 600_000_000;
        let p = plan(
            &policy,
            600_000_000,
            1,
            vec![big.clone(), small.clone()],
            0,
            None,
            0,
        );
        assert_eq!(ids(&p), vec![5000]);
        // With a priority-9 message in the queue, the old head has aged above the new one.
        let p = plan(&policy, 600_000_000, 1, vec![big, small], 0, None, 9);
        assert_eq!(ids(&p), vec![1]);
    }

    #[test]
    fn a_key_at_its_limit_hands_out_nothing_and_is_counted_as_waiting() {
        let policy = Policy {
            concurrency: Some(2),
            ..Policy::default()
        };
        let mut a = window("a", 1..10);
        a.in_flight = 2;
        let mut b = window("b", 20..30);
        b.in_flight = 1;
        let p = plan(&policy, 0, 10, vec![a, b], 3, None, 9);
        assert_eq!(ids(&p), vec![20]);
        assert_eq!(p.waiting.concurrency, 9);
    }

    #[test]
    fn the_queue_limit_caps_a_read_and_counts_the_rest() {
        let policy = Policy {
            max_in_flight: Some(3),
            ..Policy::default()
        };
        let p = plan(&policy, 0, 10, vec![window("a", 1..5)], 1, None, 9);
        assert_eq!(ids(&p), vec![1, 2]);
        assert_eq!(p.waiting.concurrency, 2);
    }

    #[test]
    fn buckets_refill_at_the_rate_and_an_empty_one_says_when_the_next_token_comes() {
        let policy = Policy {
            rate: Some(
                "10/s"
                    .parse::<Rate>()
                    .expect("a test value")
                    .with_burst(3)
                    .expect("a test value"),
            ),
            ..Policy::default()
        };
        // A new bucket is full: 3.
        let p = plan(&policy, 0, 10, vec![window("a", 1..10)], 0, None, 9);
        assert_eq!(ids(&p), vec![1, 2, 3]);
        assert_eq!(p.buckets, vec![("a".to_owned(), 0.0)]);
        // 50 ms later: half a token; nothing, and the next one in 50 ms.
        let mut a = window("a", 4..10);
        a.bucket = Some((0.0, 0));
        let p = plan(&policy, 50_000, 10, vec![a.clone()], 0, None, 9);
        assert!(p.take.is_empty());
        assert_eq!(p.waiting.rate, 6);
        assert_eq!(p.next_token_us, Some(50_000));
        // 250 ms later: two.
        let p = plan(&policy, 250_000, 10, vec![a], 0, None, 9);
        assert_eq!(ids(&p), vec![4, 5]);
    }

    #[test]
    fn the_queue_bucket_is_shared_by_every_key() {
        let policy = Policy {
            queue_rate: Some(
                "1/s"
                    .parse::<Rate>()
                    .expect("a test value")
                    .with_burst(2)
                    .expect("a test value"),
            ),
            ..Policy::default()
        };
        let p = plan(
            &policy,
            0,
            10,
            vec![window("a", 1..3), window("b", 5..7)],
            0,
            None,
            0,
        );
        assert_eq!(ids(&p), vec![1, 5]);
        assert_eq!(p.queue_bucket, Some(0.0));
        assert_eq!(p.waiting.rate, 2);
        assert_eq!(p.next_token_us, Some(1_000_000));
    }

    #[test]
    fn priorities_go_first_and_age_so_that_old_low_ones_are_not_starved() {
        let policy = Policy {
            concurrency: Some(10),
            aging_secs: 10,
            ..Policy::default()
        };
        let mut w = window("a", 1..4);
        w.candidates[0].priority = 0; // sent at 0
        w.candidates[1].priority = 5;
        w.candidates[1].enqueued_us = 60_000_000;
        w.candidates[2].priority = 2;
        w.candidates[2].enqueued_us = 60_000_000;
        // At 60 s: message 1 has aged to 6 and goes first, then 5, then 2.
        let p = plan(&policy, 60_000_000, 3, vec![w.clone()], 0, None, 9);
        assert_eq!(ids(&p), vec![1, 2, 3]);
        // At 30 s it has aged to 3: behind the 5.
        let p = plan(&policy, 30_000_000, 3, vec![w], 0, None, 9);
        assert_eq!(ids(&p), vec![2, 1, 3]);
    }

    #[test]
    fn an_ordering_key_hands_out_its_head_alone_and_a_held_key_nothing() {
        let policy = Policy {
            ordered: true,
            ..Policy::default()
        };
        let a = window("a", 1..5);
        let mut b = window("b", 10..15);
        b.in_flight = 1;
        b.head_seq = 9;
        let mut c = window("c", 20..22);
        c.held = true;
        let mut d = window("d", 30..33);
        d.head_seq = 29; // its head is hidden (waiting out a retry)
        let p = plan(&policy, 0, 10, vec![a, b, c, d], 1, None, 9);
        assert_eq!(ids(&p), vec![1]);
        assert_eq!(p.waiting.order, 5 + 2 + 3);
        // A replayed letter keeps its first place: seq below the rest.
        let mut e = window("e", 40..43);
        e.candidates[2].seq = 1;
        e.head_seq = 1;
        let p = plan(&policy, 0, 10, vec![e], 0, None, 9);
        assert_eq!(ids(&p), vec![42]);
    }
}
