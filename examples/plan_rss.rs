//! Figure 1 (memory) of issue 6: peak RSS of a snapshot and one plan.
//!
//! `cargo run --release --example plan_rss -- 5000 [--cold-only] [--keep DIR] [--expand]`
//!
//! The parent process generates the estate of `benches/support` at that size,
//! observes it from the in-process emulator (cold, then after `apply`
//! converged) and saves each snapshot as JSON. A fresh child process per
//! snapshot then loads it and plans once, so its peak RSS (`VmHWM`) is the
//! snapshot and the plan alone, as in the daemon — not the emulator's world.
//!
//! `--expand` uses the expanding estate and config of the planner bench
//! (`support::expanding_spec`, `support::expanding_config`); the snapshots
//! are then `cold-expand-N.json` and `steady-expand-N.json`, and `--measure`
//! takes `--expand` too.
//!
//! `--keep DIR` leaves the snapshots in `DIR` (`cold-N.json`, `steady-N.json`)
//! for profiling one plan without the emulator:
//! `valgrind --tool=callgrind target/release/examples/plan_rss --measure DIR/cold-5000.json`.

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

/// The child: load one snapshot, plan once, print what it cost. Then, with
/// `--repeat N`, plan N more times and print the median and fastest of those
/// (warm: allocator and caches primed by the first); with `--json OUT`, write
/// the whole plan and the next memory as JSON to OUT, to compare two builds'
/// plans of the same large estate byte for byte.
fn measure(path: &Path, repeat: usize, json: Option<&Path>, config: &classiclink_mirror::config::Config) {
    let started = Instant::now();
    let snapshot: Snapshot =
        serde_json::from_reader(BufReader::new(File::open(path).expect("snapshot file"))).expect("snapshot JSON");
    let load = started.elapsed();
    let after_load = status_mib("VmHWM:");
    let started = Instant::now();
    let (planned, memory) = plan(config, &snapshot, &Memory::default(), support::now());
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
    if let Some(out) = json {
        let text = serde_json::to_string(&(&planned, &memory)).expect("plan JSON");
        std::fs::write(out, text).expect("plan JSON written");
    }
    drop((planned, memory));
    if repeat > 0 {
        let mut times: Vec<f64> = (0..repeat)
            .map(|_| {
                let started = Instant::now();
                let result = plan(config, &snapshot, &Memory::default(), support::now());
                let elapsed = started.elapsed();
                drop(result);
                elapsed.as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("repeat={repeat} median_ms={:.1} min_ms={:.1}", times[times.len() / 2], times[0]);
    }
}

fn save(snapshot: &Snapshot, path: &Path) {
    let file = BufWriter::new(File::create(path).expect("snapshot file"));
    serde_json::to_writer(file, snapshot).expect("snapshot written");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let expand = args.iter().any(|a| a == "--expand");
    let config = if expand { support::expanding_config() } else { support::config() };
    if let [flag, path, rest @ ..] = args.as_slice()
        && flag == "--measure"
    {
        let option = |name: &str| rest.iter().position(|a| a == name).and_then(|i| rest.get(i + 1));
        let repeat = option("--repeat").map_or(0, |n| n.parse().expect("--repeat N"));
        measure(Path::new(path), repeat, option("--json").map(Path::new), &config);
        return;
    }
    let groups: usize = args.first().and_then(|a| a.parse().ok()).expect("usage: plan_rss GROUPS [--cold-only]");
    let cold_only = args.iter().any(|a| a == "--cold-only");
    let keep = args.iter().position(|a| a == "--keep").map(|i| args.get(i + 1).expect("--keep DIR"));
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = keep.map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).expect("the snapshot directory");
    let runtime = support::runtime();
    let suffix = if expand { "-expand" } else { "" };

    let started = Instant::now();
    let spec = if expand { support::expanding_spec(groups) } else { support::spec(groups) };
    let emu = support::emulator(&runtime, &spec);
    let cold = runtime.block_on(support::snapshot(&emu, &config));
    save(&cold, &dir.join(format!("cold{suffix}-{groups}.json")));
    drop(cold);
    eprintln!("estate of {groups} groups loaded and observed in {:.1?}", started.elapsed());
    let mut phases = vec!["cold"];
    if !cold_only {
        let started = Instant::now();
        runtime.block_on(support::converge(&emu, &config));
        eprintln!("converged with apply in {:.1?}", started.elapsed());
        let steady = runtime.block_on(support::snapshot(&emu, &config));
        save(&steady, &dir.join(format!("steady{suffix}-{groups}.json")));
        phases.push("steady");
    }
    eprintln!("this process (emulator world included): peak {:.1} MiB", status_mib("VmHWM:"));
    drop(emu);

    let exe = std::env::current_exe().expect("own path");
    for phase in phases {
        let path = dir.join(format!("{phase}{suffix}-{groups}.json"));
        let mut child = Command::new(&exe);
        child.arg("--measure").arg(&path);
        if expand {
            child.arg("--expand");
        }
        let output = child.output().expect("the child runs");
        assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
        print!("{phase}: {}", String::from_utf8_lossy(&output.stdout));
    }
}
