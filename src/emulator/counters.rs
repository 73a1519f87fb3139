//! Per-action request counters (docs/emulator.md): how many requests each EC2 action
//! received and how each ended. Tests assert on them ("a converged second
//! pass writes nothing"), benchmarks report them, and the HTTP server
//! serves them as JSON (`GET /_emulator/calls`).

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::ec2::{Category, Operation};

/// Outcomes of one action's requests. `requests = ok + throttled + sum(errors)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OperationCounts {
    /// Requests received (each describe page is one request).
    pub requests: u64,
    /// Requests answered successfully.
    pub ok: u64,
    /// Requests refused with `RequestLimitExceeded`.
    pub throttled: u64,
    /// Other failures, by EC2 error code (injected faults included).
    pub errors: BTreeMap<String, u64>,
}

impl OperationCounts {
    /// All failed requests except throttled ones.
    #[must_use]
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Counters of every action one world has seen since creation or the last
/// reset. Serialises as `{"DescribeInstances": {"requests": …}, …}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounters {
    by_operation: BTreeMap<Operation, OperationCounts>,
}

impl RequestCounters {
    pub(crate) fn record_ok(&mut self, operation: Operation) {
        let counts = self.by_operation.entry(operation).or_default();
        counts.requests += 1;
        counts.ok += 1;
    }

    pub(crate) fn record_throttled(&mut self, operation: Operation) {
        let counts = self.by_operation.entry(operation).or_default();
        counts.requests += 1;
        counts.throttled += 1;
    }

    pub(crate) fn record_error(&mut self, operation: Operation, code: &str) {
        let counts = self.by_operation.entry(operation).or_default();
        counts.requests += 1;
        *counts.errors.entry(code.to_owned()).or_default() += 1;
    }

    /// The counts of one action (zero if it was never called).
    #[must_use]
    pub fn get(&self, operation: Operation) -> OperationCounts {
        self.by_operation.get(&operation).cloned().unwrap_or_default()
    }

    /// Requests received by one action.
    #[must_use]
    pub fn requests(&self, operation: Operation) -> u64 {
        self.by_operation.get(&operation).map_or(0, |c| c.requests)
    }

    /// Failures of one action with one error code.
    #[must_use]
    pub fn errors(&self, operation: Operation, code: &str) -> u64 {
        self.by_operation.get(&operation).and_then(|c| c.errors.get(code)).copied().unwrap_or(0)
    }

    /// Every request of every action.
    #[must_use]
    pub fn total_requests(&self) -> u64 {
        self.by_operation.values().map(|c| c.requests).sum()
    }

    /// Requests to mutating actions, whatever their outcome.
    #[must_use]
    pub fn mutating_calls(&self) -> u64 {
        self.category_calls(Category::Mutating)
    }

    /// Requests to describe actions, whatever their outcome.
    #[must_use]
    pub fn describe_calls(&self) -> u64 {
        self.category_calls(Category::Describe)
    }

    fn category_calls(&self, category: Category) -> u64 {
        self.by_operation.iter().filter(|(op, _)| op.category() == category).map(|(_, c)| c.requests).sum()
    }

    /// Requests refused with `RequestLimitExceeded`, all actions.
    #[must_use]
    pub fn throttled_total(&self) -> u64 {
        self.by_operation.values().map(|c| c.throttled).sum()
    }

    /// Every action that was called, with its counts, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (Operation, &OperationCounts)> {
        self.by_operation.iter().map(|(op, c)| (*op, c))
    }

    /// The JSON form (pretty, actions by name).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("counters serialise")
    }
}

impl Serialize for RequestCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.by_operation.len()))?;
        for (op, counts) in &self.by_operation {
            map.serialize_entry(op.as_str(), counts)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_serialise_by_action_name() {
        let mut c = RequestCounters::default();
        c.record_ok(Operation::DescribeInstances);
        c.record_ok(Operation::DescribeInstances);
        c.record_throttled(Operation::CreateTags);
        c.record_error(Operation::CreateTags, "InternalError");
        assert_eq!(c.requests(Operation::DescribeInstances), 2);
        assert_eq!(c.describe_calls(), 2);
        assert_eq!(c.mutating_calls(), 2);
        assert_eq!(c.throttled_total(), 1);
        assert_eq!(c.errors(Operation::CreateTags, "InternalError"), 1);
        assert_eq!(c.get(Operation::DeleteTags), OperationCounts::default());
        let json: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(json["DescribeInstances"]["ok"], 2);
        assert_eq!(json["CreateTags"]["errors"]["InternalError"], 1);
        assert_eq!(json["CreateTags"]["throttled"], 1);
    }
}
