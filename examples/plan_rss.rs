//! Figure 1 (memory) of issue 6: peak RSS of a snapshot and one plan.
//!
//! `cargo run --release --example plan_rss -- 5000 [--cold-only]`
//!
//! The parent process generates the estate of `benches/support` at that size,
//! observes it from the in-process emulator (cold, then after `apply`
//! converged) and saves each snapshot as JSON. A fresh child process per
//! snapshot then loads it and plans once, so its peak RSS (`VmHWM`) is the
//! snapshot and the plan alone, as in the daemon — not the emulator's world.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use classiclink_mirror::model::Snapshot;
use classiclink_mirror::plan::{Memory, plan};

#[path = "../benches/support/mod.rs"]
mod support;

/// A `kB` line of `/proc/self/status`, in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(key)).expect("the key is in /proc/self/status");
    let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB");
    kib / 1024.0
}

/// The child: load one snapshot, plan once, print what it cost.
fn measure(path: &Path) {
    let started = Instant::now();
    let snapshot: Snapshot =
        serde_json::from_reader(BufReader::new(File::open(path).expect("snapshot file"))).expect("snapshot JSON");
    let load = started.elapsed();
    let after_load = status_mib("VmHWM:");
    let started = Instant::now();
    let (planned, memory) = plan(&support::config(), &snapshot, &Memory::default(), support::now());
    let planning = started.elapsed();
    let peak = status_mib("VmHWM:");
    println!(
        "groups={} vpc_groups={} instances={} links={} actions={} warnings={} load_ms={} plan_ms={} \
         peak_after_snapshot_mib={after_load:.1} peak_after_plan_mib={peak:.1}",
        snapshot.source_groups.len(),
        snapshot.vpc_groups.len(),
        snapshot.instances.len(),
        snapshot.links.len(),
        planned.actions.len(),
        planned.warnings.len(),
        load.as_millis(),
        planning.as_millis(),
    );
    drop((planned, memory));
}

fn save(snapshot: &Snapshot, path: &Path) {
    let file = BufWriter::new(File::create(path).expect("snapshot file"));
    serde_json::to_writer(file, snapshot).expect("snapshot written");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = args.as_slice()
        && flag == "--measure"
    {
        measure(Path::new(path));
        return;
    }
    let groups: usize = args.first().and_then(|a| a.parse().ok()).expect("usage: plan_rss GROUPS [--cold-only]");
    let cold_only = args.iter().any(|a| a == "--cold-only");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = support::config();
    let runtime = support::runtime();

    let started = Instant::now();
    let emu = support::emulator(&runtime, &support::spec(groups));
    let cold = runtime.block_on(support::snapshot(&emu, &config));
    save(&cold, &dir.path().join("cold.json"));
    drop(cold);
    eprintln!("estate of {groups} groups loaded and observed in {:.1?}", started.elapsed());
    let mut phases = vec!["cold"];
    if !cold_only {
        let started = Instant::now();
        runtime.block_on(support::converge(&emu, &config));
        eprintln!("converged with apply in {:.1?}", started.elapsed());
        let steady = runtime.block_on(support::snapshot(&emu, &config));
        save(&steady, &dir.path().join("steady.json"));
        phases.push("steady");
    }
    eprintln!("this process (emulator world included): peak {:.1} MiB", status_mib("VmHWM:"));
    drop(emu);

    let exe = std::env::current_exe().expect("own path");
    for phase in phases {
        let path = dir.path().join(format!("{phase}.json"));
        let output = Command::new(&exe).arg("--measure").arg(&path).output().expect("the child runs");
        assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
        print!("{phase}: {}", String::from_utf8_lossy(&output.stdout));
    }
}
