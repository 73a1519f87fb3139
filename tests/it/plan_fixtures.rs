//! Fixture scenarios: hand-written estates in `tests/fixtures/plans/<scenario>/`
//! planned at a fixed time, their text and JSON plans (and the memory handed
//! to the next cycle) kept as insta snapshots in `tests/it/snapshots/plans/`.
//!
//! Each scenario directory holds `config.toml`, `snapshot.json` (the format of
//! `docs/snapshot-json.md`) and optionally `memory.json` (a serialised
//! `plan::Memory`: orphan timers, delete backoff, the shrink baseline). Adding
//! a scenario is adding a directory; new snapshots are written with
//! `INSTA_UPDATE=always cargo test --test it plan_fixtures::` and must be reviewed
//! against docs/semantics.md before they are committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use classiclink_mirror::config::Config;
use classiclink_mirror::model::Snapshot;
use classiclink_mirror::plan::{self, Memory, Plan};

/// Every fixture is planned at this instant, so orphan timers, backoffs and
/// the shrink guard in `memory.json` are relative to it (2027-01-15T08:00:00Z).
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans")
}

/// One scenario, loaded.
struct Scenario {
    name: String,
    config: Config,
    snapshot: Snapshot,
    memory: Memory,
}

impl Scenario {
    fn load(dir: &Path) -> Self {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("UTF-8 scenario name").to_owned();
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let config = Config::from_toml_str(&read("config.toml"), None)
            .unwrap_or_else(|errors| panic!("{name}/config.toml is invalid: {errors:#?}"));
        let snapshot =
            Snapshot::from_json(&read("snapshot.json")).unwrap_or_else(|e| panic!("{name}/snapshot.json: {e}"));
        let memory = if dir.join("memory.json").exists() {
            serde_json::from_str(&read("memory.json")).unwrap_or_else(|e| panic!("{name}/memory.json: {e}"))
        } else {
            Memory::default()
        };
        Self { name, config, snapshot, memory }
    }

    fn plan(&self) -> (Plan, Memory) {
        plan::plan(&self.config, &self.snapshot, &self.memory, now())
    }
}

/// Every scenario directory, sorted by name.
fn scenarios() -> Vec<Scenario> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/plans exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no scenarios in {}", fixtures_dir().display());
    dirs.iter().map(|dir| Scenario::load(dir)).collect()
}

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/plans");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

#[test]
fn every_scenario_plans_as_its_reviewed_snapshots() {
    for scenario in scenarios() {
        let (plan, next_memory) = scenario.plan();
        let name = &scenario.name;
        snapshot_settings().bind(|| {
            insta::assert_snapshot!(format!("{name}__text"), plan::render_text(&plan, &scenario.snapshot));
            insta::assert_snapshot!(format!("{name}__json"), plan::render_json(&plan));
            insta::assert_json_snapshot!(format!("{name}__memory"), next_memory);
        });
    }
}

#[test]
fn every_snapshot_file_belongs_to_a_scenario() {
    let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots/plans");
    // A moved directory must fail here, not pass by checking nothing.
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut checked = 0;
    for entry in entries {
        let file = entry.expect("readable directory entry").file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".snap") else { continue };
        let scenario = ["__text", "__json", "__memory"].iter().find_map(|suffix| stem.strip_suffix(suffix));
        assert!(
            scenario.is_some_and(|s| names.iter().any(|n| n == s)),
            "{file} has no scenario in tests/fixtures/plans; delete it or restore the scenario"
        );
        checked += 1;
    }
    assert!(checked > 0, "no snapshot files in {}", dir.display());
}

#[test]
fn planning_a_scenario_twice_gives_byte_identical_output() {
    for scenario in scenarios() {
        let (first, first_memory) = scenario.plan();
        let (second, second_memory) = scenario.plan();
        assert_eq!(plan::render_json(&first), plan::render_json(&second), "{}: JSON plan differs", scenario.name);
        assert_eq!(
            plan::render_text(&first, &scenario.snapshot),
            plan::render_text(&second, &scenario.snapshot),
            "{}: text plan differs",
            scenario.name
        );
        assert_eq!(first_memory, second_memory, "{}: next memory differs", scenario.name);
    }
}

#[test]
fn a_scenario_snapshot_survives_a_json_round_trip_with_the_same_plan() {
    for scenario in scenarios() {
        let again = Snapshot::from_json(&scenario.snapshot.to_json()).expect("own JSON parses");
        assert_eq!(again, scenario.snapshot, "{}", scenario.name);
        let replanned = plan::plan(&scenario.config, &again, &scenario.memory, now()).0;
        assert_eq!(plan::render_json(&replanned), plan::render_json(&scenario.plan().0), "{}", scenario.name);
    }
}

#[test]
fn every_scenario_plan_is_well_formed() {
    for scenario in scenarios() {
        let (plan, _) = scenario.plan();
        let name = &scenario.name;
        for (index, action) in plan.actions.iter().enumerate() {
            assert_eq!(action.id.0, index, "{name}: action ids are their positions");
            assert!(action.depends_on.iter().all(|d| d.0 < index), "{name}: action {index} depends forward");
        }
        let doc: serde_json::Value = serde_json::from_str(&plan::render_json(&plan)).expect("JSON plan parses");
        assert_eq!(doc["version"], 1, "{name}");
        assert_eq!(doc["converged"], plan.is_converged(), "{name}");
        assert_eq!(doc["actions"].as_array().map(Vec::len), Some(plan.actions.len()), "{name}");
    }
}
