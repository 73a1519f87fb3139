//! Each target's health (`/status`'s `targets`): one entry per target
//! account the daemon runs a loop for (docs/architecture.md, "Many
//! targets"), kept from that target's finished passes. Pure: time comes in.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::status::rfc3339;
use crate::execute::ActionResult;
use crate::reconcile::{CycleOutcome, PassReport};

/// Whether an outcome counts as a failure of its target: its observation
/// failed or was incomplete (a role that cannot be assumed, a region
/// down). A pass whose actions partly failed reached the target.
#[must_use]
pub fn is_failure(outcome: CycleOutcome) -> bool {
    matches!(outcome, CycleOutcome::Failed | CycleOutcome::Incomplete)
}

/// One target in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The account's configured name (`aws` for the `[aws]` one).
    pub account: String,
    /// The region of its EC2 client.
    pub region: String,
    /// `pending` before its first pass, `ok` when its last pass reached it
    /// (`success` or `partial`), `failing` when it could not observe
    /// (`failed` or `incomplete`).
    pub state: String,
    /// Its passes finished since the daemon (or its loop) started.
    pub passes: u64,
    /// How its last pass ended.
    pub last_pass_outcome: Option<CycleOutcome>,
    /// When its last pass started (RFC 3339).
    pub last_pass_at: Option<String>,
    /// When its last `success` pass started (RFC 3339).
    pub last_success_at: Option<String>,
    /// Its passes in a row that failed (`failed` or `incomplete`).
    pub consecutive_failures: u32,
    /// The last pass's first error, when it had one; kept while the
    /// target keeps failing, cleared by a pass without error.
    pub last_error: Option<TargetErrorStatus>,
}

/// A target's last error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetErrorStatus {
    /// Its kind (`fatal`, `throttled`, `transient`, …: the `kind` label
    /// of the other metrics).
    pub kind: String,
    /// EC2's error code (or the daemon's, for a failure EC2 never answered).
    pub code: Option<String>,
    /// The message, naming the account.
    pub message: String,
    /// When the pass that met it started (RFC 3339).
    pub at: String,
}

/// The first error of a pass: a failed describe, else a failed action.
fn first_error(pass: &PassReport, at: SystemTime) -> Option<TargetErrorStatus> {
    if let Some(error) = pass.observe_errors.first() {
        return Some(TargetErrorStatus {
            kind: error.kind().to_owned(),
            code: Some(error.source.code.clone()),
            message: error.to_string(),
            at: rfc3339(at),
        });
    }
    pass.report.outcomes.iter().find_map(|outcome| match &outcome.result {
        ActionResult::Failed(error) => Some(TargetErrorStatus {
            kind: error.kind().to_owned(),
            code: error.code().map(str::to_owned),
            message: error.to_string(),
            at: rfc3339(at),
        }),
        _ => None,
    })
}

/// Every target's health.
#[derive(Clone, Debug, Default)]
pub struct TargetBoard {
    targets: BTreeMap<String, TargetStatus>,
}

impl TargetBoard {
    /// A target's loop starts (again after a reload removed and added it).
    pub fn started(&mut self, account: &str, region: &str) {
        self.targets.insert(
            account.to_owned(),
            TargetStatus {
                account: account.to_owned(),
                region: region.to_owned(),
                state: "pending".to_owned(),
                passes: 0,
                last_pass_outcome: None,
                last_pass_at: None,
                last_success_at: None,
                consecutive_failures: 0,
                last_error: None,
            },
        );
    }

    /// A pass of `account` that started at `started_at` finished as
    /// `outcome`. Returns the target's consecutive failures; `None` for a
    /// target a reload removed (its loop's last pass while draining).
    pub fn finished(
        &mut self,
        account: &str,
        pass: &PassReport,
        outcome: CycleOutcome,
        started_at: SystemTime,
    ) -> Option<u32> {
        let target = self.targets.get_mut(account)?;
        target.passes += 1;
        target.last_pass_outcome = Some(outcome);
        target.last_pass_at = Some(rfc3339(started_at));
        if outcome == CycleOutcome::Success {
            target.last_success_at = Some(rfc3339(started_at));
        }
        if is_failure(outcome) {
            target.consecutive_failures = target.consecutive_failures.saturating_add(1);
            target.state = "failing".to_owned();
        } else {
            target.consecutive_failures = 0;
            target.state = "ok".to_owned();
        }
        match first_error(pass, started_at) {
            Some(error) => target.last_error = Some(error),
            None if !is_failure(outcome) => target.last_error = None,
            None => {}
        }
        Some(target.consecutive_failures)
    }

    /// A reload removed the target.
    pub fn stopped(&mut self, account: &str) {
        self.targets.remove(account);
    }

    /// How many targets there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is none (before the first loop starts).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether every target has finished a pass, whatever its outcome.
    #[must_use]
    pub fn all_passed_once(&self) -> bool {
        self.targets.values().all(|t| t.passes > 0)
    }

    /// The entries, by account name.
    #[must_use]
    pub fn statuses(&self) -> Vec<TargetStatus> {
        self.targets.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::{Ec2Error, Operation};
    use crate::execute::Report;
    use crate::model::{Snapshot, SnapshotPart};
    use crate::observe::ObserveError;
    use crate::plan::Plan;
    use std::time::Duration;

    fn pass(failing: bool) -> PassReport {
        let mut snapshot = Snapshot::default();
        let mut observe_errors = Vec::new();
        if failing {
            snapshot.incomplete.insert(SnapshotPart::SourceGroups);
            observe_errors.push(ObserveError {
                part: SnapshotPart::SourceGroups,
                source: Ec2Error::new(
                    Operation::DescribeSecurityGroups,
                    crate::ec2::codes::CREDENTIALS_UNAVAILABLE,
                    "account b: no credentials",
                ),
            });
        }
        PassReport {
            snapshot,
            observe_errors,
            plan: Plan::default(),
            report: Report::default(),
            duration: Duration::ZERO,
            interrupted: false,
            fights: Vec::new(),
            fights_started: Vec::new(),
            other_writer: false,
        }
    }

    #[test]
    fn a_failing_target_counts_its_failures_keeps_its_error_and_recovers_on_a_good_pass() {
        let mut board = TargetBoard::default();
        board.started("aws", "us-east-1");
        board.started("b", "eu-west-1");
        assert!(!board.all_passed_once());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(board.finished("aws", &pass(false), CycleOutcome::Success, t0), Some(0));
        assert_eq!(board.finished("b", &pass(true), CycleOutcome::Failed, t0), Some(1));
        assert!(board.all_passed_once(), "ready once every target has finished a pass, even a failed one");
        assert_eq!(board.finished("b", &pass(true), CycleOutcome::Failed, t0), Some(2));
        let b = board.statuses().into_iter().find(|t| t.account == "b").unwrap();
        assert_eq!((b.state.as_str(), b.consecutive_failures, b.last_success_at.as_deref()), ("failing", 2, None));
        let error = b.last_error.unwrap();
        assert_eq!((error.kind.as_str(), error.code.as_deref()), ("fatal", Some("CredentialsUnavailable")));
        assert!(error.message.contains("account b"), "{}", error.message);
        assert_eq!(board.finished("b", &pass(false), CycleOutcome::Success, t0), Some(0));
        let b = board.statuses().into_iter().find(|t| t.account == "b").unwrap();
        assert_eq!((b.state.as_str(), b.last_error, b.passes), ("ok", None, 3));
        board.stopped("b");
        assert_eq!(board.len(), 1);
        assert_eq!(
            board.finished("b", &pass(false), CycleOutcome::Success, t0),
            None,
            "a removed target stays removed"
        );
        assert_eq!(board.len(), 1);
    }
}
