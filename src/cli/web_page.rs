//! The run view that `serve` shows at `GET /`: plain HTML rendered on the server (no
//! JavaScript build step, nothing loaded from the network). The index lists the runs; `?run=ID`
//! shows one run: its blueprint graph as inline SVG laid out by depth, each node coloured by
//! its state, its errors, and a resume form for awaiting nodes (a few lines of inline script
//! post it as JSON).

use super::ops::{RunReport, RunRow, UNKNOWN};
use std::collections::BTreeMap;
use std::fmt::Write;

const BOX_W: usize = 170;
const BOX_H: usize = 50;
const GAP_X: usize = 30;
const GAP_Y: usize = 50;
const MARGIN: usize = 20;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:24px}table{border-collapse:collapse}\
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}\
a{color:#1565c0}.legend span{display:inline-block;padding:2px 8px;margin-right:6px;\
border-radius:4px;color:#fff;font-size:12px}.errors li{color:#c62828}\
form{margin:8px 0;padding:8px;border:1px solid #ddd;border-radius:6px}\
input{margin-right:8px}#result{font-family:monospace}";

/// The fill colour of a node state.
pub fn state_colour(state: &str) -> &'static str {
    match state {
        "done" => "#2e7d32",
        "running" => "#1565c0",
        "failed" => "#c62828",
        "awaiting" => "#ef6c00",
        _ => "#9e9e9e",
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

/// The index: a table of runs, each linking to its view.
pub fn index(rows: &[RunRow]) -> String {
    let mut body = String::from("<h1>flowcraft-azure runs</h1>");
    if rows.is_empty() {
        body.push_str("<p id=\"no-runs\">No runs yet. Start one with <code>POST /runs</code>.</p>");
    } else {
        body.push_str(
            "<table id=\"runs\"><tr><th>Run</th><th>Status</th><th>Blueprint</th><th>Started</th><th>Updated</th></tr>",
        );
        for row in rows {
            let id = escape(&row.run_id);
            let _ = write!(
                body,
                "<tr class=\"run\" data-run=\"{id}\" data-status=\"{status}\"><td><a href=\"/?run={id}\">{id}</a></td>\
                 <td style=\"color:{colour}\">{status}</td><td>{bp}</td><td>{started}</td><td>{updated}</td></tr>",
                status = row.status,
                colour = state_colour(match row.status {
                    "completed" => "done",
                    "cancelled" | "stalled" => "failed",
                    s => s,
                }),
                bp = escape(row.blueprint_id.as_deref().unwrap_or("")),
                started = escape(row.started_at.as_deref().unwrap_or(UNKNOWN)),
                updated = escape(&row.last_updated),
            );
        }
        body.push_str("</table>");
    }
    page("flowcraft-azure runs", &body)
}

/// A page saying the run does not exist.
pub fn not_found(run_id: &str) -> String {
    page(
        "run not found",
        &format!(
            "<h1>No run {}</h1><p><a href=\"/\">All runs</a></p>",
            escape(run_id)
        ),
    )
}

/// One run: summary, graph, node list, awaiting nodes with a resume form, errors.
pub fn run_view(report: &RunReport) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/\">All runs</a></p><h1>Run <span id=\"run-id\">{}</span></h1>\
         <p>Blueprint <b>{}</b> &middot; status <b id=\"run-status\" style=\"color:{}\">{}</b> \
         &middot; {} done, {} pending{}</p>",
        escape(&report.run_id),
        escape(report.blueprint_id.as_deref().unwrap_or("?")),
        state_colour(match report.status {
            "completed" => "done",
            "cancelled" | "stalled" => "failed",
            s => s,
        }),
        report.status,
        report.nodes_done,
        report.nodes_pending,
        report
            .reason
            .as_deref()
            .map(|r| format!(" &middot; {}", escape(r)))
            .unwrap_or_default(),
    );
    body.push_str("<p class=\"legend\">");
    for state in ["done", "running", "failed", "awaiting", "not-reached"] {
        let _ = write!(
            body,
            "<span style=\"background:{}\">{state}</span>",
            state_colour(state)
        );
    }
    body.push_str("</p>");
    body.push_str(&graph(report));
    body.push_str(
        "<h2>Nodes</h2><table id=\"nodes\"><tr><th>Node</th><th>Uses</th><th>State</th></tr>",
    );
    for node in &report.nodes {
        let _ = write!(
            body,
            "<tr class=\"node\" data-node=\"{id}\" data-state=\"{state}\"><td>{id}</td><td>{uses}</td>\
             <td style=\"color:{colour}\">{state}</td></tr>",
            id = escape(&node.id),
            uses = escape(node.uses.as_deref().unwrap_or("")),
            state = node.state,
            colour = state_colour(node.state),
        );
    }
    body.push_str("</table>");
    if !report.awaiting.is_empty() {
        body.push_str("<h2>Awaiting</h2>");
        for a in &report.awaiting {
            let node = escape(&a.node);
            let _ = write!(
                body,
                "<form class=\"resume\" data-node=\"{node}\" onsubmit=\"return resumeNode(this)\">\
                 <b>{node}</b> waits for {waits} \
                 <input name=\"action\" placeholder=\"action\" required>\
                 <input name=\"output\" placeholder=\"output JSON (optional)\">\
                 <input name=\"token\" type=\"password\" placeholder=\"API token (if set)\">\
                 <button type=\"submit\">Resume</button></form>",
                waits = escape(&super::ops::waits_for_text(a)),
            );
        }
        let _ = write!(
            body,
            "<p id=\"result\"></p><script>\
             function resumeNode(f){{var b={{node:f.dataset.node,action:f.action.value}};\
             if(f.output.value){{try{{b.output=JSON.parse(f.output.value)}}catch(e){{\
             document.getElementById('result').textContent='output is not JSON';return false}}}}\
             var h={{'Content-Type':'application/json'}};if(f.token.value)h['Authorization']='Bearer '+f.token.value;\
             fetch('/runs/'+encodeURIComponent({id})+'/resume',{{method:'POST',headers:h,body:JSON.stringify(b)}})\
             .then(function(r){{return r.text().then(function(t){{document.getElementById('result').textContent=r.status+' '+t;\
             if(r.ok)setTimeout(function(){{location.reload()}},500)}})}});return false}}</script>",
            id = serde_json::to_string(&report.run_id)
                .unwrap_or_default()
                .replace('<', "\\u003c")
        );
    }
    if !report.errors.is_empty() {
        body.push_str("<h2>Errors</h2><ul class=\"errors\">");
        for e in &report.errors {
            let _ = write!(
                body,
                "<li data-node=\"{}\"><b>{}</b> {}: {}</li>",
                escape(&e.node_id),
                escape(&e.node_id),
                escape(&e.timestamp),
                escape(&e.message)
            );
        }
        body.push_str("</ul>");
    }
    if report.status == "running" {
        body.push_str("<script>setTimeout(function(){location.reload()},2000)</script>");
    }
    page(&format!("run {}", report.run_id), &body)
}

/// The blueprint graph as inline SVG: one row per depth, arrows between boxes.
fn graph(report: &RunReport) -> String {
    let mut rows: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, node) in report.nodes.iter().enumerate() {
        rows.entry(node.depth).or_default().push(i);
    }
    let mut pos: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let widest = rows.values().map(Vec::len).max().unwrap_or(1);
    let width = MARGIN * 2 + widest * (BOX_W + GAP_X);
    for (row, (_, members)) in rows.iter().enumerate() {
        let offset = (widest - members.len()) * (BOX_W + GAP_X) / 2;
        for (col, &i) in members.iter().enumerate() {
            let x = MARGIN + offset + col * (BOX_W + GAP_X);
            let y = MARGIN + row * (BOX_H + GAP_Y);
            pos.insert(report.nodes[i].id.as_str(), (x, y));
        }
    }
    let height = MARGIN * 2 + rows.len().max(1) * (BOX_H + GAP_Y) - GAP_Y;
    let mut svg = format!(
        "<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\"><defs><marker id=\"arrow\" markerWidth=\"10\" markerHeight=\"8\" \
         refX=\"9\" refY=\"4\" orient=\"auto\"><path d=\"M0,0 L10,4 L0,8 z\" fill=\"#555\"/></marker></defs>"
    );
    for (source, target, label) in &report.edges {
        let (Some(&(sx, sy)), Some(&(tx, ty))) =
            (pos.get(source.as_str()), pos.get(target.as_str()))
        else {
            continue;
        };
        let (x1, y1) = (sx + BOX_W / 2, sy + BOX_H);
        let (x2, y2) = (tx + BOX_W / 2, ty);
        let _ = write!(
            svg,
            "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#555\" stroke-width=\"1.5\" \
             marker-end=\"url(#arrow)\"/>"
        );
        if !label.is_empty() {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#333\">{}</text>",
                (x1 + x2) / 2 + 4,
                (y1 + y2) / 2,
                escape(label)
            );
        }
    }
    for node in &report.nodes {
        let Some(&(x, y)) = pos.get(node.id.as_str()) else {
            continue;
        };
        let _ = write!(
            svg,
            "<g class=\"graph-node\" data-node=\"{id}\" data-state=\"{state}\">\
             <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"8\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"{ty1}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#fff\" font-weight=\"bold\">{id}</text>\
             <text x=\"{tx}\" y=\"{ty2}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#fff\">{state}</text></g>",
            id = escape(&node.id),
            state = node.state,
            colour = state_colour(node.state),
            tx = x + BOX_W / 2,
            ty1 = y + 21,
            ty2 = y + 39,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::ops::{AwaitingReport, ErrorReport, NodeReport};
    use serde_json::json;

    fn node(id: &str, state: &'static str, depth: usize) -> NodeReport {
        NodeReport {
            id: id.into(),
            uses: Some("echo".into()),
            state,
            depth,
        }
    }

    #[test]
    fn every_state_gets_its_colour_and_awaiting_nodes_a_form() {
        let report = RunReport {
            run_id: "r<1>".into(),
            blueprint_id: Some("bp".into()),
            status: "failed",
            reason: Some("node 'c' failed".into()),
            nodes_done: 1,
            nodes_pending: 1,
            nodes: vec![
                node("a", "done", 0),
                node("b", "running", 1),
                node("c", "failed", 1),
                node("d", "awaiting", 1),
                node("e", "not-reached", 2),
            ],
            edges: vec![("a".into(), "b".into(), "ok".into())],
            awaiting: vec![AwaitingReport {
                node: "d".into(),
                waits_for: json!("external_event"),
                wake_up_at: None,
            }],
            errors: vec![ErrorReport {
                node_id: "c".into(),
                message: "boom <script>".into(),
                timestamp: "2026-01-01T00:00:00Z".into(),
            }],
            last_updated: None,
            updated_secs_ago: None,
            started_at: None,
        };
        let html = run_view(&report);
        for (id, state) in [
            ("a", "done"),
            ("b", "running"),
            ("c", "failed"),
            ("d", "awaiting"),
            ("e", "not-reached"),
        ] {
            let g =
                format!("<g class=\"graph-node\" data-node=\"{id}\" data-state=\"{state}\"><rect");
            assert!(html.contains(&g), "{id}: {html}");
            assert!(html.contains(&format!("fill=\"{}\"/>", state_colour(state))));
        }
        assert!(html.contains("<form class=\"resume\" data-node=\"d\""));
        assert!(html.contains("boom &lt;script&gt;"), "errors are escaped");
        assert!(html.contains("r&lt;1&gt;"), "the run id is escaped");
        assert!(
            !html.contains("<script>setTimeout"),
            "a finished run does not reload"
        );
        assert_eq!(html.matches("<line ").count(), 1);
        assert!(html.contains(">ok</text>"), "edge labels are drawn");
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
