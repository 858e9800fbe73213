//! The benchmark workloads: a 10-node chain of `echo` nodes, a 16-way fan-out into an `all`
//! join, and a single node (for pickup latency on an idle fleet); each with the check that a
//! finished run holds every output it should.

use crate::flow::runtime::{RunStatus, WorkflowResult};
use serde_json::{Map, Value, json};

/// Nodes in the chain.
pub const CHAIN: usize = 10;
/// Branches of the fan-out.
pub const FAN: usize = 16;

/// One workload shape.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The blueprint JSON (its `id` is the shape's name).
    pub blueprint: Value,
    /// Nodes one run executes.
    pub nodes_per_run: u64,
}

impl Shape {
    /// The blueprint id.
    pub fn id(&self) -> &str {
        self.blueprint["id"].as_str().unwrap_or_default()
    }

    /// The initial context of run number `run` (distinct per run so outputs can be checked).
    pub fn input(&self, run: usize) -> Map<String, Value> {
        let mut input = Map::new();
        input.insert("seed".into(), json!(run));
        input
    }

    /// Checks a finished run: completed, and every node's output is the run's seed.
    pub fn check(&self, run: usize, result: &WorkflowResult) -> Result<(), String> {
        if result.status != RunStatus::Completed {
            return Err(format!(
                "status {}, errors {:?}",
                result.status, result.errors
            ));
        }
        let want = json!(run);
        let nodes = self.blueprint["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for node in nodes {
            let id = node["id"].as_str().unwrap_or_default();
            let key = format!("_outputs.{id}");
            match result.context.get(&key) {
                Some(got) if *got == want || id == "join" => {}
                got => return Err(format!("{key} is {got:?}, expected {want}")),
            }
        }
        Ok(())
    }
}

/// `echo` a0 -> a1 -> ... -> a9, the first reading `seed`.
pub fn chain() -> Shape {
    let nodes: Vec<Value> = (0..CHAIN)
        .map(|k| match k {
            0 => json!({"id": "a0", "uses": "echo", "inputs": "seed"}),
            _ => json!({"id": format!("a{k}"), "uses": "echo"}),
        })
        .collect();
    let edges: Vec<Value> = (1..CHAIN)
        .map(|k| json!({"source": format!("a{}", k - 1), "target": format!("a{k}")}))
        .collect();
    Shape {
        blueprint: json!({"id": "bench-chain", "nodes": nodes, "edges": edges}),
        nodes_per_run: CHAIN as u64,
    }
}

/// `echo` start -> 16 `echo` branches -> `all` join (`echo`).
pub fn fanout() -> Shape {
    let mut nodes = vec![json!({"id": "start", "uses": "echo", "inputs": "seed"})];
    let mut edges = Vec::new();
    for k in 0..FAN {
        let id = format!("b{k}");
        nodes.push(json!({"id": id, "uses": "echo"}));
        edges.push(json!({"source": "start", "target": id}));
        edges.push(json!({"source": id, "target": "join"}));
    }
    nodes.push(json!({"id": "join", "uses": "echo", "config": {"joinStrategy": "all"}}));
    Shape {
        blueprint: json!({"id": "bench-fanout", "nodes": nodes, "edges": edges}),
        nodes_per_run: FAN as u64 + 2,
    }
}

/// One `echo` node.
pub fn single() -> Shape {
    Shape {
        blueprint: json!({"id": "bench-single",
            "nodes": [{"id": "only", "uses": "echo", "inputs": "seed"}], "edges": []}),
        nodes_per_run: 1,
    }
}
