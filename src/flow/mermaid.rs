//! Mermaid `flowchart` export of a blueprint: one box per node, action and condition labels on
//! edges, joins and loop controllers marked, fallbacks as dashed edges. Node ids may contain any
//! characters, so Mermaid ids are generated (`n0`, `n1`, ...) and labels are entity-escaped.

use super::blueprint::{Blueprint, JoinStrategy};
use super::graph::LOOP_CONTROLLER;
use super::run_view::NodeState;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Renders the blueprint as Mermaid `flowchart TD` text.
///
/// Start nodes are drawn as stadiums, loop controllers as hexagons; joins say `all join` /
/// `any join`; edges carry their action and `[condition]`; `-.->|fallback|` points from a node
/// to its fallback.
///
/// ```
/// use flowcraft_azure::flow::{blueprint::Blueprint, mermaid::to_mermaid};
/// let bp = Blueprint::from_json(r#"{"id":"x","nodes":[{"id":"a","uses":"action"},
///     {"id":"b","uses":"echo"}],"edges":[{"source":"a","target":"b","action":"ok"}]}"#).unwrap();
/// assert!(to_mermaid(&bp).contains(r#"n0 -->|"ok"| n1"#));
/// ```
pub fn to_mermaid(blueprint: &Blueprint) -> String {
    let mut out = String::from("flowchart TD\n");
    let positions: HashMap<&str, usize> = blueprint
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mermaid_id = |id: &str| {
        positions
            .get(id)
            .map_or_else(|| "missing".to_owned(), |i| format!("n{i}"))
    };
    for (i, node) in blueprint.nodes().iter().enumerate() {
        let mut label = format!("{}<br/>{}", escape(&node.id), escape(&node.uses));
        let joins = blueprint.join_sources(&node.id).len() > 1;
        match blueprint.join_strategy(&node.id) {
            JoinStrategy::Any => label.push_str("<br/>any join"),
            JoinStrategy::All if joins => label.push_str("<br/>all join"),
            JoinStrategy::All => {}
        }
        let (open, close) = if node.uses == LOOP_CONTROLLER {
            ("{{", "}}")
        } else if blueprint.start_nodes().contains(&node.id) {
            ("([", "])")
        } else {
            ("[", "]")
        };
        let _ = writeln!(out, "    n{i}{open}\"{label}\"{close}");
    }
    for edge in blueprint.edges() {
        let mut label = Vec::new();
        if let Some(action) = &edge.action {
            label.push(escape(action));
        }
        if let Some(condition) = edge.condition.as_deref().filter(|c| !c.is_empty()) {
            label.push(format!("[{}]", escape(condition)));
        }
        let (from, to) = (mermaid_id(&edge.source), mermaid_id(&edge.target));
        if label.is_empty() {
            let _ = writeln!(out, "    {from} --> {to}");
        } else {
            let _ = writeln!(out, "    {from} -->|\"{}\"| {to}", label.join(" "));
        }
    }
    for node in blueprint.nodes() {
        if let Some(fallback) = &node.config.fallback {
            let (from, to) = (mermaid_id(&node.id), mermaid_id(fallback));
            let _ = writeln!(out, "    {from} -.->|\"fallback\"| {to}");
        }
    }
    out
}

/// Renders the blueprint like [`to_mermaid`], with each node coloured by its state in a run
/// (green done, red failed, amber awaiting, grey not reached).
///
/// ```
/// use std::collections::BTreeMap;
/// use flowcraft_azure::flow::{blueprint::Blueprint, mermaid::to_mermaid_with_states, run_view::NodeState};
/// let bp = Blueprint::from_json(r#"{"id":"x","nodes":[{"id":"a","uses":"echo"}],"edges":[]}"#).unwrap();
/// let states = BTreeMap::from([("a".to_string(), NodeState::Done)]);
/// assert!(to_mermaid_with_states(&bp, &states).contains("class n0 done"));
/// ```
pub fn to_mermaid_with_states(
    blueprint: &Blueprint,
    states: &BTreeMap<String, NodeState>,
) -> String {
    let mut out = to_mermaid(blueprint);
    out.push_str("    classDef done fill:#c8f7c5,stroke:#2e7d32\n");
    out.push_str("    classDef failed fill:#ffcdd2,stroke:#c62828\n");
    out.push_str("    classDef awaiting fill:#ffe0b2,stroke:#ef6c00\n");
    out.push_str("    classDef not-reached fill:#eeeeee,stroke:#9e9e9e\n");
    for (i, node) in blueprint.nodes().iter().enumerate() {
        let state = states
            .get(&node.id)
            .copied()
            .unwrap_or(NodeState::NotReached);
        let _ = writeln!(out, "    class n{i} {}", state.as_str());
    }
    out
}

/// Escapes text for a quoted Mermaid label: markup and quote characters become entity codes,
/// line breaks and other control characters become spaces.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            '`' => out.push_str("#96;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blueprint(doc: serde_json::Value) -> Blueprint {
        match Blueprint::from_json(&doc.to_string()) {
            Ok(bp) => bp,
            Err(e) => panic!("fixture should load: {e}"),
        }
    }

    #[test]
    fn chain_renders_nodes_and_plain_edges() {
        let bp = blueprint(json!({"id": "c", "nodes": [{"id": "A", "uses": "echo"},
            {"id": "B", "uses": "echo"}], "edges": [{"source": "A", "target": "B"}]}));
        assert_eq!(
            to_mermaid(&bp),
            "flowchart TD\n    n0([\"A<br/>echo\"])\n    n1[\"B<br/>echo\"]\n    n0 --> n1\n"
        );
    }

    #[test]
    fn actions_conditions_joins_and_fallbacks_are_visible() {
        let bp = blueprint(json!({"id": "m", "nodes": [
            {"id": "a", "uses": "action", "config": {"fallback": "fb"}},
            {"id": "b", "uses": "echo"}, {"id": "c", "uses": "echo"},
            {"id": "all", "uses": "sum"},
            {"id": "first", "uses": "echo", "config": {"joinStrategy": "any"}},
            {"id": "fb", "uses": "echo"}],
            "edges": [
                {"source": "a", "target": "b", "action": "approve"},
                {"source": "a", "target": "c", "condition": "result.output"},
                {"source": "b", "target": "all"}, {"source": "c", "target": "all"},
                {"source": "b", "target": "first"}, {"source": "c", "target": "first"}]}));
        let text = to_mermaid(&bp);
        assert!(text.contains("n0 -->|\"approve\"| n1\n"), "{text}");
        assert!(text.contains("n0 -->|\"[result.output]\"| n2\n"), "{text}");
        assert!(text.contains("n3[\"all<br/>sum<br/>all join\"]"), "{text}");
        assert!(
            text.contains("n4[\"first<br/>echo<br/>any join\"]"),
            "{text}"
        );
        assert!(text.contains("n0 -.->|\"fallback\"| n5\n"), "{text}");
    }

    #[test]
    fn diamond_renders_every_edge_once() {
        let bp = blueprint(json!({"id": "d", "nodes": [{"id": "A", "uses": "n"},
            {"id": "B", "uses": "n"}, {"id": "C", "uses": "n"}, {"id": "D", "uses": "n"}],
            "edges": [{"source": "A", "target": "B"}, {"source": "A", "target": "C"},
                      {"source": "B", "target": "D"}, {"source": "C", "target": "D"}]}));
        let text = to_mermaid(&bp);
        for line in [
            "n0 --> n1",
            "n0 --> n2",
            "n1 --> n3",
            "n2 --> n3",
            "n3[\"D<br/>n<br/>all join\"]",
        ] {
            assert_eq!(text.matches(line).count(), 1, "{line} in {text}");
        }
    }

    #[test]
    fn action_and_condition_share_one_escaped_label() {
        let bp = blueprint(json!({"id": "l", "metadata": {"evaluator": "safe"},
            "nodes": [{"id": "A", "uses": "n"}, {"id": "B", "uses": "n"}],
            "edges": [{"source": "A", "target": "B", "action": "success",
                       "condition": "status == \"ok\""}]}));
        let text = to_mermaid(&bp);
        assert!(
            text.contains("n0 -->|\"success [status == #quot;ok#quot;]\"| n1"),
            "{text}"
        );
    }

    #[test]
    fn loop_controllers_are_hexagons() {
        let bp = blueprint(json!({"id": "l", "nodes": [{"id": "s", "uses": "echo"},
            {"id": "b", "uses": "echo"},
            {"id": "ctl", "uses": "loop-controller", "params": {"condition": "go"}}],
            "edges": [{"source": "s", "target": "b"}, {"source": "b", "target": "ctl"},
                      {"source": "ctl", "target": "b", "action": "continue"}]}));
        let text = to_mermaid(&bp);
        assert!(text.contains("n2{{\"ctl<br/>loop-controller\"}}"), "{text}");
        assert!(text.contains("n2 -->|\"continue\"| n1"), "{text}");
    }

    #[test]
    fn hostile_ids_cannot_break_out_of_labels() {
        let id = "x\"]\nclick n0 \"http://evil\"\n%% <b>#1</b> | `y`";
        let bp = blueprint(json!({"id": "h", "nodes": [{"id": id, "uses": "echo"}],
            "edges": []}));
        let text = to_mermaid(&bp);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let label = lines.get(1).copied().unwrap_or_default();
        let inner = label
            .strip_prefix("    n0([\"")
            .and_then(|l| l.strip_suffix("\"])"))
            .unwrap_or_default();
        assert!(!inner.is_empty(), "{label}");
        for forbidden in ['"', '\n', '<', '>', '|', '`'] {
            assert!(!inner.replace("<br/>", "").contains(forbidden), "{label}");
        }
        assert!(
            inner.contains("#quot;") && inner.contains("#35;1"),
            "{label}"
        );
    }
}
