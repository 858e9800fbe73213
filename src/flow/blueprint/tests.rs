//! Blueprint tests: loading Flowcraft JSON unchanged (sanitizer whitelist), validation errors
//! and their paths, graph facts (analysis.test), and robustness on arbitrary input.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn load(v: Value) -> Result<Blueprint, BlueprintError> {
    Blueprint::from_json(&v.to_string())
}

fn load_ok(v: Value) -> Blueprint {
    match load(v) {
        Ok(bp) => bp,
        Err(e) => panic!("blueprint should load: {e}"),
    }
}

fn load_err(v: Value) -> BlueprintError {
    match load(v) {
        Ok(_) => panic!("blueprint should be rejected"),
        Err(e) => e,
    }
}

fn nodes(ids: &[&str]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({"id": id, "uses": "echo"}))
            .collect(),
    )
}

fn edge(s: &str, t: &str) -> Value {
    json!({"source": s, "target": t})
}

/// The example blueprint of spec §1.8.
fn order_fulfilment() -> Value {
    json!({
      "id": "order-fulfilment",
      "metadata": { "version": "1.2.0" },
      "nodes": [
        { "id": "validate", "uses": "validate-order", "inputs": "order", "params": { "strict": true } },
        { "id": "charge", "uses": "charge-card",
          "inputs": { "amount": "validate.total", "customer": "customerId" },
          "config": { "maxRetries": 3, "retryDelay": 2000, "timeout": 10000, "fallback": "charge_manual" } },
        { "id": "charge_manual", "uses": "queue-manual-charge" },
        { "id": "reserve", "uses": "reserve-stock", "inputs": "validate" },
        { "id": "join", "uses": "merge", "config": { "joinStrategy": "all" },
          "inputs": { "payment": "charge", "stock": "reserve" } },
        { "id": "review", "uses": "wait", "params": { "eventName": "manual_review" } },
        { "id": "pause", "uses": "sleep", "params": { "duration": "10m" } },
        { "id": "ship", "uses": "create-shipment" },
        { "id": "notify", "uses": "send-email", "config": { "joinStrategy": "any" } }
      ],
      "edges": [
        { "source": "validate", "target": "charge",  "action": "valid" },
        { "source": "validate", "target": "reserve", "action": "valid" },
        { "source": "validate", "target": "notify",  "action": "invalid", "transform": "input.reason" },
        { "source": "charge",  "target": "join" },
        { "source": "reserve", "target": "join" },
        { "source": "join", "target": "review", "action": "needs_review" },
        { "source": "join", "target": "pause" },
        { "source": "review", "target": "ship", "action": "approve" },
        { "source": "pause",  "target": "ship", "condition": "result.output" },
        { "source": "ship", "target": "notify", "condition": "result.output.trackingNumber" }
      ]
    })
}

// --- Loading (serde model, sanitizer whitelist) ---------------------------------------------

#[test]
fn loads_the_spec_example_unchanged() {
    let bp = load_ok(order_fulfilment());
    assert_eq!(bp.id(), "order-fulfilment");
    assert_eq!(bp.version(), Some("1.2.0"));
    assert_eq!(bp.nodes().len(), 9);
    assert_eq!(bp.edges().len(), 10);
    let charge = bp.node("charge").map(|n| n.config.clone());
    assert_eq!(
        charge,
        Some(NodeConfig {
            max_retries: Some(3),
            retry_delay: Some(2000),
            timeout: Some(10000),
            fallback: Some("charge_manual".into()),
            join_strategy: None,
        })
    );
    let inputs = bp.node("charge").and_then(|n| n.inputs.clone());
    let expected: BTreeMap<String, String> = [
        ("amount".to_owned(), "validate.total".to_owned()),
        ("customer".to_owned(), "customerId".to_owned()),
    ]
    .into();
    assert_eq!(inputs, Some(NodeInputs::Map(expected)));
    assert_eq!(
        bp.node("validate").and_then(|n| n.inputs.clone()),
        Some(NodeInputs::Key("order".into()))
    );
    assert_eq!(bp.max_retries("charge"), 3);
    assert_eq!(bp.max_retries("validate"), 1);
    assert_eq!(bp.join_strategy("notify"), JoinStrategy::Any);
    assert_eq!(bp.join_strategy("join"), JoinStrategy::All);
    assert_eq!(bp.join_strategy("ship"), JoinStrategy::All);
    assert!(bp.condition(8).is_some());
    assert!(bp.condition(0).is_none());
    assert!(bp.transform(2).is_some());
}

#[test]
fn drops_ui_and_unknown_fields_and_keeps_unknown_metadata() {
    let bp = load_ok(json!({
        "id": "x",
        "__proto__": {"polluted": true},
        "constructor": {"prototype": {"malicious": "property"}},
        "ui": {"zoom": 2},
        "metadata": {"version": "1", "owner": "team-a", "cycleEntryPoints": []},
        "nodes": [
            {"id": "a", "uses": "echo", "_sourceLocation": {"file": "f.ts", "line": 1, "column": 2},
             "position": {"x": 1}, "constructor": "bad", "__proto__": {"uses": "evil"}},
            {"id": "b", "uses": "test", "params": {"key": "value"}, "inputs": "input",
             "config": {"maxRetries": 3, "extra": 1}, "extra": "removed"}
        ],
        "edges": [{"source": "a", "target": "b", "action": "success", "condition": "ok",
                   "transform": "data", "style": "dashed", "label": "test edge",
                   "_sourceLocation": {"line": 3}}],
    }));
    let round_trip = serde_json::to_value(bp.definition()).unwrap_or_default();
    assert_eq!(
        round_trip,
        json!({
            "id": "x",
            "nodes": [
                {"id": "a", "uses": "echo"},
                {"id": "b", "uses": "test", "params": {"key": "value"}, "inputs": "input",
                 "config": {"maxRetries": 3}}
            ],
            "edges": [{"source": "a", "target": "b", "action": "success", "condition": "ok",
                       "transform": "data"}],
            "metadata": {"version": "1", "owner": "team-a", "cycleEntryPoints": []},
        })
    );
}

#[test]
fn accepts_object_maps_for_nodes_and_edges() {
    let bp = load_ok(json!({
        "id": "maps",
        "nodes": {"first": {"id": "a", "uses": "echo"}, "second": {"id": "b", "uses": "echo"}},
        "edges": {"e1": {"source": "a", "target": "b"}},
    }));
    let ids: Vec<&str> = bp.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(bp.successors("a"), ["b"]);
}

#[test]
fn tolerates_missing_or_null_nodes_edges_metadata_and_config() {
    let bp = load_ok(json!({"id": "empty"}));
    assert!(bp.nodes().is_empty() && bp.edges().is_empty());
    assert!(bp.start_nodes().is_empty() && bp.terminal_nodes().is_empty());
    let bp = load_ok(
        json!({"id": "nulls", "nodes": [{"id": "a", "uses": "echo", "config": null,
        "params": null, "inputs": null}], "edges": null, "metadata": null}),
    );
    assert_eq!(bp.start_nodes(), ["a"]);
    assert_eq!(bp.node("a").map(|n| n.config.is_default()), Some(true));
}

#[test]
fn empty_condition_is_none_and_empty_transform_is_present() {
    let bp = load_ok(json!({"id": "x", "nodes": nodes(&["a", "b"]),
        "edges": [{"source": "a", "target": "b", "condition": "", "transform": ""}]}));
    assert!(bp.condition(0).is_none());
    let scope: Map<String, Value> = Map::new();
    assert_eq!(bp.transform(0).map(|t| t.evaluate(&scope)), Some(None));
    assert!(bp.condition(7).is_none() && bp.transform(7).is_none());
}

#[test]
fn odd_node_ids_load() {
    let ids = ["", "a.b", "x/y", "ünï", "with \"quotes\"", "line\nbreak"];
    let bp = load_ok(json!({"id": "odd", "nodes": nodes(&ids),
        "edges": [edge("", "a.b"), edge("a.b", "x/y")]}));
    assert_eq!(bp.predecessors("x/y"), ["a.b"]);
    assert!(bp.start_nodes().contains(&String::new()));
}

// --- Validation errors and their paths -------------------------------------------------------

#[test]
fn invalid_json_reports_line_and_column() {
    let err = Blueprint::from_json("{\n  \"id\": \"x\",\n  \"nodes\": [ }").err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("invalid JSON") && msg.contains("line 3"),
        "{msg}"
    );
    let err = Blueprint::from_json("{\"id\": \"x\"} trailing").err();
    assert!(err.is_some_and(|e| e.message.contains("line 1")));
}

#[test]
fn the_document_must_be_an_object() {
    for text in ["[1, 2]", "\"id\"", "3", "null", " true"] {
        let err = Blueprint::from_json(text)
            .err()
            .unwrap_or_else(|| panic!("{text} loaded"));
        assert!(
            err.message.contains("must be a JSON object"),
            "{text}: {err}"
        );
    }
    let err = Blueprint::from_json("[1,").err();
    assert!(err.is_some_and(|e| e.message.contains("invalid JSON")));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = format!(
        "{{\"id\": \"x\", \"nodes\": [{{\"id\": \"a\", \"uses\": \"e\", \"params\": {{\"p\": {deep}}}}}]}}"
    );
    assert!(Blueprint::from_json(&text).is_err());
}

#[test]
fn wrong_types_name_their_json_path() {
    let cases = [
        (json!({"nodes": []}), "", "missing field `id`"),
        (json!({"id": 5}), "id", "invalid type"),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "echo"}, {"id": "b"}]}),
            "nodes[1]",
            "uses",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "config": {"joinStrategy": "some"}}]}),
            "nodes[0].config.joinStrategy",
            "unknown variant `some`",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "inputs": {"k": 1}}]}),
            "nodes[0].inputs.k",
            "invalid type",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "inputs": 3}]}),
            "nodes[0].inputs",
            "context key",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "config": {"retryDelay": -5}}]}),
            "nodes[0].config.retryDelay",
            "invalid value",
        ),
        (
            json!({"id": "x", "nodes": {"k": {"id": "a", "uses": 1}}}),
            "nodes.k.uses",
            "invalid type",
        ),
        (
            json!({"id": "x", "edges": [{"source": "a"}]}),
            "edges[0]",
            "target",
        ),
        (
            json!({"id": "x", "nodes": "no"}),
            "nodes",
            "an array or an object map",
        ),
    ];
    for (doc, path, needle) in cases {
        let err = load_err(doc.clone());
        assert_eq!(err.path, path, "{doc} -> {err}");
        assert!(err.message.contains(needle), "{doc} -> {err}");
    }
}

#[test]
fn graph_errors_name_the_offending_node_or_edge() {
    let cases = [
        (
            json!({"id": "x", "nodes": nodes(&["a", "b", "a"])}),
            "nodes[2].id",
            "duplicate node id \"a\" (first defined at nodes[0])",
        ),
        (
            json!({"id": "x", "nodes": nodes(&["a"]), "edges": [edge("a", "a2")]}),
            "edges[0].target",
            "unknown node \"a2\"",
        ),
        (
            json!({"id": "x", "nodes": nodes(&["a"]), "edges": [edge("zz", "a")]}),
            "edges[0].source",
            "unknown node \"zz\"",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "config": {"fallback": "nope"}}]}),
            "nodes[0].config.fallback",
            "unknown node \"nope\"",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "config": {"fallback": "a"}}]}),
            "nodes[0].config.fallback",
            "its own fallback",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "a", "uses": "e", "config": {"maxRetries": 0}}]}),
            "nodes[0].config.maxRetries",
            "at least 1",
        ),
        (
            json!({"id": "x", "nodes": nodes(&["a", "b"]),
                   "edges": [{"source": "a", "target": "b", "condition": "a > 1"}]}),
            "edges[0].condition",
            "invalid property expression",
        ),
        (
            json!({"id": "x", "metadata": {"evaluator": "safe"}, "nodes": nodes(&["a", "b"]),
                   "edges": [{"source": "a", "target": "b", "transform": "input +"}]}),
            "edges[0].transform",
            "invalid safe expression",
        ),
        (
            json!({"id": "x", "metadata": {"evaluator": "unsafe"}}),
            "metadata.evaluator",
            "unknown evaluator",
        ),
        (
            json!({"id": "x", "metadata": {"cycleEntryPoints": ["ghost"]}, "nodes": nodes(&["a"])}),
            "metadata.cycleEntryPoints[0]",
            "unknown node",
        ),
        (
            json!({"id": "x", "metadata": {"version": 2}}),
            "metadata.version",
            "string",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "l", "uses": "loop-controller",
                   "params": {"condition": "more"}}], "edges": []}),
            "nodes[0]",
            "no outgoing edge with action \"continue\"",
        ),
        (
            json!({"id": "x", "nodes": [{"id": "l", "uses": "loop-controller"}, {"id": "b", "uses": "e"}],
                   "edges": [{"source": "l", "target": "b", "action": "continue"}, edge("b", "l")]}),
            "nodes[0].params.condition",
            "needs params.condition",
        ),
    ];
    for (doc, path, needle) in cases {
        let err = load_err(doc.clone());
        assert_eq!(err.path, path, "{doc} -> {err}");
        assert!(err.message.contains(needle), "{doc} -> {err}");
    }
}

#[test]
fn cycles_without_a_loop_controller_are_rejected_unless_allowed() {
    let doc = json!({"id": "c", "nodes": nodes(&["s", "a", "b"]),
        "edges": [edge("s", "a"), edge("a", "b"), edge("b", "a")]});
    let err = load_err(doc.clone());
    assert_eq!(err.path, "edges[2]");
    assert!(
        err.message.contains("cycle \"a\" -> \"b\" -> \"a\""),
        "{err}"
    );
    let self_loop = json!({"id": "c", "nodes": nodes(&["a"]), "edges": [edge("a", "a")]});
    assert_eq!(load_err(self_loop.clone()).path, "edges[0]");

    let opts = LoadOptions {
        allow_cycles: true,
        ..LoadOptions::default()
    };
    assert!(Blueprint::from_json_with(&doc.to_string(), &opts).is_ok());
    let mut opted_in = doc;
    opted_in["metadata"] = json!({"allowCycles": true});
    let bp = load_ok(opted_in);
    assert_eq!(bp.start_nodes(), ["s"]);
    assert!(bp.terminal_nodes().is_empty());
}

#[test]
fn metadata_evaluator_overrides_load_options() {
    let doc = json!({"id": "x", "metadata": {"evaluator": "safe"}, "nodes": nodes(&["a", "b"]),
        "edges": [{"source": "a", "target": "b", "condition": "result.output > 1"}]});
    let bp = load_ok(doc.clone());
    assert_eq!(bp.evaluator(), EvaluatorKind::Safe);
    let mut plain = doc;
    plain["metadata"] = json!({});
    assert!(load(plain.clone()).is_err());
    let opts = LoadOptions {
        evaluator: EvaluatorKind::Safe,
        allow_cycles: false,
    };
    let bp = Blueprint::from_json_with(&plain.to_string(), &opts);
    assert_eq!(bp.map(|b| b.evaluator()).ok(), Some(EvaluatorKind::Safe));
}

// --- Graph facts (analysis.test, traverser.test) ---------------------------------------------

#[test]
fn start_and_terminal_nodes_exclude_fallback_only_nodes() {
    let bp = load_ok(order_fulfilment());
    assert_eq!(bp.start_nodes(), ["validate"]);
    assert_eq!(bp.terminal_nodes(), ["notify"]);
    assert!(bp.is_fallback_only("charge_manual"));
    assert!(!bp.is_fallback_only("charge"));
    assert_eq!(bp.fallback_sources("charge_manual"), ["charge"]);
    assert!(bp.fallback_sources("charge").is_empty());
}

#[test]
fn cycles_are_reported_in_traversal_order() {
    let two =
        json!({"id": "t", "nodes": nodes(&["A", "B"]), "edges": [edge("A", "B"), edge("B", "A")]});
    assert!(
        load_err(two)
            .message
            .starts_with("cycle \"A\" -> \"B\" -> \"A\"")
    );
    let three = json!({"id": "t", "nodes": nodes(&["A", "B", "C"]),
        "edges": [edge("A", "B"), edge("B", "C"), edge("C", "A")]});
    let err = load_err(three);
    assert!(
        err.message
            .starts_with("cycle \"A\" -> \"B\" -> \"C\" -> \"A\""),
        "{err}"
    );
    assert_eq!(err.path, "edges[2]");
}

#[test]
fn is_dag_is_false_only_with_a_cycle() {
    let dag = load_ok(json!({"id": "d", "nodes": nodes(&["A", "B", "C"]),
        "edges": [edge("A", "B"), edge("A", "C")]}));
    assert!(dag.is_dag());
    assert_eq!(dag.start_nodes(), ["A"]);
    assert_eq!(dag.terminal_nodes(), ["B", "C"]);
    assert!(!load_ok(builder_loop()).is_dag());
}

#[test]
fn multiple_start_and_terminal_nodes() {
    let bp = load_ok(
        json!({"id": "m", "nodes": nodes(&["a", "b", "c", "d", "lonely"]),
        "edges": [edge("a", "c"), edge("b", "c"), edge("c", "d")]}),
    );
    assert_eq!(bp.start_nodes(), ["a", "b", "lonely"]);
    assert_eq!(bp.terminal_nodes(), ["d", "lonely"]);
}

#[test]
fn predecessors_and_successors_are_distinct_node_ids() {
    let bp = load_ok(
        json!({"id": "d", "nodes": nodes(&["a", "b", "j"]), "edges": [
        {"source": "a", "target": "j", "action": "x"}, {"source": "a", "target": "j", "action": "y"},
        edge("b", "j"), edge("a", "b")]}),
    );
    assert_eq!(bp.predecessors("j"), ["a", "b"]);
    assert_eq!(bp.incoming("j"), [0, 1, 2]);
    assert_eq!(bp.successors("a"), ["j", "b"]);
    assert_eq!(bp.outgoing("a"), [0, 1, 3]);
    assert!(bp.predecessors("a").is_empty());
    assert!(bp.predecessors("unknown").is_empty() && bp.outgoing("unknown").is_empty());
    assert_eq!(bp.max_retries("unknown"), 1);
    assert!(bp.node("unknown").is_none());
}

/// A loop as the Flowcraft builder emits it (spec §1.7).
fn builder_loop() -> Value {
    json!({
        "id": "loop", "metadata": {"evaluator": "safe", "cycleEntryPoints": ["ctrl"]},
        "nodes": [
            {"id": "init", "uses": "set"},
            {"id": "body", "uses": "work", "config": {"fallback": "rescue"}},
            {"id": "step", "uses": "work"},
            {"id": "rescue", "uses": "echo"},
            {"id": "ctrl", "uses": "loop-controller", "params": {"condition": "count < 3"},
             "config": {"joinStrategy": "any"}},
            {"id": "done", "uses": "echo"}
        ],
        "edges": [
            edge("init", "body"), edge("body", "step"), edge("step", "ctrl"),
            {"source": "ctrl", "target": "body", "action": "continue", "transform": "context[\"step\"]"},
            {"source": "ctrl", "target": "done", "action": "break", "transform": "context[\"step\"]"}
        ]
    })
}

#[test]
fn loop_body_is_the_cycle_through_the_controller_plus_fallbacks() {
    let bp = load_ok(builder_loop());
    assert_eq!(bp.loop_body("ctrl"), ["body", "step", "rescue"]);
    assert!(bp.loop_body("body").is_empty());
    assert_eq!(bp.predecessors("body"), ["init", "ctrl"]);
    assert_eq!(bp.join_sources("body"), ["init"]);
    assert_eq!(bp.start_nodes(), ["init"]);
    assert_eq!(bp.terminal_nodes(), ["done"]);
    let scope: Map<String, Value> = [("count".to_owned(), json!(2))].into_iter().collect();
    let cond = bp.loop_condition("ctrl").and_then(|c| c.evaluate(&scope));
    assert_eq!(cond, Some(json!(true)));
}

#[test]
fn cycle_entry_points_are_start_nodes_when_nothing_else_is() {
    let doc = json!({"id": "ring", "metadata": {"cycleEntryPoints": ["b"]},
        "nodes": [{"id": "a", "uses": "e"}, {"id": "b", "uses": "e"},
                  {"id": "ctrl", "uses": "loop-controller", "params": {"condition": "go"}}],
        "edges": [edge("a", "b"), edge("b", "ctrl"),
                  {"source": "ctrl", "target": "a", "action": "continue"}]});
    let bp = load_ok(doc.clone());
    assert_eq!(bp.start_nodes(), ["b"]);
    assert_eq!(bp.loop_body("ctrl"), ["a", "b"]);
    let mut no_meta = doc;
    no_meta["metadata"] = json!({});
    assert_eq!(load_ok(no_meta).start_nodes(), ["a"]);
}

#[test]
fn each_separate_cycle_gets_one_entry_when_there_are_no_start_nodes() {
    let doc = json!({"id": "rings", "metadata": {"allowCycles": true, "cycleEntryPoints": ["d"]},
        "nodes": [{"id": "a", "uses": "e"}, {"id": "b", "uses": "e"},
                  {"id": "c", "uses": "e"}, {"id": "d", "uses": "e"},
                  {"id": "tail", "uses": "e"}, {"id": "self", "uses": "e"}],
        "edges": [edge("a", "b"), edge("b", "a"), edge("c", "d"), edge("d", "c"),
                  edge("b", "tail"), edge("self", "self")]});
    // the declared entry first, then the first node of every part not reachable yet
    assert_eq!(load_ok(doc.clone()).start_nodes(), ["d", "a", "self"]);
    let mut no_meta = doc;
    no_meta["metadata"] = json!({"allowCycles": true});
    assert_eq!(load_ok(no_meta).start_nodes(), ["a", "c", "self"]);
}

#[test]
fn a_cycle_beside_a_loop_controller_is_still_rejected() {
    let doc = json!({"id": "x",
        "nodes": [{"id": "s", "uses": "e"}, {"id": "a", "uses": "e"}, {"id": "b", "uses": "e"},
                  {"id": "ctrl", "uses": "loop-controller", "params": {"condition": "go"}}],
        "edges": [edge("s", "a"), edge("a", "ctrl"), {"source": "ctrl", "target": "a", "action": "continue"},
                  edge("a", "b"), edge("b", "a")]});
    let err = load_err(doc);
    assert_eq!(err.path, "edges[4]", "{err}");
}

#[test]
fn blueprint_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Blueprint>();
}

// --- Robustness -------------------------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..5).prop_map(Value::from),
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("loop-controller"),
            Just("continue"),
            Just("a.b"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id"),
                    Just("uses"),
                    Just("nodes"),
                    Just("edges"),
                    Just("source"),
                    Just("target"),
                    Just("config"),
                    Just("fallback"),
                    Just("maxRetries"),
                    Just("joinStrategy"),
                    Just("action"),
                    Just("condition"),
                    Just("params"),
                    Just("inputs"),
                    Just("metadata"),
                    Just("cycleEntryPoints"),
                    Just("x"),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #[test]
    fn loading_arbitrary_json_never_panics(doc in arb_json()) {
        let text = doc.to_string();
        for allow_cycles in [false, true] {
            let opts = LoadOptions { evaluator: EvaluatorKind::Safe, allow_cycles };
            if let Ok(bp) = Blueprint::from_json_with(&text, &opts) {
                for node in bp.nodes() {
                    let _ = (bp.loop_body(&node.id), bp.predecessors(&node.id), bp.max_retries(&node.id));
                }
                let _ = crate::flow::mermaid::to_mermaid(&bp);
            }
        }
    }

    #[test]
    fn loading_arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = Blueprint::from_json(&text);
    }

    #[test]
    fn random_graphs_load_or_fail_cleanly(
        n in 1usize..8,
        edges in prop::collection::vec((0usize..8, 0usize..8), 0..16),
        allow in any::<bool>(),
    ) {
        let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let doc = json!({
            "id": "g",
            "metadata": {"allowCycles": allow},
            "nodes": ids.iter().map(|id| json!({"id": id, "uses": "echo"})).collect::<Vec<_>>(),
            "edges": edges.iter().map(|(s, t)| edge(&format!("n{s}"), &format!("n{t}"))).collect::<Vec<_>>(),
        });
        match load(doc) {
            Ok(bp) => {
                // Every node is either on some edge or both a start and a terminal node.
                prop_assert!(!bp.start_nodes().is_empty());
                for id in &ids {
                    let isolated = bp.incoming(id).is_empty() && bp.outgoing(id).is_empty();
                    if isolated {
                        prop_assert!(bp.start_nodes().contains(id) && bp.terminal_nodes().contains(id));
                    }
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }
}
