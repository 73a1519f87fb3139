//! Figure 2 of issue 6: the API economy of a steady-state pass.
//!
//! `cargo run --release --example steady_economy [-- GROUPS]` (default 2,000
//! groups, 10 instances each, 100 grants, one VPC, discovery on every group).
//! Converges with `apply` against the in-process emulator (no throttling),
//! zeroes the counters, runs one `reconcile_once` and prints the calls per
//! operation, against the bound of the issue:
//! ⌈groups/1000⌉ + ⌈instances/1000⌉ + ⌈links/1000⌉ + VPCs + mirror describes.

use classiclink_mirror::plan::Memory;
use classiclink_mirror::reconcile::{execute_options, reconcile_once};
use tokio_util::sync::CancellationToken;

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let groups: usize = std::env::args().nth(1).map_or(2_000, |a| a.parse().expect("usage: steady_economy [GROUPS]"));
    let config = support::config();
    let runtime = support::runtime();
    let emu = support::emulator(&runtime, &support::spec(groups));
    runtime.block_on(support::converge(&emu, &config));
    emu.reset_counters();

    let mut memory = Memory::default();
    let pass = runtime.block_on(reconcile_once(
        &emu,
        &config,
        &mut memory,
        support::now(),
        &execute_options(&config),
        &CancellationToken::new(),
    ));
    assert!(pass.converged(), "the pass after apply still planned {} actions", pass.plan.actions.len());
    let counters = emu.counters();
    let snapshot = &pass.snapshot;
    let (instances, links, vpcs) = (snapshot.instances.len(), snapshot.links.len(), snapshot.vpcs.len());
    let mirrors = snapshot.vpc_groups.values().filter(|g| g.mirrored_from().is_some()).count();
    println!("estate: {groups} groups, {instances} running instances, {links} links, {vpcs} VPC(s), {mirrors} mirrors");
    for (operation, counts) in counters.iter().filter(|(_, c)| c.requests > 0) {
        println!("{operation:?}: {}", counts.requests);
    }
    let describes = counters.describe_calls();
    let bound = groups.div_ceil(1000) + instances.div_ceil(1000) + links.div_ceil(1000) + vpcs + mirrors.div_ceil(1000);
    println!("describe calls: {describes}");
    println!("writes: {}", counters.mutating_calls());
    println!(
        "bound: ceil({groups}/1000) + ceil({instances}/1000) + ceil({links}/1000) + {vpcs} + ceil({mirrors}/1000) = {bound}"
    );
    println!("ratio describe calls / bound: {:.2}", describes as f64 / bound as f64);
}
