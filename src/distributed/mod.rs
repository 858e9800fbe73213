//! The backend-agnostic distributed core: ports (job queue, run store, coordination store),
//! their in-memory implementations, the worker logic and the client API.
//!
//! - [`ports`]: the `JobQueue`, `RunStore` and `CoordinationStore` traits (shaped for Azure
//!   Queue Storage, Cosmos DB and Redis) and their data types;
//! - [`memory`]: thread-safe in-memory backends (leases, receipts, dequeue counts, delays and
//!   TTLs on tokio time, ETag-guarded commits);
//! - [`job`]: the queue message (base64 JSON `{runId, blueprintId, nodeId, ...}`);
//! - [`state`]: the run document (context + bookkeeping) and [`transition`]: the pure
//!   changes one commit makes (joins, outstanding work, awaiting, fallback, status);
//! - the job path, one module per step, in order: [`job`] (decode), load, [`classify`] (the
//!   one classification the worker, the client's resume and the reconciler share),
//!   [`execute`] (one attempt, or a sub-run resume), [`commit`] (one conditional write),
//!   [`follow_ups`] (enqueue fired work and wake-ups) and [`publish`] (the status item);
//!   [`worker`] strings them together (`handle_message`);
//! - [`polling`]: the worker loop (batches, backoff, lease renewal, heartbeat, graceful
//!   shutdown, SIGINT/SIGTERM; deliveries whose lease lapsed under a running job are recorded
//!   so they do not count toward the poison limit: the `lapses` module); [`client`]: start,
//!   status, wait, cancel, resume, reconcile;
//!   [`reconcile`]: the stalled-run scanner; [`events`]: subscribable events; [`core`]: the
//!   backends and what everything shares.
//!
//! # Guarantees
//! - **One atomic commit per job**: output (`_outputs.<id>` and `<id>`), action, taken edges,
//!   `_inputs.<target>`, the node's context writes, join arrivals, outstanding work, the
//!   awaiting record and the run status are ONE ETag-guarded write of the run document; a
//!   conflict reloads and re-applies the transition (never re-runs the node).
//!   The one exception is a batch worker that succeeds: it stores its result beside the
//!   run document and the last worker to arrive folds the whole batch into it in ONE
//!   commit (the `batch_fold` module), so a batch of N workers costs a few run document
//!   writes instead of N rewrites of a document that grows with every worker.
//! - **Idempotent redelivery**: a commit record keyed by (node, activation) stores output,
//!   action, taken edges and the work it fired; a redelivered job replays the follow-ups
//!   (enqueue fired work, publish status). Successors are enqueued only after the commit.
//! - **Joins** count DISTINCT predecessors (a set in the run document, updated in the same
//!   commit, so there is no window between "output stored" and "arrival counted"). `all`
//!   fires when every distinct static predecessor (loop controllers and back edges excluded) and
//!   every batch worker registered for it has arrived; `any` fires once per arming. Loop
//!   controllers re-arm their body (fresh activation ids, so bodies run again).
//! - **Policy for untaken branches and failures**: a predecessor that did not take its edge
//!   never arrives, so an `all` join behind an exclusive branch does not fire and the run
//!   ends `stalled` once nothing else is outstanding (same as in-process; use `any` for
//!   exclusive branches). A node that fails on its last attempt without a fallback fails the
//!   run at once (sticky); its siblings' later jobs are dropped. A fallback node runs as its
//!   own job, inherits the failing node's edges and counts as the failing node for joins.
//! - **Completion** is decided by the outstanding-work set: `completed` when nothing is
//!   outstanding or awaiting; `completed`, `failed`, `cancelled` and `stalled` are sticky in
//!   the run document and in the status item (compare-and-set, ordered by revision).
//! - **Permanent errors are not retried**: a commit that would make the run document larger
//!   than the store accepts (Cosmos: 2 MB) fails the run with a reason naming the node and
//!   the size, and a run document that cannot be read (e.g. bookkeeping edited by hand) or
//!   any other malformed request fails it with that reason: either way on the job's first
//!   delivery, the message going to the poison queue with the same reason. A document that
//!   cannot record the failure is left as it is and its status item alone is marked
//!   `failed` (sticky), so clients and the reconciler see the reason.
//! - **Versions and blueprints**: a run pins `blueprintVersion` at start (a run without one
//!   adopts the worker's version in its first commit); a job for another version is deferred
//!   for a worker that has it (a delayed copy with a growing delay, not counted toward
//!   `max_dequeue`) for up to `version_window` (default 1 h, a slow rolling deploy), then
//!   poisoned and its run failed with the reason. A job naming a blueprint the worker does
//!   not know, or another blueprint than its run's, is poisoned and its run failed at once.
//! - **What real services do**: a lost answer after the effect is recognised (a commit that
//!   conflicts with itself replays; every follow-up is safe to redo); a read older than the
//!   commit that scheduled a job (jobs carry that revision, `rev`) releases the job for a
//!   short while instead of dropping it; a wake-up or resume whose commit exists replays its
//!   follow-ups whatever its kind; a lost lease (stale receipt) cancels the job, which then
//!   records nothing and leaves the message to its next delivery; transient errors
//!   (transport, timeout, 429, 5xx) are retried with backoff in place, then by redelivery,
//!   and never poison a message or fail a run; work waiting out a `retryDelay` keeps its
//!   attempt and due time in the run document, so the reconciler re-sends only lost work that
//!   is due, with its attempt; delays over 7 days are chained for every job kind.
//! - **Idempotent client calls**: `start_run_with_id` for an existing id answers without a
//!   second run (and writes a missing status item); a resume carries an idempotency key
//!   (default: node + action + output), so a retried resume answers as the first call did
//!   and a different resume of the same node is refused with `Conflict`.
//!
//! The Cosmos implementation stores the run document as one item: the context keys
//! top-level (TypeScript-compatible) plus the bookkeeping under `_flowcraft`. The
//! coordination store is used for the reconciler's per-run cooldown and the
//! `flowcraft:blueprint:<run>` key; joins do not need it because they live in the run
//! document's atomic commit.

mod batch_fold;
pub mod classify;
pub mod client;
pub mod commit;
pub mod core;
pub mod events;
pub mod execute;
pub mod follow_ups;
pub mod job;
mod lapses;
pub mod memory;
pub mod metered;
pub mod polling;
pub mod ports;
pub mod publish;
pub mod reconcile;
mod run_cache;
pub mod state;
pub mod transition;
pub mod worker;
