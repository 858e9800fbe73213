//! What a finished or paused run looks like node by node: each blueprint node's state
//! (done, failed, awaiting, not reached) read from a run's result. The demo, `status` and the
//! web run view all colour a blueprint's graph with it.

use super::blueprint::Blueprint;
use super::runtime::{AWAITING_IDS_KEY, WorkflowResult};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The state of one node in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// The node produced an output.
    Done,
    /// The node failed (it has an error and no output).
    Failed,
    /// The node waits for a resume or a timer.
    Awaiting,
    /// The run never got to the node (or the node is still running).
    NotReached,
}

impl NodeState {
    /// The lowercase name (`done`, `failed`, `awaiting`, `not-reached`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Done => "done",
            NodeState::Failed => "failed",
            NodeState::Awaiting => "awaiting",
            NodeState::NotReached => "not-reached",
        }
    }
}

/// The state of every node of `blueprint` in `result`, by node id.
///
/// Awaiting wins over done (a `wait` node stores its input as output when it pauses); failed
/// wins over done only when the node has no output (a failure that a fallback handled still
/// shows the node as failed, its fallback as done).
pub fn node_states(blueprint: &Blueprint, result: &WorkflowResult) -> BTreeMap<String, NodeState> {
    let awaiting: Vec<&str> = match result.context.get(AWAITING_IDS_KEY) {
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    blueprint
        .nodes()
        .iter()
        .map(|node| {
            let id = node.id.as_str();
            let failed = result.errors.iter().any(|e| e.node_id == id);
            let done = result.context.contains_key(&format!("_outputs.{id}"));
            let state = if awaiting.contains(&id) {
                NodeState::Awaiting
            } else if failed {
                NodeState::Failed
            } else if done {
                NodeState::Done
            } else {
                NodeState::NotReached
            };
            (node.id.clone(), state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::runtime::{RunStatus, WorkflowError};
    use serde_json::{Map, json};

    #[test]
    fn states_come_from_outputs_errors_and_awaiting_ids() {
        let bp = Blueprint::from_json(
            r#"{"id":"v","nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"fail"},
            {"id":"c","uses":"wait"},{"id":"d","uses":"echo"}],"edges":[]}"#,
        )
        .unwrap();
        let mut context = Map::new();
        context.insert("_outputs.a".into(), json!(1));
        context.insert("_outputs.c".into(), json!(2));
        context.insert(AWAITING_IDS_KEY.into(), json!(["c"]));
        let result = WorkflowResult {
            status: RunStatus::Awaiting,
            context,
            errors: vec![WorkflowError::new("b", "boom")],
        };
        let states = node_states(&bp, &result);
        assert_eq!(states["a"], NodeState::Done);
        assert_eq!(states["b"], NodeState::Failed);
        assert_eq!(states["c"], NodeState::Awaiting);
        assert_eq!(states["d"], NodeState::NotReached);
    }
}
