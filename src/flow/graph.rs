//! The graph index of a blueprint, computed once at load: edge lists per node, distinct
//! predecessors and successors, fallback relations, start and terminal nodes, loop bodies and
//! cycle detection. Pure data; the owning [`Blueprint`](super::blueprint::Blueprint) is
//! immutable.

use super::blueprint::WorkflowBlueprint;
use std::collections::{HashMap, VecDeque};

/// The `uses` key of the loop controller built-in.
pub const LOOP_CONTROLLER: &str = "loop-controller";
/// The action on a loop controller's edge back into its body.
pub const CONTINUE_ACTION: &str = "continue";

/// Adjacency and derived facts, indexed by node position in `nodes`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub(crate) index: HashMap<String, usize>,
    pub(crate) outgoing: Vec<Vec<usize>>,
    pub(crate) incoming: Vec<Vec<usize>>,
    pub(crate) predecessors: Vec<Vec<String>>,
    pub(crate) successors: Vec<Vec<String>>,
    pub(crate) fallback_sources: Vec<Vec<String>>,
    pub(crate) fallback_only: Vec<bool>,
    pub(crate) start: Vec<String>,
    pub(crate) terminal: Vec<String>,
    pub(crate) loop_bodies: Vec<Vec<String>>,
}

/// A cycle found by [`Graph::find_cycle`]: its nodes in order and the edge that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub(crate) nodes: Vec<usize>,
    pub(crate) closing_edge: usize,
}

impl Graph {
    /// Builds the index. `index` maps every node id to its position (ids are unique) and every
    /// edge endpoint and fallback is known: the caller validated both. `entry_points` are the
    /// metadata `cycleEntryPoints`, used only when no node qualifies as a start node.
    pub(crate) fn build(
        def: &WorkflowBlueprint,
        index: HashMap<String, usize>,
        entry_points: &[String],
    ) -> Graph {
        let n = def.nodes.len();
        let mut outgoing = vec![Vec::new(); n];
        let mut incoming = vec![Vec::new(); n];
        let mut predecessors: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut successors: Vec<Vec<String>> = vec![Vec::new(); n];
        for (e, edge) in def.edges.iter().enumerate() {
            let (Some(&s), Some(&t)) = (index.get(&edge.source), index.get(&edge.target)) else {
                continue;
            };
            push_at(&mut outgoing, s, e);
            push_at(&mut incoming, t, e);
            push_distinct(&mut successors, s, &edge.target);
            push_distinct(&mut predecessors, t, &edge.source);
        }
        let mut fallback_sources: Vec<Vec<String>> = vec![Vec::new(); n];
        for node in &def.nodes {
            if let Some(&f) = node.config.fallback.as_ref().and_then(|f| index.get(f)) {
                push_distinct(&mut fallback_sources, f, &node.id);
            }
        }
        let fallback_only: Vec<bool> = (0..n)
            .map(|i| !fallback_sources[i].is_empty() && incoming[i].is_empty())
            .collect();
        let ids = |pred: &dyn Fn(usize) -> bool| -> Vec<String> {
            def.nodes
                .iter()
                .enumerate()
                .filter(|&(i, _)| pred(i))
                .map(|(_, node)| node.id.clone())
                .collect()
        };
        let mut start = ids(&|i| incoming[i].is_empty() && !fallback_only[i]);
        if start.is_empty() {
            start = cycle_entries(def, &index, &outgoing, &fallback_only, entry_points);
        }
        let terminal = ids(&|i| outgoing[i].is_empty() && !fallback_only[i]);
        let mut graph = Graph {
            index,
            outgoing,
            incoming,
            predecessors,
            successors,
            fallback_sources,
            fallback_only,
            start,
            terminal,
            loop_bodies: vec![Vec::new(); n],
        };
        for (i, node) in def.nodes.iter().enumerate() {
            if node.uses == LOOP_CONTROLLER {
                graph.loop_bodies[i] = graph.compute_loop_body(def, i);
            }
        }
        graph
    }

    /// Position of a node id.
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The nodes on a cycle through `controller`: reachable from its `continue` edges (without
    /// passing the controller) and reaching back to it, in declaration order, plus the
    /// fallback nodes of those body nodes (they stand in for a failed body node).
    fn compute_loop_body(&self, def: &WorkflowBlueprint, controller: usize) -> Vec<String> {
        let n = def.nodes.len();
        let target_of = |e: usize| {
            def.edges
                .get(e)
                .and_then(|edge| self.position(&edge.target))
        };
        let source_of = |e: usize| {
            def.edges
                .get(e)
                .and_then(|edge| self.position(&edge.source))
        };
        let continue_targets = self.outgoing[controller].iter().filter_map(|&e| {
            let edge = def.edges.get(e)?;
            (edge.action.as_deref() == Some(CONTINUE_ACTION))
                .then(|| target_of(e))
                .flatten()
        });
        let forward = reach(n, continue_targets, controller, |v| {
            self.outgoing[v]
                .iter()
                .filter_map(|&e| target_of(e))
                .collect()
        });
        let backward = reach(n, [controller], usize::MAX, |v| {
            self.incoming[v]
                .iter()
                .filter_map(|&e| source_of(e))
                .collect()
        });
        let mut body: Vec<String> = (0..n)
            .filter(|&i| i != controller && forward[i] && backward[i])
            .filter_map(|i| def.nodes.get(i).map(|node| node.id.clone()))
            .collect();
        let fallbacks: Vec<String> = body
            .iter()
            .filter_map(|id| self.position(id).and_then(|i| def.nodes.get(i)))
            .filter_map(|node| node.config.fallback.clone())
            .collect();
        for f in fallbacks {
            if !body.contains(&f) && self.position(&f) != Some(controller) {
                body.push(f);
            }
        }
        body
    }

    /// The predecessors an `all` join at position `target` waits for at run time: its distinct
    /// predecessors minus loop controllers and minus those reachable from the join itself
    /// without passing a loop controller (back edges, e.g. a self-loop).
    pub(crate) fn join_waits(&self, def: &WorkflowBlueprint, target: usize) -> Vec<String> {
        let n = def.nodes.len();
        let is_controller = |i: usize| {
            def.nodes
                .get(i)
                .is_some_and(|node| node.uses == LOOP_CONTROLLER)
        };
        let successors_of = |v: usize| -> Vec<usize> {
            self.outgoing
                .get(v)
                .into_iter()
                .flatten()
                .filter_map(|&e| def.edges.get(e))
                .filter_map(|edge| self.position(&edge.target))
                .collect()
        };
        // The join itself is always expanded; a loop controller reached on the way is not.
        let reachable = reach(n, successors_of(target), usize::MAX, |v| {
            if is_controller(v) {
                Vec::new()
            } else {
                successors_of(v)
            }
        });
        self.predecessors
            .get(target)
            .into_iter()
            .flatten()
            .filter(|p| match self.position(p) {
                Some(i) => reachable.get(i) != Some(&true) && !is_controller(i),
                None => true,
            })
            .cloned()
            .collect()
    }

    /// Finds a cycle among the nodes not `excluded`, as an ordered node list plus the edge
    /// that closes it (iterative depth-first search, so deep graphs cannot overflow the stack).
    pub(crate) fn find_cycle(
        &self,
        def: &WorkflowBlueprint,
        excluded: &dyn Fn(usize) -> bool,
    ) -> Option<Cycle> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        let n = def.nodes.len();
        let mut mark = vec![Mark::New; n];
        for root in 0..n {
            if excluded(root) || mark[root] != Mark::New {
                continue;
            }
            // Stack of (node, position in its outgoing list).
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::OnStack;
            while let Some(&mut (v, ref mut pos)) = stack.last_mut() {
                let Some(&e) = self.outgoing[v].get(*pos) else {
                    mark[v] = Mark::Done;
                    stack.pop();
                    continue;
                };
                *pos += 1;
                let Some(t) = def
                    .edges
                    .get(e)
                    .and_then(|edge| self.position(&edge.target))
                else {
                    continue;
                };
                if excluded(t) {
                    continue;
                }
                match mark[t] {
                    Mark::New => {
                        mark[t] = Mark::OnStack;
                        stack.push((t, 0));
                    }
                    Mark::OnStack => {
                        let from = stack.iter().position(|&(u, _)| u == t).unwrap_or(0);
                        let nodes = stack[from..].iter().map(|&(u, _)| u).collect();
                        return Some(Cycle {
                            nodes,
                            closing_edge: e,
                        });
                    }
                    Mark::Done => {}
                }
            }
        }
        None
    }
}

/// Where a graph without start nodes (every node is on or behind a cycle) is entered: the
/// declared `entry_points`, then, in declaration order, every node that is still not
/// reachable from the entries so far, so each separate cycle gets one entry (as Flowcraft
/// enters each detected cycle).
fn cycle_entries(
    def: &WorkflowBlueprint,
    index: &HashMap<String, usize>,
    outgoing: &[Vec<usize>],
    fallback_only: &[bool],
    entry_points: &[String],
) -> Vec<String> {
    let n = def.nodes.len();
    let mut seen = vec![false; n];
    let mut entries = Vec::new();
    let declared = entry_points.iter().filter_map(|id| index.get(id).copied());
    let rest: Vec<usize> = (0..n)
        .filter(|&i| !fallback_only.get(i).copied().unwrap_or(false))
        .collect();
    for candidate in declared.chain(rest) {
        if seen.get(candidate).copied().unwrap_or(true) {
            continue;
        }
        if let Some(node) = def.nodes.get(candidate) {
            entries.push(node.id.clone());
        }
        // mark everything reachable from the new entry (each node is expanded once overall)
        if let Some(flag) = seen.get_mut(candidate) {
            *flag = true;
        }
        let mut queue = VecDeque::from([candidate]);
        while let Some(v) = queue.pop_front() {
            let targets = outgoing
                .get(v)
                .into_iter()
                .flatten()
                .filter_map(|&e| def.edges.get(e))
                .filter_map(|edge| index.get(&edge.target).copied());
            for t in targets {
                if let Some(flag) = seen.get_mut(t).filter(|f| !**f) {
                    *flag = true;
                    queue.push_back(t);
                }
            }
        }
    }
    entries
}

/// Breadth-first reachability from `starts`, never expanding `barrier`.
fn reach(
    n: usize,
    starts: impl IntoIterator<Item = usize>,
    barrier: usize,
    next: impl Fn(usize) -> Vec<usize>,
) -> Vec<bool> {
    let mut seen = vec![false; n];
    let mut queue = VecDeque::new();
    for s in starts {
        if s < n && !seen[s] {
            seen[s] = true;
            queue.push_back(s);
        }
    }
    while let Some(v) = queue.pop_front() {
        if v == barrier {
            continue;
        }
        for w in next(v) {
            if w < n && !seen[w] {
                seen[w] = true;
                queue.push_back(w);
            }
        }
    }
    seen
}

fn push_at(lists: &mut [Vec<usize>], at: usize, value: usize) {
    if let Some(list) = lists.get_mut(at) {
        list.push(value);
    }
}

fn push_distinct(lists: &mut [Vec<String>], at: usize, value: &str) {
    let list = lists.get_mut(at).filter(|l| !l.iter().any(|v| v == value));
    if let Some(list) = list {
        list.push(value.to_owned());
    }
}
