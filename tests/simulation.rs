//! The seeded fault simulation of the distributed core (see `tests/sim/mod.rs`): thousands of
//! schedules, each a seed that picks the workload and every fault, checked against the same
//! blueprints run without faults.
//!
//! Environment:
//! - `SIM_SEED=n`: run only seed `n` (reproduces a failure exactly);
//! - `SIM_SCHEDULES=n`: how many seeds (default [`DEFAULT_SCHEDULES`]; raise it for a soak);
//! - `SIM_FIRST_SEED=n`: the first seed (default 1);
//! - `SIM_FAULTS=a,b,..`: the fault classes (names as in `Fault::name`, or `all`), instead of
//!   [`ENABLED`];
//! - `SIM_KEEP_GOING=1`: print every failing seed, fail at the end;
//! - `SIM_CHECK_REPLAY=1`: run every seed twice and compare the outcomes' fingerprints;
//! - `SIM_TRACE=1`: log the core's tracing output (use with `SIM_SEED`);
//! - `SIM_DEBUG=1`: print each outcome's digest (counters and normalised contexts);
//! - `SIM_RATE=p`: the fault probability per port call (default [`RATE`]).

mod distributed_common;
mod sim;

use sim::faults::{Fault, FaultPlan};
use sim::{Workload, references, simulate};

/// The fault classes CI runs with: all of them. Before the core's fixes, these classes found
/// (seeds at 8 %, reproducible on the commit before the fixes):
/// - `CallerCrash` (seed 82): a resume whose caller died after its commit was refused on
///   retry and its successors were never sent (invariant 2, idempotent redelivery);
/// - `ErrorBefore` (seeds 95, 43, 157, 46): a failed send after a wake-up's or a resume's
///   commit stranded the run (invariant 4, completion); a retried resume was refused; a
///   fan-out whose sends kept failing was poisoned and its run failed (transient errors must
///   never fail a run); a lease renewal that failed once was never retried (invariant 5);
/// - `ErrorAfter` (seeds 18, 87, 91): the same with answers lost after the effect;
/// - `StaleReads` (seeds 2, 92, 104): a job a lagging read did not know yet was deleted, a
///   sleeping run whose wake-up was deleted stayed `awaiting` for good, a resume was refused
///   on a stale read (invariant 2 and 6);
/// - `EagerReconciler` (seed 7): work waiting out its `retryDelay` was re-sent as attempt 1,
///   a second retry chain (invariant 3, activation-driven scheduling).
const ENABLED: &[Fault] = &[
    Fault::Reorder,
    Fault::DelayedVisibility,
    Fault::CoordinationRestart,
    Fault::Crash,
    Fault::Duplicate,
    Fault::LeaseExpiry,
    Fault::CallerCrash,
    Fault::ErrorBefore,
    Fault::ErrorAfter,
    Fault::StaleReads,
    Fault::EagerReconciler,
];

/// Fault probability per port call (and per chaos tick for crashes, lease expiries and
/// coordination restarts).
const RATE: f64 = 0.08;

/// Schedules per CI run.
const DEFAULT_SCHEDULES: u64 = 800;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
    )
}

fn plan() -> FaultPlan {
    let rate = std::env::var("SIM_RATE")
        .ok()
        .map(|r| r.parse::<f64>().unwrap_or_else(|_| panic!("SIM_RATE={r}")))
        .unwrap_or(RATE);
    match std::env::var("SIM_FAULTS") {
        Ok(names) if names.trim() == "all" => FaultPlan::of(&Fault::ALL, rate),
        Ok(names) => {
            let faults: Vec<Fault> = names
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(|n| Fault::parse(n).unwrap_or_else(|| panic!("unknown fault class {n}")))
                .collect();
            FaultPlan::of(&faults, rate)
        }
        Err(_) => FaultPlan::of(ENABLED, rate),
    }
}

#[test]
fn seeded_fault_schedules_end_as_they_would_without_faults() {
    if std::env::var("SIM_TRACE").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    }
    let plan = plan();
    let references = references();
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("SIM_FIRST_SEED").unwrap_or(1);
            let n = env_u64("SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
            (first..first + n).collect()
        }
    };
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok();
    let check_replay = std::env::var("SIM_CHECK_REPLAY").is_ok();
    let mut replay_mismatches = Vec::new();
    let mut failures = 0;
    let mut calls = 0;
    let mut injected = 0;
    let mut settle_max = std::time::Duration::ZERO;
    for &seed in &seeds {
        let workload = Workload::of(seed);
        let outcome = simulate(&workload, &plan, Some(&references));
        if check_replay {
            let again = simulate(&workload, &plan, Some(&references));
            if again.fingerprint != outcome.fingerprint {
                replay_mismatches.push(seed);
            }
        }
        calls += outcome.injected.calls;
        injected += outcome.injected.by_class.values().sum::<u64>();
        settle_max = settle_max.max(outcome.settled_after);
        if !outcome.violations.is_empty() && keep_going {
            failures += 1;
            println!(
                "seed {seed} {:?}: {}",
                workload.runs,
                outcome
                    .violations
                    .join(" | ")
                    .chars()
                    .take(600)
                    .collect::<String>()
            );
            continue;
        }
        if !outcome.violations.is_empty() {
            let again = simulate(&workload, &plan, Some(&references));
            panic!(
                "seed {seed} broke invariants (faults: {}, rate {}; workload {:?} on {} \
                 workers; injected {:?}).\nReproduce: SIM_SEED={seed} SIM_FAULTS={} cargo \
                 test --test simulation\nRe-run of the seed: {}\n- {}",
                plan.names(),
                plan.rate,
                workload.runs,
                workload.workers,
                outcome.injected.by_class,
                plan.names(),
                if again.fingerprint == outcome.fingerprint {
                    "identical (deterministic)"
                } else {
                    "DIFFERENT (nondeterminism)"
                },
                outcome.violations.join("\n- ")
            );
        }
    }
    println!(
        "{} schedules, faults {} at {}: {calls} faultable port calls, {injected} faults \
         injected; slowest settling {settle_max:?} (simulated)",
        seeds.len(),
        plan.names(),
        plan.rate
    );
    assert!(
        replay_mismatches.is_empty(),
        "seeds that did not replay identically: {replay_mismatches:?}"
    );
    assert_eq!(failures, 0, "{failures} schedules failed (SIM_KEEP_GOING)");
}

#[test]
fn a_seed_replays_exactly() {
    let plan = FaultPlan::of(ENABLED, RATE);
    for seed in [3, 17, 42] {
        let workload = Workload::of(seed);
        let first = simulate(&workload, &plan, None);
        let second = simulate(&workload, &plan, None);
        assert_eq!(
            first.fingerprint, second.fingerprint,
            "seed {seed} ({:?}) did not replay identically",
            workload.runs
        );
    }
}
