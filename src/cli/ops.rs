//! What the run-management commands and the HTTP API share: one [`Ops`] facade over the
//! distributed client (every `Client` call of these commands is here), the run report that
//! `status`, `GET /runs/{id}` and the web run view show, and the run listing.

use crate::Error;
use crate::adapter::CosmosDbContext;
use crate::adapter::cosmos_listing::{MAX_LISTED, sort_newest_first};
use crate::distributed::client::Client;
use crate::distributed::core::{Backends, to_result};
use crate::distributed::ports::{RunPhase, StatusRecord};
use crate::distributed::state::{RunState, WorkItem};
use crate::flow::blueprint::Blueprint;
use crate::flow::execute::BlueprintRegistry;
use crate::flow::run_view::{NodeState, node_states};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Every status a run can have, for listings without a filter.
pub const ALL_PHASES: [RunPhase; 6] = [
    RunPhase::Running,
    RunPhase::Awaiting,
    RunPhase::Completed,
    RunPhase::Failed,
    RunPhase::Cancelled,
    RunPhase::Stalled,
];

/// Parses a status name (`running`, `awaiting`, `completed`, `failed`, `cancelled`,
/// `stalled`).
pub fn parse_phase(name: &str) -> Result<RunPhase, String> {
    serde_json::from_value(Value::String(name.trim().to_ascii_lowercase())).map_err(|_| {
        format!(
            "unknown status '{name}'; use running, awaiting, completed, failed, cancelled or stalled"
        )
    })
}

/// One node of a run report.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node id.
    pub id: String,
    /// What the node runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// `done`, `failed`, `awaiting`, `running` (queued or executing) or `not-reached`.
    pub state: &'static str,
    /// Distance from a start node (for the graph layout).
    pub depth: usize,
}

/// One awaiting node and what it waits for.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwaitingReport {
    /// The node id.
    pub node: String,
    /// What it waits for (`external_event`, `timer`, `subflow`, ...).
    pub waits_for: Value,
    /// When a timer wakes it up, if it sleeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_up_at: Option<String>,
}

/// One recorded failure.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// The node that failed.
    pub node_id: String,
    /// Its message.
    pub message: String,
    /// When (RFC 3339).
    pub timestamp: String,
}

/// Everything `status` shows about one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// The blueprint it runs.
    pub blueprint_id: Option<String>,
    /// `running`, `awaiting`, `completed`, `failed`, `cancelled` or `stalled`.
    pub status: &'static str,
    /// Why it finished (failed, cancelled, stalled), when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Nodes that produced an output.
    pub nodes_done: usize,
    /// Nodes queued or executing.
    pub nodes_pending: usize,
    /// Every node, in blueprint order (or as the run knows them without the blueprint).
    pub nodes: Vec<NodeReport>,
    /// The blueprint's edges `(source, target, label)`, for the graph.
    pub edges: Vec<(String, String, String)>,
    /// Awaiting nodes and what they wait for.
    pub awaiting: Vec<AwaitingReport>,
    /// Recorded failures.
    pub errors: Vec<ErrorReport>,
    /// Last change or heartbeat of the status item (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Seconds since that last update, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_secs_ago: Option<i64>,
    /// When the run was created (RFC 3339); `null` when unknown (a run started by the
    /// TypeScript client or by an older version records none).
    pub started_at: Option<String>,
}

/// One row of `runs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    /// The run id.
    pub run_id: String,
    /// Its status.
    pub status: &'static str,
    /// Its blueprint.
    pub blueprint_id: Option<String>,
    /// Last change (RFC 3339).
    pub last_updated: String,
    /// Last change, epoch seconds.
    #[serde(skip)]
    pub last_updated_epoch: i64,
    /// When the run was created (RFC 3339); `null` when unknown (see
    /// [`RunReport::started_at`]).
    pub started_at: Option<String>,
}

impl From<&StatusRecord> for RunRow {
    fn from(record: &StatusRecord) -> Self {
        RunRow {
            run_id: record.run_id.clone(),
            status: record.status.as_str(),
            blueprint_id: record.blueprint_id.clone(),
            last_updated: epoch_to_rfc3339(record.last_updated),
            last_updated_epoch: record.last_updated,
            started_at: record.started_at.map(epoch_to_rfc3339),
        }
    }
}

/// What `status` and `runs` show for a start time the status item does not record.
pub const UNKNOWN: &str = "unknown";

fn epoch_to_rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// Run management over a set of backends and the blueprints the fleet runs.
#[derive(Debug, Clone)]
pub struct Ops {
    backends: Backends,
    blueprints: Arc<BlueprintRegistry>,
    client: Client,
    cosmos: Option<Arc<CosmosDbContext>>,
}

impl Ops {
    /// Operations over `backends`; `blueprints` are needed to start and resume runs and to
    /// draw a run's whole graph (without them a report lists the nodes the run touched).
    pub fn new(backends: Backends, blueprints: Arc<BlueprintRegistry>) -> Self {
        let client = Client::new(backends.clone(), blueprints.clone());
        Ops {
            backends,
            blueprints,
            client,
            cosmos: None,
        }
    }

    /// Lists runs with `store`'s ordered query (newest first, served by the status index)
    /// instead of paging every matching status item and sorting here. `store` must be the
    /// Cosmos store behind `backends`.
    pub fn with_cosmos_listing(mut self, store: Arc<CosmosDbContext>) -> Self {
        self.cosmos = Some(store);
        self
    }

    /// The blueprints this facade knows.
    pub fn blueprints(&self) -> &Arc<BlueprintRegistry> {
        &self.blueprints
    }

    /// Starts a run; returns its id.
    pub async fn start(
        &self,
        blueprint_id: &str,
        input: Map<String, Value>,
    ) -> Result<String, Error> {
        self.client.start_run(blueprint_id, input).await
    }

    /// Resumes an awaiting node; returns the work it made ready.
    pub async fn resume(
        &self,
        run_id: &str,
        node: Option<&str>,
        action: Option<String>,
        output: Option<Value>,
    ) -> Result<Vec<WorkItem>, Error> {
        self.client
            .resume_with_action(run_id, node, action, output)
            .await
    }

    /// Cancels a run; false when it had already finished. The reason is logged (the core
    /// records its own).
    pub async fn cancel(&self, run_id: &str, reason: Option<&str>) -> Result<bool, Error> {
        let changed = self.client.cancel(run_id).await?;
        if changed {
            tracing::info!(run_id, reason = reason.unwrap_or(""), "run cancelled");
        }
        Ok(changed)
    }

    /// Re-enqueues a run's recorded outstanding work.
    pub async fn reconcile(&self, run_id: &str) -> Result<Vec<WorkItem>, Error> {
        self.client.reconcile(run_id).await
    }

    /// Runs whose status is in `phases` and whose last update is at or after `since` (epoch
    /// seconds) and before `before`, newest first, at most `limit`: with the Cosmos listing
    /// query when set ([`Ops::with_cosmos_listing`]) and the service serves it, else by
    /// paging the stalled-run query (up to 10,000 runs) and sorting here.
    pub async fn list(
        &self,
        phases: &[RunPhase],
        since: Option<i64>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RunRow>, Error> {
        let before = before.unwrap_or_else(|| chrono::Utc::now().timestamp() + 86_400);
        let limit = limit.max(1);
        if let Some(store) = &self.cosmos
            && let Some(records) = store.list_recent(phases, since, before, limit).await?
        {
            return Ok(records.iter().map(RunRow::from).collect());
        }
        let mut records = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .backends
                .runs
                .list_stalled(phases, before, 200, continuation.as_deref())
                .await?;
            records.extend(
                page.items
                    .into_iter()
                    .filter(|r| since.is_none_or(|s| r.last_updated >= s)),
            );
            match page.continuation {
                Some(next) if records.len() < MAX_LISTED => continuation = Some(next),
                _ => break,
            }
        }
        sort_newest_first(&mut records);
        records.truncate(limit);
        Ok(records.iter().map(RunRow::from).collect())
    }

    /// The report of one run; `None` when it does not exist.
    pub async fn report(&self, run_id: &str) -> Result<Option<RunReport>, Error> {
        let Some(loaded) = self.backends.runs.load(run_id).await? else {
            return Ok(None);
        };
        let status = self.backends.runs.status(run_id).await?.map(|v| v.value);
        let blueprint = loaded
            .value
            .blueprint_id()
            .and_then(|id| self.blueprints.get(id));
        Ok(Some(build_report(
            &loaded.value,
            blueprint.as_deref(),
            status.as_ref(),
        )))
    }
}

/// Builds the report of `state` (the graph from `blueprint` when known).
pub fn build_report(
    state: &RunState,
    blueprint: Option<&Blueprint>,
    status: Option<&StatusRecord>,
) -> RunReport {
    let result = to_result(state);
    let pending: BTreeSet<&str> = state
        .book
        .outstanding
        .values()
        .map(|w| w.node.as_str())
        .collect();
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    match blueprint {
        Some(bp) => {
            let states = node_states(bp, &result);
            let depths = depths(bp);
            for node in bp.nodes() {
                let state = states
                    .get(&node.id)
                    .copied()
                    .unwrap_or(NodeState::NotReached);
                nodes.push(NodeReport {
                    id: node.id.clone(),
                    uses: Some(node.uses.clone()),
                    state: shown_state(state, pending.contains(node.id.as_str())),
                    depth: depths.get(node.id.as_str()).copied().unwrap_or(0),
                });
            }
            for edge in bp.edges() {
                edges.push((
                    edge.source.clone(),
                    edge.target.clone(),
                    edge.action.clone().unwrap_or_default(),
                ));
            }
        }
        None => {
            let mut known: BTreeMap<String, &'static str> = BTreeMap::new();
            for commit in state.book.commits.values() {
                known.insert(commit.node.clone(), "done");
            }
            for error in &result.errors {
                known.insert(error.node_id.clone(), "failed");
            }
            for node in &pending {
                known.insert((*node).to_string(), "running");
            }
            for node in state.book.awaiting.keys() {
                known.insert(node.clone(), "awaiting");
            }
            nodes = known
                .into_iter()
                .map(|(id, state)| NodeReport {
                    id,
                    uses: None,
                    state,
                    depth: 0,
                })
                .collect();
        }
    }
    let awaiting = state
        .book
        .awaiting
        .iter()
        .map(|(node, record)| AwaitingReport {
            node: node.clone(),
            waits_for: serde_json::to_value(record.details.reason).unwrap_or(Value::Null),
            wake_up_at: record
                .details
                .wake_up_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        })
        .collect();
    let errors: Vec<ErrorReport> = result
        .errors
        .iter()
        .map(|e| ErrorReport {
            node_id: e.node_id.clone(),
            message: e.message.clone(),
            timestamp: e.timestamp.clone(),
        })
        .collect();
    let last_updated = status
        .map(|s| s.last_updated)
        .or((state.book.status_touched_at > 0).then_some(state.book.status_touched_at));
    RunReport {
        run_id: state.run_id.clone(),
        blueprint_id: state.blueprint_id().map(str::to_string),
        status: state.book.status.as_str(),
        reason: state.book.reason.clone(),
        nodes_done: nodes.iter().filter(|n| n.state == "done").count(),
        nodes_pending: pending.len(),
        nodes,
        edges,
        awaiting,
        errors,
        last_updated: last_updated.map(epoch_to_rfc3339),
        updated_secs_ago: last_updated.map(|t| (chrono::Utc::now().timestamp() - t).max(0)),
        started_at: status.and_then(|s| s.started_at).map(epoch_to_rfc3339),
    }
}

/// The state shown for a node: a node that is queued or executing is `running`.
fn shown_state(state: NodeState, pending: bool) -> &'static str {
    match state {
        NodeState::NotReached if pending => "running",
        other => other.as_str(),
    }
}

/// Each node's breadth-first distance from the start nodes (unreachable nodes: one past the
/// deepest).
fn depths(blueprint: &Blueprint) -> BTreeMap<&str, usize> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    let mut queue: VecDeque<&str> = VecDeque::new();
    for start in blueprint.start_nodes() {
        depth.insert(start.as_str(), 0);
        queue.push_back(start.as_str());
    }
    while let Some(node) = queue.pop_front() {
        let d = depth[node];
        for edge in blueprint.edges().iter().filter(|e| e.source == node) {
            if !depth.contains_key(edge.target.as_str()) {
                depth.insert(edge.target.as_str(), d + 1);
                queue.push_back(edge.target.as_str());
            }
        }
    }
    let deepest = depth.values().copied().max().map_or(0, |d| d + 1);
    for node in blueprint.nodes() {
        depth.entry(node.id.as_str()).or_insert(deepest);
    }
    depth
}

/// What an awaiting node waits for, in words.
pub fn waits_for_text(awaiting: &AwaitingReport) -> String {
    let what = match awaiting.waits_for.as_str() {
        Some("external_event") => "a resume (external event)".to_string(),
        Some("timer") => "a timer".to_string(),
        Some("user_pause") => "an operator's resume (paused)".to_string(),
        Some(other) => other.to_string(),
        None => "an event".to_string(),
    };
    match &awaiting.wake_up_at {
        Some(at) => format!("{what} until {at}"),
        None => what,
    }
}

/// The report as text for a terminal.
pub fn report_text(report: &RunReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "run        {}", report.run_id);
    let _ = writeln!(
        out,
        "blueprint  {}",
        report.blueprint_id.as_deref().unwrap_or("?")
    );
    let _ = write!(out, "status     {}", report.status);
    if let Some(reason) = &report.reason {
        let _ = write!(out, " ({reason})");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "nodes      {} done, {} pending, {} total",
        report.nodes_done,
        report.nodes_pending,
        report.nodes.len()
    );
    let _ = writeln!(
        out,
        "started    {}",
        report.started_at.as_deref().unwrap_or(UNKNOWN)
    );
    if let Some(t) = &report.last_updated {
        let ago = report
            .updated_secs_ago
            .map(|s| format!(" ({s} s ago)"))
            .unwrap_or_default();
        let _ = writeln!(out, "updated    {t}{ago}");
    }
    for node in &report.nodes {
        let _ = writeln!(
            out,
            "  {:<12} {}{}",
            node.state,
            node.id,
            node.uses
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        );
    }
    for a in &report.awaiting {
        let _ = writeln!(out, "awaiting   {} waits for {}", a.node, waits_for_text(a));
    }
    for e in &report.errors {
        let _ = writeln!(
            out,
            "error      {} at {}: {}",
            e.node_id, e.timestamp, e.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::state::Bookkeeping;

    fn state() -> RunState {
        RunState {
            run_id: "r1".into(),
            context: Map::new(),
            book: Bookkeeping::default(),
        }
    }

    #[test]
    fn the_start_time_is_shown_or_unknown() {
        let mut status = StatusRecord::running("r1", 1_700_000_100);
        status.started_at = Some(1_700_000_000);
        let report = build_report(&state(), None, Some(&status));
        assert_eq!(report.started_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(report_text(&report).contains("started    2023-11-14T22:13:20Z\n"));
        let row = RunRow::from(&status);
        assert_eq!(row.started_at, report.started_at);

        // A status item written by the TypeScript client (or none at all) has no start time.
        let typescript = StatusRecord::running("r1", 1_700_000_100);
        let report = build_report(&state(), None, Some(&typescript));
        assert_eq!(report.started_at, None);
        assert!(report_text(&report).contains("started    unknown\n"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["startedAt"], Value::Null);
        assert!(build_report(&state(), None, None).started_at.is_none());
    }
}
