//! Figure 1 of issue 6: `plan` on generated estates of 500, 5,000 and 20,000
//! Classic groups × 100 grants (20% cross references), 10 instances per
//! group, one target VPC, discovery on every group; 5% of the groups have
//! 150 grants, beyond the VPC quota of 100, so their mirrors spill into an
//! overflow group (issue 15). The snapshot is observed once from the
//! in-process emulator, outside the timed loop.
//!
//! - `plan/cold/N`: nothing mirrored yet; the plan creates everything.
//! - `plan/steady/N`: after `apply` converged; the plan is empty.
//! - `plan/cold-expand/N`, `plan/steady-expand/N`: the same with 0.5% of
//!   the groups unmanaged (`BENCH_UNMANAGED` to change it) and
//!   `unmanaged_references = "expand"`: the references to them become
//!   prefix lists of their members, which weigh their max entries, so the
//!   mirrors of the sources referencing one spill into overflow groups too.
//!
//! The default sizes are 500 and 5,000; 20,000 (a cold plan takes seconds
//! there, so ten samples take minutes) is opt-in:
//! `BENCH_GROUPS=20000 cargo bench --bench planner`.

use std::hint::black_box;
use std::time::Duration;

use classiclink_mirror::plan::{Memory, plan};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod support;

fn planner(c: &mut Criterion) {
    let mut bench = c.benchmark_group("plan");
    bench.sample_size(10).warm_up_time(Duration::from_secs(1));
    // `cargo test --all-targets` (CI) runs this without `--bench`, each
    // benchmark once, in a debug build: a smoke test on a small estate.
    let default: &[usize] = if std::env::args().any(|a| a == "--bench") { &[500, 5_000] } else { &[50] };
    let variants = [
        ("", support::config(), support::spec as fn(usize) -> _),
        ("-expand", support::expanding_config(), support::expanding_spec),
    ];
    for groups in support::sizes(default) {
        for (suffix, config, spec) in &variants {
            let runtime = support::runtime();
            let emu = support::emulator(&runtime, &spec(groups));
            let cold = runtime.block_on(support::snapshot(&emu, config));
            bench.throughput(Throughput::Elements(groups as u64));
            bench.measurement_time(Duration::from_secs(if groups >= 5_000 { 10 } else { 3 }));
            bench.bench_with_input(BenchmarkId::new(format!("cold{suffix}"), groups), &cold, |b, snapshot| {
                b.iter(|| plan(config, black_box(snapshot), &Memory::default(), support::now()));
            });
            drop(cold);

            runtime.block_on(support::converge(&emu, config));
            let steady = runtime.block_on(support::snapshot(&emu, config));
            let (check, _) = plan(config, &steady, &Memory::default(), support::now());
            assert!(check.is_converged(), "the converged estate still plans {} actions", check.actions.len());
            if !suffix.is_empty() {
                assert!(!steady.expansion_lists.is_empty(), "the expanding estate has expansion lists");
            }
            bench.bench_with_input(BenchmarkId::new(format!("steady{suffix}"), groups), &steady, |b, snapshot| {
                b.iter(|| plan(config, black_box(snapshot), &Memory::default(), support::now()));
            });
        }
    }
    bench.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
