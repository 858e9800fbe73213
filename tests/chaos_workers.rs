//! Killed workers on the local stack: a mixed workload (chains, fan-outs into `all` and
//! `any` joins, retries with delay, a fallback, sleep, wait + resume, a subflow, a batch, a
//! loop) runs on 3 `flowcraft-azure worker` processes while a seeded random one of them is
//! SIGKILLed every 2 to 5 seconds and restarted. Every run must end as its blueprint implies
//! (outputs and join outputs included), every status item must agree with its run, and the
//! queue and the poison queue must drain. Prints the seed, the kills and the times.
//! Switched on by `FLOWCRAFT_EMULATORS=1`; `CHAOS_SOAK=1` runs a larger workload,
//! `CHAOS_SEED=<n>` replays a seed.

mod chaos_common;
mod support;

use chaos_common::{Fleet, Workload, drive, print_runs, soak, verify};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_survives_workers_killed_every_few_seconds() {
    if !chaos_common::emulators("chaos_workers") {
        return;
    }
    let seed = chaos_common::seed();
    eprintln!("chaos_workers: seed {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let workload = Workload::new(false).await;
    let mut fleet = Fleet::new(&workload.dir, &[]);
    let (client, backends) = fleet.client().await;
    fleet.start(3);
    let deadline = Duration::from_secs(if soak() { 900 } else { 150 });
    let spread = Duration::from_secs(if soak() { 60 } else { 20 });
    let mut next_kill = Instant::now() + Duration::from_millis(rng.u64(2000..=5000));
    let mut kills: Vec<(f64, usize)> = Vec::new();
    let began = Instant::now();
    let (runs, total) = drive(&client, &workload, spread, deadline, || {
        if Instant::now() >= next_kill {
            let victim = rng.usize(..fleet.len());
            fleet.kill_and_restart(victim);
            kills.push((began.elapsed().as_secs_f64(), victim));
            next_kill = Instant::now() + Duration::from_millis(rng.u64(2000..=5000));
        }
    })
    .await;
    let last_kill = kills.last().map_or(0.0, |k| k.0);
    eprintln!(
        "chaos_workers: {} SIGKILLs (+ restarts) at {:?}",
        kills.len(),
        kills
            .iter()
            .map(|(t, w)| format!("{t:.1}s:w{w}"))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "chaos_workers: last run finished {:.1} s after the last kill",
        (total - last_kill).max(0.0)
    );
    // Per kill: how long until the last run that was in flight at that moment finished.
    let recover: Vec<String> = kills
        .iter()
        .map(|(t, _)| {
            let ends = runs
                .iter()
                .filter_map(|r| r.seconds.map(|s| (r.started, r.started + s)))
                .filter(|(start, end)| start <= t && end > t);
            let (n, last) = ends.fold((0, *t), |(n, last), (_, end)| (n + 1, f64::max(last, end)));
            format!(
                "{t:.1}s: {n} runs in flight, all done {:.1}s later",
                last - t
            )
        })
        .collect();
    eprintln!("chaos_workers: recovery per kill: {recover:#?}");
    eprintln!(
        "chaos_workers: worker log lines by message (warnings, errors, job-path info) {:#?}",
        fleet.log_summary()
    );
    print_runs("chaos_workers", &runs, total);
    assert!(
        !kills.is_empty(),
        "the workload ended before the first kill"
    );
    verify(&client, &backends, &fleet, &runs).await;
}
