//! Mermaid `flowchart` export of a blueprint: one box per node, action and condition labels on
//! edges, joins and loop controllers marked, fallbacks as dashed edges. Node ids may contain any
//! characters, so Mermaid ids are generated (`n0`, `n1`, ...) and labels are entity-escaped.

use super::blueprint::{Blueprint, JoinStrategy};
use super::graph::LOOP_CONTROLLER;
use std::fmt::Write;

/// Renders the blueprint as Mermaid `flowchart TD` text.
///
/// Start nodes are drawn as stadiums, loop controllers as hexagons; joins say `all join` /
/// `any join`; edges carry their action and `[condition]`; `-.->|fallback|` points from a node
/// to its fallback.
pub fn to_mermaid(blueprint: &Blueprint) -> String {
    let mut out = String::from("flowchart TD\n");
    let mermaid_id = |id: &str| {
        blueprint
            .nodes()
            .iter()
            .position(|n| n.id == id)
            .map_or_else(|| "missing".to_owned(), |i| format!("n{i}"))
    };
    for (i, node) in blueprint.nodes().iter().enumerate() {
        let mut label = format!("{}<br/>{}", escape(&node.id), escape(&node.uses));
        let joins = blueprint.predecessors(&node.id).len() > 1;
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
