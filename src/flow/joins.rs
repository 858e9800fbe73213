//! Join bookkeeping: the one set of scheduling rules shared by the in-process runtime
//! ([`super::runtime`]) and the distributed core (`crate::distributed::transition`, which
//! stores a [`JoinBook`] in the run document).
//!
//! The rules:
//! - a node fires at most once per arming ([`JoinBook::fire`]), so self-loops and plain cycles
//!   run each node once; when a `loop-controller` fires it re-arms its loop body
//!   ([`Blueprint::loop_body`]), and the controller re-arms itself when it finishes
//!   ([`JoinBook::finished`]);
//! - an activation from a loop controller always fires its target;
//! - **`any` join**: fires on the first activation of the arming and ignores later ones;
//! - **`all` join**: fires when every DISTINCT predecessor it waits for has activated it (a
//!   set, so a redelivered activation never counts twice): its static predecessors minus
//!   loop controllers and minus back edges (predecessors reachable from the join itself
//!   without passing a loop controller, e.g. a self-loop), plus the batch workers of the
//!   current batch when it is a gather node ([`JoinBook::start_batch`]);
//! - a join that received some but not all of its activations when work runs out is a
//!   partial join ([`JoinBook::partial_joins`]): the run is `stalled` (or the join is carried
//!   across a pause).
//!
//! Pure data and rules, no I/O; the callers schedule what fires.

use super::blueprint::{Blueprint, JoinStrategy};
use super::execute::node_definition;
use super::graph::LOOP_CONTROLLER;
use super::node::NodeResult;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Which nodes fired in the current arming and which activations each join has received.
///
/// Dynamic nodes (batch workers) are looked up in the context (`_dynamic.<id>`), so every
/// method that needs a node's definition takes the run context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinBook {
    /// Nodes fired in the current arming.
    #[serde(default)]
    fired: BTreeSet<String>,
    /// Join arrivals by target: the distinct predecessors that activated it in this arming.
    #[serde(default)]
    arrivals: BTreeMap<String, BTreeSet<String>>,
    /// The batch workers a gather node waits for, by gather id (the current batch only).
    #[serde(default)]
    dynamic_preds: BTreeMap<String, BTreeSet<String>>,
    /// The gather node of each batch worker.
    #[serde(default)]
    dynamic_gather: BTreeMap<String, String>,
}

fn is_loop_controller(blueprint: &Blueprint, context: &Map<String, Value>, node: &str) -> bool {
    node_definition(blueprint, node, context).is_some_and(|n| n.uses == LOOP_CONTROLLER)
}

impl JoinBook {
    /// Marks `node` fired (it must run exactly once for this firing) and clears its arrivals.
    /// When `node` is a loop controller, its loop body is re-armed (fired marks and arrivals
    /// cleared) and the result is true.
    pub fn fire(
        &mut self,
        blueprint: &Blueprint,
        context: &Map<String, Value>,
        node: &str,
    ) -> bool {
        self.fired.insert(node.to_string());
        self.arrivals.remove(node);
        if !is_loop_controller(blueprint, context, node) {
            return false;
        }
        for id in blueprint.loop_body(node).iter().filter(|id| *id != node) {
            self.fired.remove(id);
            self.arrivals.remove(id);
        }
        true
    }

    /// Records that `source` activated `target`. True when `target` fires now: the caller
    /// must then [`JoinBook::fire`] it and schedule it. An unknown target never fires.
    pub fn activate(
        &mut self,
        blueprint: &Blueprint,
        context: &Map<String, Value>,
        source: &str,
        target: &str,
    ) -> bool {
        if node_definition(blueprint, target, context).is_none() {
            return false;
        }
        if is_loop_controller(blueprint, context, source) {
            return true;
        }
        if self.fired.contains(target) {
            return false;
        }
        self.arrivals
            .entry(target.to_string())
            .or_default()
            .insert(source.to_string());
        match blueprint.join_strategy(target) {
            JoinStrategy::Any => true,
            JoinStrategy::All => self.join_satisfied(blueprint, target),
        }
    }

    /// Whether every distinct predecessor an `all` join waits for has arrived (checked
    /// without copying the sets: a gather over N workers is activated N times).
    fn join_satisfied(&self, blueprint: &Blueprint, target: &str) -> bool {
        let Some(arrived) = self.arrivals.get(target) else {
            return false;
        };
        let dynamic_ok = self
            .dynamic_preds
            .get(target)
            .is_none_or(|workers| workers.is_subset(arrived));
        dynamic_ok
            && blueprint
                .join_waits_for(target)
                .iter()
                .all(|p| arrived.contains(p))
    }

    /// When `node` (with `result`) is a batch scatter naming a gather node
    /// (`output.gatherNodeId`), starts a fresh batch for that gather: it waits for exactly
    /// these dynamic workers (a batch inside a loop waits for this pass's workers only).
    pub fn start_batch(
        &mut self,
        blueprint: &Blueprint,
        context: &Map<String, Value>,
        node: &str,
        result: &NodeResult,
    ) {
        let Some(gather) = result
            .output
            .as_ref()
            .and_then(|o| o.get("gatherNodeId"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let scatters = !result.dynamic_nodes.is_empty()
            || node_definition(blueprint, node, context).is_some_and(|n| n.uses == "batch-scatter");
        if !scatters {
            return;
        }
        let workers: BTreeSet<String> = result.dynamic_nodes.iter().map(|d| d.id.clone()).collect();
        for worker in &workers {
            self.dynamic_gather
                .insert(worker.clone(), gather.to_string());
        }
        self.dynamic_preds.insert(gather.to_string(), workers);
    }

    /// The gather node a batch worker reports to (it activates it when it completes).
    pub fn gather_of(&self, worker: &str) -> Option<&str> {
        self.dynamic_gather.get(worker).map(String::as_str)
    }

    /// Called after `node` completed and was routed: a loop controller re-arms itself so the
    /// next iteration can fire it again.
    pub fn finished(&mut self, blueprint: &Blueprint, context: &Map<String, Value>, node: &str) {
        if is_loop_controller(blueprint, context, node) {
            self.fired.remove(node);
            self.arrivals.remove(node);
        }
    }

    /// Marks `node` fired without scheduling it (a resumed run's completed or awaiting nodes).
    pub fn mark_fired(&mut self, node: &str) {
        self.fired.insert(node.to_string());
    }

    /// Restores the arrivals of a join carried across a pause.
    pub fn restore_arrivals(&mut self, target: &str, sources: BTreeSet<String>) {
        self.arrivals.insert(target.to_string(), sources);
    }

    /// Joins that received some but not all of their activations: `(target, sources)`.
    pub fn partial_joins(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.arrivals
            .iter()
            .filter(|(target, sources)| !sources.is_empty() && !self.fired.contains(*target))
            .map(|(target, sources)| (target.as_str(), sources))
    }

    /// Forgets everything (a finished run no longer schedules).
    pub fn clear(&mut self) {
        *self = JoinBook::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::blueprint::NodeDefinition;
    use serde_json::json;

    fn bp(value: Value) -> Blueprint {
        Blueprint::from_json(&value.to_string()).unwrap()
    }

    fn diamond(strategy: &str) -> Blueprint {
        bp(json!({"id": "d", "nodes": [
            {"id": "s", "uses": "echo"}, {"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"},
            {"id": "c", "uses": "echo"}, {"id": "j", "uses": "echo", "config": {"joinStrategy": strategy}}],
          "edges": [{"source": "s", "target": "a"}, {"source": "s", "target": "b"},
                    {"source": "s", "target": "c"}, {"source": "a", "target": "j"},
                    {"source": "b", "target": "j"}, {"source": "c", "target": "j"}]}))
    }

    #[test]
    fn an_all_join_fires_once_every_distinct_predecessor_arrived_and_duplicates_do_not_count() {
        let b = diamond("all");
        let ctx = Map::new();
        let mut book = JoinBook::default();
        assert!(!book.activate(&b, &ctx, "a", "j"));
        assert!(!book.activate(&b, &ctx, "a", "j"));
        assert!(!book.activate(&b, &ctx, "b", "j"));
        assert_eq!(book.partial_joins().count(), 1);
        assert!(book.activate(&b, &ctx, "c", "j"));
        assert!(!book.fire(&b, &ctx, "j"));
        assert_eq!(book.partial_joins().count(), 0);
        assert!(!book.activate(&b, &ctx, "c", "j"), "fires once per arming");
    }

    #[test]
    fn an_any_join_fires_on_the_first_of_three_live_predecessors_only() {
        let b = diamond("any");
        let ctx = Map::new();
        let mut book = JoinBook::default();
        assert!(book.activate(&b, &ctx, "b", "j"));
        book.fire(&b, &ctx, "j");
        assert!(!book.activate(&b, &ctx, "a", "j"));
        assert!(!book.activate(&b, &ctx, "c", "j"));
        assert_eq!(book.partial_joins().count(), 0);
    }

    #[test]
    fn a_back_edge_is_not_waited_for() {
        let b = bp(
            json!({"id": "cyc", "metadata": {"allowCycles": true}, "nodes": [
            {"id": "s", "uses": "echo"}, {"id": "a", "uses": "echo"}, {"id": "x", "uses": "echo"}],
          "edges": [{"source": "s", "target": "a"}, {"source": "a", "target": "x"},
                    {"source": "x", "target": "a"}]}),
        );
        let mut book = JoinBook::default();
        assert!(book.activate(&b, &Map::new(), "s", "a"));
    }

    #[test]
    fn a_loop_controller_re_arms_its_body_and_itself() {
        let b = bp(json!({"id": "loop", "nodes": [
            {"id": "body", "uses": "echo"},
            {"id": "ctrl", "uses": "loop-controller", "params": {"condition": "true"},
             "config": {"joinStrategy": "any"}},
            {"id": "done", "uses": "echo"}],
          "edges": [{"source": "body", "target": "ctrl"},
                    {"source": "ctrl", "target": "body", "action": "continue"},
                    {"source": "ctrl", "target": "done", "action": "break"}]}));
        let ctx = Map::new();
        let mut book = JoinBook::default();
        book.fire(&b, &ctx, "body");
        assert!(book.activate(&b, &ctx, "body", "ctrl"));
        assert!(book.fire(&b, &ctx, "ctrl"), "a controller re-arms its body");
        assert!(book.activate(&b, &ctx, "ctrl", "body"));
        book.fire(&b, &ctx, "body");
        assert!(
            !book.activate(&b, &ctx, "body", "ctrl"),
            "controller not re-armed yet"
        );
        book.finished(&b, &ctx, "ctrl");
        assert!(book.activate(&b, &ctx, "body", "ctrl"));
    }

    #[test]
    fn a_gather_waits_for_the_workers_of_the_current_batch_only() {
        let b = bp(json!({"id": "batch", "nodes": [
            {"id": "sc", "uses": "batch-scatter"}, {"id": "g", "uses": "batch-gather"}],
          "edges": [{"source": "sc", "target": "g"}]}));
        let ctx = Map::new();
        let worker = |id: &str| NodeDefinition {
            id: id.to_string(),
            uses: "echo".to_string(),
            params: None,
            inputs: None,
            config: Default::default(),
        };
        let scatter = |ids: &[&str]| NodeResult {
            output: Some(json!({"gatherNodeId": "g", "hasMore": false})),
            action: None,
            dynamic_nodes: ids.iter().map(|id| worker(id)).collect(),
        };
        let mut book = JoinBook::default();
        book.start_batch(&b, &ctx, "sc", &scatter(&["w1", "w2"]));
        assert_eq!(book.gather_of("w1"), Some("g"));
        assert!(!book.activate(&b, &ctx, "sc", "g"));
        assert!(!book.activate(&b, &ctx, "w1", "g"));
        assert!(book.activate(&b, &ctx, "w2", "g"));
        book.fire(&b, &ctx, "g");
        // a second pass: only its own worker counts
        let mut book = JoinBook::default();
        book.start_batch(&b, &ctx, "sc", &scatter(&["w1"]));
        book.start_batch(&b, &ctx, "sc", &scatter(&["w3"]));
        assert!(!book.activate(&b, &ctx, "sc", "g"));
        assert!(book.activate(&b, &ctx, "w3", "g"));
    }

    #[test]
    fn the_book_round_trips_through_json_with_camel_case_keys() {
        let b = diamond("all");
        let ctx = Map::new();
        let mut book = JoinBook::default();
        book.activate(&b, &ctx, "a", "j");
        book.fire(&b, &ctx, "s");
        let value = serde_json::to_value(&book).unwrap();
        assert_eq!(value["arrivals"]["j"], json!(["a"]));
        assert!(value.get("dynamicPreds").is_some());
        let back: JoinBook = serde_json::from_value(value).unwrap();
        assert_eq!(back, book);
        let empty: JoinBook = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, JoinBook::default());
    }
}
