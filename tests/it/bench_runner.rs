//! The benchmark runner (`scripts/bench`, `examples/bench`) at a tiny size
//! through the real binary, so CI keeps it working. It asserts what is
//! deterministic — counts, convergence, that every change arrives — and
//! never a wall-clock time; the figures themselves are docs/BENCHMARKS.md.

#[path = "../../examples/bench/runner/mod.rs"]
mod runner;

use std::time::Duration;

use classiclink_mirror::ec2::Operation;
use runner::procs::Binary;
use runner::{Shape, fig3, fig4, fig5};

fn binary() -> Binary {
    Binary::new(env!("CARGO_BIN_EXE_classiclink-mirror"))
}

const TINY: Shape = Shape { groups: 5, instances: 20, grants: 5, seed: 6 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_3_converges_a_tiny_estate_with_exactly_the_minimum_of_writes() {
    let options = fig3::Options { shape: TINY, scale: 10.0, max_passes: 5 };
    let result = fig3::run(&binary(), &options).await.expect("figure 3 runs");
    assert_eq!(result.exit_code, 0, "apply converged");
    assert_eq!(result.plan_after, 0, "a plan afterwards has nothing to do");
    assert_eq!(result.minimum.total(), 5 + 5 + 20);
    assert_eq!(result.calls.get(Operation::CreateSecurityGroup).ok, 5);
    assert_eq!(result.calls.get(Operation::AuthorizeSecurityGroupIngress).ok, 5);
    assert_eq!(result.calls.get(Operation::AttachClassicLinkVpc).ok, 20);
    assert_eq!(result.mutating_admitted(), result.minimum.total(), "{}", result.table());
    assert_eq!(result.failed_actions(), 0);
    assert_eq!(result.passes.len(), 2, "one pass does everything, the second finds nothing");
    // 30 writes fit the burst of 500: nothing is throttled and the bound is zero.
    assert_eq!(result.calls.throttled(), 0);
    assert_eq!(result.time_ratio(), None);
    let json = result.json();
    assert_eq!(json["figure"], 3);
    assert_eq!(json["call_ratio"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_4_sees_every_change_mirrored_by_the_running_daemon() {
    let options = fig4::Options {
        shape: TINY,
        scale: 10.0,
        interval: Duration::from_secs(1),
        changes: 2,
        poll: Duration::from_millis(20),
        seed: 4,
        events_lost: false,
    };
    let result = fig4::run(&binary(), &options).await.expect("figure 4 runs");
    assert_eq!(result.latencies.len(), 2, "both changes (a CIDR rule and a group reference) arrived");
    assert!(result.passes >= 1, "the daemon ran passes meanwhile");
    assert_eq!(result.daemon_exit, Some(0), "the daemon exits 0 on SIGTERM");
    assert_eq!(result.json()["latencies_s"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figure_5_reads_the_same_page_on_every_path() {
    let options =
        fig5::Options { shape: Shape { groups: 10, instances: 0, grants: 3, seed: 6 }, requests: 3, warmup: 1 };
    let result = fig5::run(&binary(), &options).await.expect("figure 5 runs");
    for path in [&result.engine, &result.http, &result.sdk, &result.adapter] {
        assert_eq!(path.requests, 3);
    }
    assert!(result.page_bytes > 0);
    assert!(result.json()["b_over_a"].is_number());
}
