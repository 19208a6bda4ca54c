//! Stage 2, ROUTE: subject -> the subscriptions that match it, in dispatch order, cached.
//!
//! Token patterns live in a trie ([`trie`]), so a lookup walks the subject's tokens and never
//! looks at a subscription that cannot match; glob patterns (opt-in) are checked one by one.
//! Results are cached per subject and per thread until the next (un)subscribe: the table
//! owns each result (`Arc`), and the thread it was made for keeps a `Weak` to it, so a hot
//! subject costs one hash lookup, takes no lock and touches no cache line another thread
//! writes, while an unsubscribed handler is released as soon as the table lets go of it.
//! Each result is an immutable snapshot: a publish in progress keeps the list it started
//! with.

mod trie;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::handler::Handler;
use crate::message::pattern::Pattern;
use crate::message::priority::Priority;
use crate::message::subject::Subject;

/// How many distinct subjects the cache remembers per bus before it starts over.
const CACHE_CAPACITY: usize = 4096;

/// How many buses a thread keeps caches for.
const CACHED_BUSES: usize = 8;

/// Gives every `Routes` a distinct id for the thread-local caches.
static NEXT_ROUTES_ID: AtomicU64 = AtomicU64::new(1);

/// This thread's key in the table's cache (each thread gets results of its own, so that the
/// reference counts publishers touch are never shared).
fn thread_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static KEY: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    KEY.with(|k| *k)
}

type Owned = FxHashMap<(Arc<str>, u64), Arc<Matched>>;

/// One subscription as the router keeps it.
#[derive(Default)]
#[repr(align(64))]
struct Generation(AtomicU64);

/// Identifies one subscription on one bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) pattern: Pattern,
    pub(crate) owner: Arc<str>,
    pub(crate) priority: Priority,
    pub(crate) handler: Handler,
}

/// The subscriptions that match one subject, in dispatch order.
pub(crate) struct Matched {
    pub(crate) entries: Box<[Arc<Entry>]>,
    /// Every handler is synchronous: dispatch needs no await.
    pub(crate) all_sync: bool,
}

#[derive(Default)]
struct Table {
    trie: trie::Node,
    globs: Vec<u64>,
    entries: FxHashMap<u64, Arc<Entry>>,
    generation: u64,
    /// The owner of every cached result, per subject and thread; emptied by every change.
    matched: Owned,
}

#[derive(Default)]
struct Cache {
    map: FxHashMap<Arc<str>, Weak<Matched>>,
    /// The last subject looked up, by its shared text: a caller that publishes the same
    /// `Subject` (or clones of it) again is answered by a pointer comparison, without
    /// hashing the text.
    last: Option<(Arc<str>, Weak<Matched>)>,
    generation: u64,
}

thread_local! {
    /// Per thread: (routes id, its cache), most recently used last.
    static CACHES: RefCell<Vec<(u64, Cache)>> = const { RefCell::new(Vec::new()) };
}

/// The routing table: insert, remove, lookup.
pub(crate) struct Routes {
    table: RwLock<Table>,
    /// The next subscription id: ids are handed out here, in subscription order.
    next_id: AtomicU64,
    /// Bumped by every change; a thread's cache for an older generation is stale. Read by
    /// every publish, so it sits on a cache line of its own.
    generation: Generation,
    id: u64,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            table: RwLock::default(),
            next_id: AtomicU64::new(1),
            generation: Generation::default(),
            id: NEXT_ROUTES_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Routes {
    /// Adds a subscription and returns its id (ids grow in subscription order, which is the
    /// dispatch order within a priority).
    pub(crate) fn insert(
        &self,
        pattern: Pattern,
        owner: Arc<str>,
        priority: Priority,
        handler: Handler,
    ) -> SubscriptionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.insert_entry(Entry {
            id,
            pattern,
            owner,
            priority,
            handler,
        });
        SubscriptionId(id)
    }

    fn insert_entry(&self, entry: Entry) {
        let mut table = self.table.write();
        match entry.pattern.tokens() {
            Some(tokens) => table.trie.insert(tokens, entry.id),
            None => table.globs.push(entry.id),
        }
        table.entries.insert(entry.id, Arc::new(entry));
        let stale = self.invalidate(&mut table);
        drop(table);
        drop(stale);
    }

    /// Removes every subscription for which `select` is true; returns how many.
    pub(crate) fn remove_where(&self, mut select: impl FnMut(&Entry) -> bool) -> usize {
        let mut table = self.table.write();
        let doomed: Vec<Arc<Entry>> = table
            .entries
            .values()
            .filter(|e| select(e))
            .cloned()
            .collect();
        for entry in &doomed {
            table.entries.remove(&entry.id);
            match entry.pattern.tokens() {
                Some(tokens) => {
                    table.trie.remove(tokens, entry.id);
                }
                None => table.globs.retain(|&id| id != entry.id),
            }
        }
        let mut stale = FxHashMap::default();
        if !doomed.is_empty() {
            if table.entries.is_empty() {
                table.entries.shrink_to_fit();
            }
            stale = self.invalidate(&mut table);
        }
        // Handlers are dropped only after the lock is released: a handler's closure may hold
        // a Subscription guard whose drop comes back here.
        drop(table);
        drop(stale);
        let removed = doomed.len();
        drop(doomed);
        removed
    }

    pub(crate) fn remove_id(&self, id: u64) -> bool {
        let mut table = self.table.write();
        let Some(entry) = table.entries.remove(&id) else {
            return false;
        };
        match entry.pattern.tokens() {
            Some(tokens) => {
                table.trie.remove(tokens, id);
            }
            None => table.globs.retain(|&g| g != id),
        }
        let stale = self.invalidate(&mut table);
        // As in remove_where: drop the handler after the lock is released.
        drop(table);
        drop(stale);
        drop(entry);
        true
    }

    /// Moves to a new generation and hands back the cached results, for the caller to drop
    /// once the lock is released.
    #[must_use]
    fn invalidate(&self, table: &mut Table) -> Owned {
        table.generation += 1;
        self.generation.0.store(table.generation, Ordering::Release);
        std::mem::take(&mut table.matched)
    }

    /// Runs `f` on this thread's cache for these routes, emptied if it is stale.
    fn with_cache<R>(&self, f: impl FnOnce(&mut Cache) -> R) -> R {
        let generation = self.generation.0.load(Ordering::Acquire);
        CACHES.with(|caches| {
            let mut caches = caches.borrow_mut();
            let pos = match caches.iter().position(|(id, _)| *id == self.id) {
                Some(pos) => pos,
                None => {
                    if caches.len() >= CACHED_BUSES {
                        caches.remove(0);
                    }
                    caches.push((self.id, Cache::default()));
                    caches.len() - 1
                }
            };
            let cache = &mut caches[pos].1;
            if cache.generation != generation {
                cache.map.clear();
                cache.last = None;
                cache.generation = generation;
            }
            f(cache)
        })
    }

    /// Every subscription, in subscription order.
    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<_> = self.table.read().entries.values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.table.read().entries.len()
    }

    /// The subscriptions matching `subject`, in dispatch order: priority (critical first),
    /// then subscription order.
    pub(crate) fn lookup(&self, subject: &Subject) -> Arc<Matched> {
        let cached = self.with_cache(|c| {
            if let Some((text, matched)) = &c.last {
                if Arc::ptr_eq(text, subject.arc()) {
                    return matched.upgrade();
                }
            }
            let weak = c.map.get(subject.as_str())?;
            let hit = weak.upgrade();
            if hit.is_some() {
                c.last = Some((subject.shared(), weak.clone()));
            }
            hit
        });
        if let Some(hit) = cached {
            return hit;
        }
        let key = (subject.shared(), thread_key());
        let table = self.table.read();
        let generation = table.generation;
        let (matched, computed) = match table.matched.get(&key) {
            Some(m) => (m.clone(), false),
            None => (Arc::new(Self::compute(&table, subject)), true),
        };
        drop(table);
        if computed {
            let mut table = self.table.write();
            let mut evicted = FxHashMap::default();
            if table.generation == generation {
                if table.matched.len() >= CACHE_CAPACITY {
                    evicted = std::mem::take(&mut table.matched);
                }
                table.matched.insert(key.clone(), matched.clone());
            }
            drop(table);
            drop(evicted);
        }
        self.with_cache(|cache| {
            if cache.generation == generation {
                if cache.map.len() >= CACHE_CAPACITY {
                    cache.map.clear();
                }
                let weak = Arc::downgrade(&matched);
                cache.last = Some((key.0.clone(), weak.clone()));
                cache.map.insert(key.0, weak);
            }
        });
        matched
    }

    fn compute(table: &Table, subject: &Subject) -> Matched {
        let tokens: Vec<&str> = subject.tokens().collect();
        let mut ids = Vec::new();
        table.trie.collect(&tokens, &mut ids);
        for id in &table.globs {
            if let Some(e) = table.entries.get(id) {
                if e.pattern.matches(subject) {
                    ids.push(*id);
                }
            }
        }
        let mut entries: Vec<Arc<Entry>> = ids
            .iter()
            .filter_map(|id| table.entries.get(id).cloned())
            .collect();
        entries.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        Matched {
            all_sync: entries.iter().all(|e| e.handler.is_sync()),
            entries: entries.into_boxed_slice(),
        }
    }
}
