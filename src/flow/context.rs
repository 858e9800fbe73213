//! A node's view of the run context (spec §2.1): a read-only snapshot of the committed context
//! plus the node's own buffered writes. Every write is recorded as a [`ContextDelta`]; nothing
//! reaches the run until the runtime commits the node (in-process: when the node finishes;
//! distributed: in the node's single atomic commit). Also the awaiting records a node can set.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One recorded context write, in the order the node made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ContextDelta {
    /// `key` was set to `value`.
    Set {
        /// The context key.
        key: String,
        /// The new value.
        value: Value,
    },
    /// `key` was deleted.
    Delete {
        /// The context key.
        key: String,
    },
}

impl ContextDelta {
    /// The key this delta touches.
    pub fn key(&self) -> &str {
        match self {
            ContextDelta::Set { key, .. } | ContextDelta::Delete { key } => key,
        }
    }
}

/// Applies `deltas` in order to `context` (the commit step shared by both runtimes).
pub fn apply_deltas(context: &mut Map<String, Value>, deltas: &[ContextDelta]) {
    for delta in deltas {
        match delta {
            ContextDelta::Set { key, value } => {
                context.insert(key.clone(), value.clone());
            }
            ContextDelta::Delete { key } => {
                context.remove(key);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Buffer {
    /// Latest buffered value per key set by the node.
    overlay: Map<String, Value>,
    /// Keys the node deleted (hidden from the snapshot).
    deleted: std::collections::BTreeSet<String>,
    deltas: Vec<ContextDelta>,
}

/// A run's committed context shared between the in-process scheduler (which commits into it)
/// and the nodes it runs (which read it live through their [`ContextHandle`]s).
pub(crate) type SharedContext = Arc<RwLock<Map<String, Value>>>;

/// Read access to a [`SharedContext`] (a poisoned lock only means a panic elsewhere while the
/// plain map was held; the map itself is still usable).
pub(crate) fn read_shared(shared: &SharedContext) -> RwLockReadGuard<'_, Map<String, Value>> {
    shared.read().unwrap_or_else(|e| e.into_inner())
}

/// Write access to a [`SharedContext`] (see [`read_shared`] about poisoning).
pub(crate) fn write_shared(shared: &SharedContext) -> RwLockWriteGuard<'_, Map<String, Value>> {
    shared.write().unwrap_or_else(|e| e.into_inner())
}

/// Where a handle reads the committed values from.
#[derive(Debug, Clone)]
enum Committed {
    /// A fixed snapshot (the distributed worker's loaded run state).
    Snapshot(Arc<Map<String, Value>>),
    /// The in-process run's live context: commits of other nodes become visible as they
    /// happen (Flowcraft's nodes also share one store), and no node pays for a copy of it.
    Live(SharedContext),
}

/// A node's view of the run context: the committed context (a snapshot, or in-process the
/// live committed context) plus its own buffered writes (every write is a delta). Cheap to
/// clone; clones share the same buffer.
///
/// ```
/// use flowcraft_azure::flow::context::{ContextDelta, ContextHandle};
/// use serde_json::{json, Map};
/// let mut snapshot = Map::new();
/// snapshot.insert("a".into(), json!(1));
/// let ctx = ContextHandle::new(snapshot);
/// ctx.set("b", json!(2));
/// assert!(ctx.delete("a"));
/// assert_eq!(ctx.get("b"), Some(json!(2)));
/// assert!(!ctx.has("a"));
/// assert_eq!(ctx.deltas().len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct ContextHandle {
    committed: Committed,
    buffer: Arc<Mutex<Buffer>>,
}

impl ContextHandle {
    /// A handle over `snapshot` with no writes yet.
    pub fn new(snapshot: Map<String, Value>) -> Self {
        Self::from_shared(Arc::new(snapshot))
    }

    /// A handle over a shared snapshot (no copy).
    pub fn from_shared(snapshot: Arc<Map<String, Value>>) -> Self {
        ContextHandle {
            committed: Committed::Snapshot(snapshot),
            buffer: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    /// A handle over the in-process run's live committed context.
    pub(crate) fn live(shared: SharedContext) -> Self {
        ContextHandle {
            committed: Committed::Live(shared),
            buffer: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    /// Runs `f` on the committed context.
    fn with_committed<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        match &self.committed {
            Committed::Snapshot(map) => f(map),
            Committed::Live(shared) => f(&read_shared(shared)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A poisoned lock only means another holder panicked mid-write of plain data; the
        // buffer is still consistent enough to read, so recover instead of panicking.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current value of `key` (the node's own writes win over the snapshot).
    pub fn get(&self, key: &str) -> Option<Value> {
        let buffer = self.lock();
        if buffer.deleted.contains(key) {
            return None;
        }
        match buffer.overlay.get(key) {
            Some(value) => Some(value.clone()),
            None => self.with_committed(|map| map.get(key).cloned()),
        }
    }

    /// True when `key` currently has a value.
    pub fn has(&self, key: &str) -> bool {
        let buffer = self.lock();
        !buffer.deleted.contains(key)
            && (buffer.overlay.contains_key(key)
                || self.with_committed(|map| map.contains_key(key)))
    }

    /// Sets `key` to `value` (buffered and recorded as a delta).
    pub fn set(&self, key: impl Into<String>, value: Value) {
        let key = key.into();
        let mut buffer = self.lock();
        buffer.deleted.remove(&key);
        buffer.overlay.insert(key.clone(), value.clone());
        buffer.deltas.push(ContextDelta::Set { key, value });
    }

    /// Deletes `key`; returns whether it had a value. A delete of a missing key is not recorded.
    pub fn delete(&self, key: &str) -> bool {
        let existed = self.has(key);
        if existed {
            let mut buffer = self.lock();
            buffer.overlay.remove(key);
            buffer.deleted.insert(key.to_string());
            buffer.deltas.push(ContextDelta::Delete {
                key: key.to_string(),
            });
        }
        existed
    }

    /// Applies several writes in order (Flowcraft's `patch(ops)`).
    pub fn patch(&self, ops: impl IntoIterator<Item = ContextDelta>) {
        for op in ops {
            match op {
                ContextDelta::Set { key, value } => self.set(key, value),
                ContextDelta::Delete { key } => {
                    self.delete(&key);
                }
            }
        }
    }

    /// The writes made so far, in order.
    pub fn deltas(&self) -> Vec<ContextDelta> {
        self.lock().deltas.clone()
    }

    /// Runs `f` on the context as this node sees it, without copying the committed context
    /// when the node has not written anything (the lock, if any, is held while `f` runs).
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        let unchanged = self.lock().deltas.is_empty();
        if unchanged {
            self.with_committed(f)
        } else {
            f(&self.to_json())
        }
    }

    /// The whole context as this node sees it (committed context plus its own writes).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = self.with_committed(Map::clone);
        apply_deltas(&mut out, &self.lock().deltas);
        out
    }
}

/// Why a node is awaiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwaitReason {
    /// Waiting for `resume` with an action/output (the `wait` node).
    ExternalEvent,
    /// Waiting for a timer (the `sleep` node); `wake_up_at` says when.
    Timer,
    /// Paused by the operator.
    UserPause,
}

/// What a node records when it marks itself awaiting (`_awaitingDetails.<node>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingDetails {
    /// Why the node waits.
    pub reason: AwaitReason,
    /// When a timer wakes the node up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_up_at: Option<DateTime<Utc>>,
    /// Serialized sub-context when a subflow is awaiting inside this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subflow_state: Option<Value>,
}

impl AwaitingDetails {
    /// Awaiting an external event (resume).
    pub fn external_event() -> Self {
        AwaitingDetails {
            reason: AwaitReason::ExternalEvent,
            wake_up_at: None,
            subflow_state: None,
        }
    }

    /// Awaiting a timer that fires at `wake_up_at`.
    pub fn timer(wake_up_at: DateTime<Utc>) -> Self {
        AwaitingDetails {
            reason: AwaitReason::Timer,
            wake_up_at: Some(wake_up_at),
            subflow_state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn handle() -> ContextHandle {
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        ContextHandle::new(m)
    }

    #[test]
    fn get_reads_snapshot_then_own_writes() {
        let ctx = handle();
        assert_eq!(ctx.get("a"), Some(json!(1)));
        ctx.set("a", json!(2));
        assert_eq!(ctx.get("a"), Some(json!(2)));
        assert_eq!(ctx.get("missing"), None);
    }

    #[test]
    fn delete_reports_whether_the_key_existed() {
        let ctx = handle();
        assert!(ctx.delete("a"));
        assert!(!ctx.delete("a"));
        assert!(!ctx.has("a"));
        assert_eq!(ctx.get("a"), None);
        assert_eq!(ctx.deltas(), vec![ContextDelta::Delete { key: "a".into() }]);
    }

    #[test]
    fn set_after_delete_restores_the_key() {
        let ctx = handle();
        ctx.delete("a");
        ctx.set("a", json!("back"));
        assert!(ctx.has("a"));
        assert_eq!(ctx.to_json().get("a"), Some(&json!("back")));
    }

    #[test]
    fn to_json_merges_snapshot_and_writes_without_touching_the_snapshot() {
        let snapshot = Arc::new({
            let mut m = Map::new();
            m.insert("keep".into(), json!(true));
            m.insert("gone".into(), json!(0));
            m
        });
        let ctx = ContextHandle::from_shared(snapshot.clone());
        ctx.set("new", json!([1]));
        ctx.delete("gone");
        let merged = ctx.to_json();
        assert_eq!(merged.get("keep"), Some(&json!(true)));
        assert_eq!(merged.get("new"), Some(&json!([1])));
        assert!(!merged.contains_key("gone"));
        assert!(snapshot.contains_key("gone"));
        assert!(!snapshot.contains_key("new"));
    }

    #[test]
    fn a_live_handle_sees_commits_made_after_it_was_created() {
        let shared: SharedContext = Arc::new(RwLock::new(Map::new()));
        let ctx = ContextHandle::live(shared.clone());
        assert!(!ctx.has("later"));
        write_shared(&shared).insert("later".into(), json!(1));
        assert_eq!(ctx.get("later"), Some(json!(1)));
        ctx.set("own", json!(2));
        // the node's own writes stay buffered until the runtime commits them
        assert!(!read_shared(&shared).contains_key("own"));
        assert_eq!(ctx.to_json().len(), 2);
        assert_eq!(ctx.with_view(|view| view.len()), 2);
        let fresh = ContextHandle::live(shared);
        assert_eq!(
            fresh.with_view(|view| view.get("later").cloned()),
            Some(json!(1))
        );
    }

    #[test]
    fn clones_share_the_write_buffer() {
        let ctx = handle();
        let other = ctx.clone();
        other.set("x", json!(1));
        assert_eq!(ctx.get("x"), Some(json!(1)));
        assert_eq!(ctx.deltas().len(), 1);
    }

    #[test]
    fn patch_and_apply_deltas_replay_the_same_writes() {
        let ctx = handle();
        ctx.patch(vec![
            ContextDelta::Set {
                key: "b".into(),
                value: json!(2),
            },
            ContextDelta::Delete { key: "a".into() },
        ]);
        let mut committed = Map::new();
        committed.insert("a".into(), json!(1));
        apply_deltas(&mut committed, &ctx.deltas());
        assert_eq!(committed, ctx.to_json());
    }

    #[test]
    fn delta_serializes_with_an_op_tag() {
        let d = ContextDelta::Set {
            key: "k".into(),
            value: json!(1),
        };
        assert_eq!(
            serde_json::to_value(&d).ok(),
            Some(json!({"op": "set", "key": "k", "value": 1}))
        );
    }

    #[test]
    fn awaiting_details_use_flowcraft_field_names() {
        let d = AwaitingDetails::external_event();
        assert_eq!(
            serde_json::to_value(&d).ok(),
            Some(json!({"reason": "external_event"}))
        );
    }
}
