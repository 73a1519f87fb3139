//! The state file: the part of the planner's [`Memory`] that EC2 does not
//! hold, kept on disk so that a restart does not forget it.
//!
//! Sits beside the loop, outside observe → plan → execute: the daemon (and
//! `apply`) load it before the first pass and write it back after each pass
//! that changed it. What it keeps: the shrink guard's baseline and since
//! when a drop has lasted, the deletion backoffs, when the state was last
//! lost, the recent repairs of each pair and its fight (their backoff), since
//! when each expansion prefix list has been unneeded (its grace), and
//! (a cache only) when each orphan was first seen; the orphans' own record
//! is their `classiclinkmirror:orphanedSince` tag.
//!
//! - One JSON document, `state.json` in `daemon.state_dir`, with a `version`.
//! - Written atomically: a temporary file in the same directory, fsync, rename
//!   over the old file, fsync of the directory. A crash leaves the old file or
//!   the new one, never half of one.
//! - Missing means a first start. Unreadable, corrupt or of an unknown version
//!   is an error the caller turns into a warning, a metric and a conservative
//!   start ([`Memory::state_lost_at`]); never a crash.
//!
//! `docs/operations.md` ("What survives a restart and where it is kept").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::{GroupId, PrefixListId, VpcId, format_time, parse_time};
use crate::plan::{Baseline, DeleteBackoff, FightKey, FightState, Memory, PairKey, RepairHistory, RepairKind};

/// The file's name in the state directory.
pub const STATE_FILE: &str = crate::config::STATE_FILE_NAME;

/// The version this daemon writes and reads.
pub const STATE_VERSION: u64 = 1;

/// A state file larger than this is not one this daemon wrote.
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// Why the state file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It exists but cannot be read (permissions, a directory, I/O error).
    #[error("cannot read the state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a state document (bad JSON, a bad field, too large).
    #[error("the state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// It was written by a daemon of another version of the format.
    #[error("the state file {path} has version {found}; this daemon reads version {STATE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// It cannot be written (missing or read-only directory, full disk).
    #[error("cannot write the state file {path}: {source}")]
    Write {
        /// The file (or the temporary file or directory that failed).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl StateError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Corrupt { .. } => "corrupt",
            Self::Version { .. } => "version",
            Self::Write { .. } => "write",
        }
    }
}

/// A deletion backoff as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BackoffDoc {
    failures: u32,
    retry_after: String,
}

/// A fight as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FightDoc {
    since: String,
    repairs: u32,
    last_repair: String,
    retry_after: String,
    #[serde(default)]
    subjects: BTreeSet<String>,
}

/// The recent repairs of one pair and kind as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RepairsDoc {
    source: GroupId,
    vpc: VpcId,
    kind: RepairKind,
    /// Repair times by subject fingerprint.
    #[serde(default)]
    subjects: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    fight: Option<FightDoc>,
    /// Who made the change the latest repair undid (an event's principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
}

/// The document, version 1. Times are RFC 3339 UTC to the second. The
/// `repairs` list came later within version 1: a file without it (an older
/// daemon's) loads with no repairs remembered, and an older daemon ignores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateDoc {
    version: u64,
    #[serde(default)]
    baseline: Option<Baseline>,
    #[serde(default)]
    shrink_since: Option<String>,
    #[serde(default)]
    state_lost_at: Option<String>,
    #[serde(default)]
    delete_backoff: BTreeMap<GroupId, BackoffDoc>,
    #[serde(default)]
    orphans_since: BTreeMap<GroupId, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repairs: Vec<RepairsDoc>,
    /// Since when each expansion prefix list has been unneeded (came later
    /// within version 1, like `repairs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    unneeded_lists_since: BTreeMap<PrefixListId, String>,
}

impl StateDoc {
    fn of(memory: &Memory) -> Self {
        Self {
            version: STATE_VERSION,
            baseline: memory.baseline,
            shrink_since: memory.shrink_since.map(format_time),
            state_lost_at: memory.state_lost_at.map(format_time),
            delete_backoff: memory
                .delete_backoff
                .iter()
                .map(|(group, b)| {
                    (group.clone(), BackoffDoc { failures: b.failures, retry_after: format_time(b.retry_after) })
                })
                .collect(),
            orphans_since: memory.orphans_since.iter().map(|(group, t)| (group.clone(), format_time(*t))).collect(),
            unneeded_lists_since: memory
                .unneeded_lists_since
                .iter()
                .map(|(list, t)| (list.clone(), format_time(*t)))
                .collect(),
            repairs: memory
                .repairs
                .iter()
                .map(|(key, history)| RepairsDoc {
                    source: key.pair.source.clone(),
                    vpc: key.pair.vpc.clone(),
                    kind: key.kind,
                    subjects: history
                        .subjects
                        .iter()
                        .map(|(subject, times)| (subject.clone(), times.iter().map(|t| format_time(*t)).collect()))
                        .collect(),
                    fight: history.fight.as_ref().map(|f| FightDoc {
                        since: format_time(f.since),
                        repairs: f.repairs,
                        last_repair: format_time(f.last_repair),
                        retry_after: format_time(f.retry_after),
                        subjects: f.subjects.clone(),
                    }),
                    principal: history.principal.clone(),
                })
                .collect(),
        }
    }

    fn into_memory(self, path: &Path) -> Result<Memory, StateError> {
        let time = |field: &str, text: &str| {
            parse_time(text).ok_or_else(|| StateError::Corrupt {
                path: path.to_owned(),
                reason: format!("{field}: {text:?} is not an RFC 3339 UTC time"),
            })
        };
        let mut memory = Memory {
            baseline: self.baseline,
            shrink_since: self.shrink_since.as_deref().map(|t| time("shrink_since", t)).transpose()?,
            state_lost_at: self.state_lost_at.as_deref().map(|t| time("state_lost_at", t)).transpose()?,
            ..Memory::default()
        };
        for (group, backoff) in self.delete_backoff {
            let retry_after = time(&format!("delete_backoff.{group}.retry_after"), &backoff.retry_after)?;
            memory.delete_backoff.insert(group, DeleteBackoff { failures: backoff.failures, retry_after });
        }
        for (group, since) in self.orphans_since {
            let since = time(&format!("orphans_since.{group}"), &since)?;
            memory.orphans_since.insert(group, since);
        }
        for (list, since) in self.unneeded_lists_since {
            let since = time(&format!("unneeded_lists_since.{list}"), &since)?;
            memory.unneeded_lists_since.insert(list, since);
        }
        for (index, doc) in self.repairs.into_iter().enumerate() {
            let field = |name: &str| format!("repairs[{index}].{name}");
            let mut history = RepairHistory::default();
            for (subject, times) in doc.subjects {
                let times =
                    times.iter().map(|t| time(&field(&format!("subjects.{subject}")), t)).collect::<Result<_, _>>()?;
                history.subjects.insert(subject, times);
            }
            history.fight = match doc.fight {
                None => None,
                Some(f) => Some(FightState {
                    since: time(&field("fight.since"), &f.since)?,
                    repairs: f.repairs,
                    last_repair: time(&field("fight.last_repair"), &f.last_repair)?,
                    retry_after: time(&field("fight.retry_after"), &f.retry_after)?,
                    subjects: f.subjects,
                }),
            };
            history.principal = doc.principal;
            let key = FightKey { pair: PairKey { source: doc.source, vpc: doc.vpc }, kind: doc.kind };
            memory.repairs.insert(key, history);
        }
        Ok(memory)
    }
}

/// The state file of one state directory, and what was last written to it.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    /// The file's name in `dir`: [`STATE_FILE`], or a target's own
    /// ([`crate::config::Config::state_file_name`]).
    name: String,
    /// The document last written or loaded, so that a pass that changed
    /// nothing writes nothing.
    last: Option<StateDoc>,
}

impl StateFile {
    /// The state file in `dir` (`daemon.state_dir`). Nothing is read yet.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::named(dir, STATE_FILE)
    }

    /// The state file called `name` in `dir`: one target's among several
    /// (`state-NAME.json`, [`crate::config::Config::state_file_name`]).
    #[must_use]
    pub fn named(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self { dir: dir.into(), name: name.into(), last: None }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Takes over the file `legacy` of the same directory when this one is
    /// missing: renames it to this file's name (a daemon of an earlier
    /// version wrote the memory of its only target under
    /// [`STATE_FILE`]; [`crate::config::Config::legacy_state_file_owner`]
    /// says which target it was). Returns whether it did.
    ///
    /// # Errors
    /// The rename failed (the caller starts as without a file).
    pub fn take_over(&self, legacy: &str) -> std::io::Result<bool> {
        let from = self.dir.join(legacy);
        if self.exists() || std::fs::symlink_metadata(&from).is_err() {
            return Ok(false);
        }
        std::fs::rename(&from, self.path())?;
        Ok(true)
    }

    /// Whether the file exists (readable or not).
    #[must_use]
    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(self.path()).is_ok()
    }

    /// Reads the file: `Ok(None)` when there is none (a first start).
    ///
    /// # Errors
    /// [`StateError::Read`], [`StateError::Corrupt`] or
    /// [`StateError::Version`]: the caller starts conservatively.
    pub fn load(&mut self) -> Result<Option<Memory>, StateError> {
        self.remove_stale_temporaries();
        let path = self.path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| StateError::Read { path: path.clone(), source })?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::Corrupt { path, reason: format!("larger than {MAX_STATE_BYTES} bytes") });
        }
        let corrupt = |reason: String| StateError::Corrupt { path: path.clone(), reason };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let version = value.get("version").ok_or_else(|| corrupt("no version".to_owned()))?;
        let version = version.as_u64().ok_or_else(|| corrupt(format!("version {version} is not a number")))?;
        if version != STATE_VERSION {
            return Err(StateError::Version { path, found: version });
        }
        let doc: StateDoc = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        let memory = doc.clone().into_memory(&path)?;
        self.last = Some(doc);
        Ok(Some(memory))
    }

    /// Writes `memory`'s persistent part when it differs from what was last
    /// written (or loaded); returns whether it wrote.
    ///
    /// # Errors
    /// [`StateError::Write`]; the next call tries again.
    pub fn save(&mut self, memory: &Memory) -> Result<bool, StateError> {
        let doc = StateDoc::of(memory);
        if self.last.as_ref() == Some(&doc) {
            return Ok(false);
        }
        let mut text = serde_json::to_string_pretty(&doc).expect("the state document serialises");
        text.push('\n');
        self.write_atomically(text.as_bytes())?;
        self.last = Some(doc);
        Ok(true)
    }

    /// Removes temporary files a process killed in the middle of a write
    /// left behind (best effort: the directory may not even exist).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let prefix = format!(".{}.tmp-", self.name);
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Temporary file in the same directory, fsync, rename, fsync of the
    /// directory (so the rename itself survives a power loss).
    fn write_atomically(&self, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path();
        let temporary = self.dir.join(format!(".{}.tmp-{}", self.name, std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        if let Err(source) = write() {
            let _ = std::fs::remove_file(&temporary);
            return Err(StateError::Write { path: temporary, source });
        }
        if let Err(source) = std::fs::rename(&temporary, &path) {
            let _ = std::fs::remove_file(&temporary);
            return Err(StateError::Write { path, source });
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| StateError::Write { path: self.dir.clone(), source })
    }
}

/// The memory to start from when the state file cannot be used: nothing
/// remembered, and destructive actions held for one `orphan_grace` from `now`.
#[must_use]
pub fn conservative_start(now: SystemTime) -> Memory {
    Memory { state_lost_at: Some(now), ..Memory::default() }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn group(id: &str) -> GroupId {
        id.parse().unwrap()
    }

    fn memory() -> Memory {
        let mut memory = Memory {
            baseline: Some(Baseline { managed_sources: 12, linked_instances: 40 }),
            shrink_since: Some(t0() - Duration::from_secs(30)),
            state_lost_at: Some(t0() - Duration::from_secs(5)),
            ..Memory::default()
        };
        memory.orphans_since.insert(group("sg-99e"), t0() - Duration::from_secs(120));
        memory.record_delete_blocked(&group("sg-99f"), t0());
        memory.record_delete_blocked(&group("sg-99f"), t0());
        let pair = PairKey { source: group("sg-1a"), vpc: "vpc-9f2".parse().unwrap() };
        let mut history = RepairHistory::default();
        history.subjects.insert("00ff00ff00ff00ff".to_owned(), vec![t0() - Duration::from_secs(40), t0()]);
        history.fight = Some(FightState {
            since: t0() - Duration::from_secs(40),
            repairs: 2,
            last_repair: t0(),
            retry_after: t0() + Duration::from_secs(120),
            subjects: BTreeSet::from(["00ff00ff00ff00ff".to_owned()]),
        });
        memory.repairs.insert(FightKey { pair, kind: RepairKind::Grant }, history);
        memory
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_target_takes_over_the_legacy_file_only_when_it_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let target = StateFile::named(dir.path(), "state-b.json");
        assert!(!target.take_over(STATE_FILE).unwrap(), "nothing to take over");
        StateFile::new(dir.path()).save(&memory()).unwrap();
        assert!(target.take_over(STATE_FILE).unwrap());
        assert!(!dir.path().join(STATE_FILE).exists());
        assert_eq!(StateFile::named(dir.path(), "state-b.json").load().unwrap(), Some(memory()));
        StateFile::new(dir.path()).save(&Memory::default()).unwrap();
        assert!(!target.take_over(STATE_FILE).unwrap(), "its own file wins");
        assert_eq!(StateFile::named(dir.path(), "state-b.json").load().unwrap(), Some(memory()));
    }

    #[test]
    fn a_missing_file_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile::new(dir.path());
        assert!(!state.exists());
        assert!(state.load().unwrap().is_none());
    }

    #[test]
    fn what_is_saved_is_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let memory = memory();
        assert!(StateFile::new(dir.path()).save(&memory).unwrap());
        let loaded = StateFile::new(dir.path()).load().unwrap().expect("a state file");
        assert_eq!(loaded, memory);
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("\"retry_after\": \"2027-01-15T08:02:00Z\""), "two failures wait 2 min: {text}");
    }

    #[test]
    fn an_unchanged_memory_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile::new(dir.path());
        let mut memory = memory();
        assert!(state.save(&memory).unwrap());
        assert!(!state.save(&memory).unwrap());
        // The per-plan deferred counts are not state.
        memory.deferred.revokes = 3;
        assert!(!state.save(&memory).unwrap());
        memory.baseline = None;
        assert!(state.save(&memory).unwrap());
        // A loaded file counts as written.
        let mut again = StateFile::new(dir.path());
        let loaded = again.load().unwrap().unwrap();
        assert!(!again.save(&loaded).unwrap());
    }

    #[test]
    fn a_corrupt_file_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        for (text, kind) in [
            ("", "corrupt"),
            ("{", "corrupt"),
            ("[]", "corrupt"),
            ("null", "corrupt"),
            ("{\"baseline\": null}", "corrupt"),
            ("{\"version\": \"1\"}", "corrupt"),
            ("{\"version\": -1}", "corrupt"),
            ("{\"version\": 1, \"shrink_since\": \"yesterday\"}", "corrupt"),
            ("{\"version\": 1, \"orphans_since\": {\"sg-99e\": \"2027-13-01T00:00:00Z\"}}", "corrupt"),
            ("{\"version\": 1, \"orphans_since\": {\"not-a-group\": \"2027-01-01T00:00:00Z\"}}", "corrupt"),
            ("{\"version\": 1, \"baseline\": {\"managed_sources\": -3, \"linked_instances\": 0}}", "corrupt"),
            ("{\"version\": 1, \"delete_backoff\": {\"sg-99e\": {\"failures\": 1}}}", "corrupt"),
            (
                "{\"version\": 1, \"repairs\": [{\"source\": \"sg-1\", \"vpc\": \"vpc-1\", \"kind\": \"war\"}]}",
                "corrupt",
            ),
            (
                "{\"version\": 1, \"repairs\": [{\"source\": \"sg-1\", \"vpc\": \"vpc-1\", \"kind\": \"grant\", \
                 \"subjects\": {\"ab\": [\"soon\"]}}]}",
                "corrupt",
            ),
            ("\u{feff}\u{0}\u{1}garbage", "corrupt"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = StateFile::new(dir.path()).load().expect_err(text);
            assert_eq!(error.kind(), kind, "{text}: {error}");
            assert!(error.to_string().contains(STATE_FILE), "the error names the file: {error}");
        }
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(StateFile::new(dir.path()).load().unwrap_err().kind(), "corrupt");
    }

    #[test]
    fn a_version_1_file_written_before_fights_were_remembered_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{
  "version": 1,
  "baseline": {"managed_sources": 12, "linked_instances": 40},
  "shrink_since": null,
  "state_lost_at": null,
  "delete_backoff": {"sg-99f": {"failures": 1, "retry_after": "2027-01-15T08:01:00Z"}},
  "orphans_since": {"sg-99e": "2027-01-15T07:58:00Z"}
}
"#;
        std::fs::write(dir.path().join(STATE_FILE), old).unwrap();
        let loaded = StateFile::new(dir.path()).load().unwrap().expect("a state file");
        assert!(loaded.repairs.is_empty());
        assert_eq!(loaded.baseline, Some(Baseline { managed_sources: 12, linked_instances: 40 }));
        assert_eq!(loaded.delete_backoff[&group("sg-99f")].failures, 1);
    }

    #[test]
    fn a_fight_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        StateFile::new(dir.path()).save(&memory()).unwrap();
        let loaded = StateFile::new(dir.path()).load().unwrap().expect("a state file");
        let fights = loaded.fights();
        assert_eq!(fights.len(), 1);
        assert_eq!(fights[0].kind, RepairKind::Grant);
        assert_eq!(fights[0].retry_after, t0() + Duration::from_secs(120));
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"kind\": \"grant\""), "{text}");
    }

    #[test]
    fn a_file_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{\"version\": 2, \"something\": \"new\"}").unwrap();
        let error = StateFile::new(dir.path()).load().unwrap_err();
        assert!(matches!(error, StateError::Version { found: 2, .. }), "{error}");
        assert_eq!(error.kind(), "version");
    }

    #[test]
    fn an_unreadable_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        let mut state = StateFile::new(dir.path());
        assert!(state.exists());
        assert_eq!(state.load().unwrap_err().kind(), "read");
    }

    #[test]
    fn a_huge_file_is_corrupt_without_being_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join(STATE_FILE)).unwrap();
        file.set_len(MAX_STATE_BYTES + 10).unwrap();
        let error = StateFile::new(dir.path()).load().unwrap_err();
        assert_eq!(error.kind(), "corrupt");
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile::new(dir.path());
        let old = memory();
        state.save(&old).unwrap();
        assert_eq!(files(dir.path()), [STATE_FILE]);
        // The rename cannot replace a non-empty directory: make the file one,
        // with the old document inside for comparison.
        let path = dir.path().join(STATE_FILE);
        let before = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), &before).unwrap();
        let error = state.save(&Memory::default()).unwrap_err();
        assert_eq!(error.kind(), "write");
        assert_eq!(files(dir.path()), [STATE_FILE], "no temporary file is left behind");
        assert_eq!(std::fs::read(path.join("keep")).unwrap(), before);
        // Once it can be written again, the next save does (the failed one
        // did not count as written).
        std::fs::remove_dir_all(&path).unwrap();
        assert!(state.save(&Memory::default()).unwrap());
        assert_eq!(StateFile::new(dir.path()).load().unwrap(), Some(Memory::default()));
    }

    #[test]
    fn a_missing_or_unusable_directory_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        assert_eq!(StateFile::new(&missing).save(&memory()).unwrap_err().kind(), "write");
        assert!(!missing.exists(), "the state directory is not created");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(StateFile::new(file.join("below")).save(&memory()).unwrap_err().kind(), "write");
        assert_eq!(StateFile::new(file.join("below")).load().unwrap_err().kind(), "read");
    }

    #[test]
    fn a_half_written_temporary_file_from_a_crash_is_ignored_and_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        StateFile::new(dir.path()).save(&memory()).unwrap();
        let temporary = dir.path().join(format!(".{STATE_FILE}.tmp-4242"));
        std::fs::write(&temporary, "{\"version\": 1, \"base").unwrap();
        std::fs::write(dir.path().join("unrelated"), "").unwrap();
        assert_eq!(StateFile::new(dir.path()).load().unwrap(), Some(memory()));
        assert_eq!(files(dir.path()), [STATE_FILE, "unrelated"]);
    }

    #[test]
    fn a_conservative_start_holds_from_now() {
        let memory = conservative_start(t0());
        assert_eq!(memory.state_lost_at, Some(t0()));
        assert_eq!(memory.baseline, None);
    }
}
