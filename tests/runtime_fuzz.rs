//! Robustness of the in-process runtime (fuzz.test / security.test): random graphs of
//! utility and built-in nodes, with random actions, conditions, joins, fallbacks, retries and
//! cycles, always end with a status (never a panic or a hang), and the result is consistent:
//! `failed` exactly when errors were recorded, and every stored output belongs to a node.

mod runtime_support;

use flowcraft_azure::flow::blueprint::{Blueprint, LoadOptions};
use flowcraft_azure::flow::expr::EvaluatorKind;
use flowcraft_azure::flow::node::NodeRegistry;
use flowcraft_azure::flow::runtime::RunStatus;
use proptest::prelude::*;
use runtime_support::*;
use serde_json::{Value, json};
use std::sync::Arc;

const USES: [&str; 7] = ["echo", "set", "action", "fail", "sum", "wait", "nope"];
const CONDITIONS: [&str; 5] = [
    "",
    "result.output",
    "!result.output",
    "n0 == null",
    "result.action === 'go'",
];

fn node(i: usize, uses: usize, fallback: Option<usize>, retries: i64, any: bool) -> Value {
    let uses = USES[uses % USES.len()];
    let mut node = json!({"id": format!("n{i}"), "uses": uses,
        "config": {"maxRetries": retries, "joinStrategy": if any { "any" } else { "all" }}});
    match uses {
        "set" => node["params"] = json!({"values": {format!("k{i}"): i}}),
        "action" => node["params"] = json!({"action": if i % 2 == 0 { "go" } else { "stop" }}),
        "fail" => node["params"] = json!({"message": format!("n{i} broke"), "times": i % 3}),
        _ => {}
    }
    if let Some(f) = fallback {
        node["config"]["fallback"] = json!(format!("n{f}"));
    }
    node
}

fn blueprint_strategy() -> impl Strategy<Value = Value> {
    (2usize..8).prop_flat_map(|n| {
        let nodes = prop::collection::vec(
            (
                0..USES.len(),
                prop::option::of(0..n),
                1i64..3,
                any::<bool>(),
            ),
            n,
        );
        let edges = prop::collection::vec(
            (
                0..n,
                0..n,
                prop::option::of(prop::sample::select(vec!["go", "stop"])),
                0..CONDITIONS.len(),
            ),
            0..12,
        );
        (nodes, edges).prop_map(move |(nodes, edges)| {
            let nodes: Vec<Value> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (uses, fallback, retries, any))| {
                    node(i, uses, fallback.filter(|f| *f != i), retries, any)
                })
                .collect();
            let edges: Vec<Value> = edges
                .into_iter()
                .map(|(s, t, action, condition)| {
                    let mut edge = json!({"source": format!("n{s}"), "target": format!("n{t}")});
                    if let Some(action) = action {
                        edge["action"] = json!(action);
                    }
                    edge["condition"] = json!(CONDITIONS[condition]);
                    edge
                })
                .collect();
            json!({"id": "fuzz", "metadata": {"allowCycles": true},
                   "nodes": nodes, "edges": edges})
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_blueprints_always_finish_with_a_consistent_result(doc in blueprint_strategy()) {
        let options = LoadOptions { evaluator: EvaluatorKind::Safe, allow_cycles: true };
        // some random documents are invalid (e.g. a fallback cycle); those must be clean errors
        let Ok(blueprint) = Blueprint::from_json_with(&doc.to_string(), &options) else {
            return Ok(());
        };
        let ids: Vec<String> = blueprint.nodes().iter().map(|n| n.id.clone()).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(
            runtime(NodeRegistry::with_builtins())
                .with_concurrency(3)
                .run(Arc::new(blueprint), ctx(json!({"n0": null}))),
        );
        prop_assert_ne!(result.status, RunStatus::Running);
        prop_assert_ne!(result.status, RunStatus::Cancelled);
        prop_assert_eq!(result.status == RunStatus::Failed, !result.errors.is_empty());
        for key in result.context.keys().filter_map(|k| k.strip_prefix("_outputs.")) {
            prop_assert!(ids.iter().any(|id| id == key), "output of unknown node {}", key);
        }
        if result.status == RunStatus::Awaiting {
            prop_assert!(result.context.contains_key("_awaitingNodeIds"));
        }
    }
}
