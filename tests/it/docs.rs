//! The shipped operations files stay true to the code: the IAM policy in
//! `docs/iam-policy.json` grants every EC2 action the daemon calls and
//! nothing else, with its writes on security groups tied to the ownership
//! tag; the warning kinds the runbook explains are real ones.

use std::collections::BTreeSet;
use std::path::Path;

use classiclink_mirror::ec2::Operation;
use classiclink_mirror::model::OWNERSHIP_TAG;
use classiclink_mirror::plan::WarningKind;
use serde_json::Value;

/// Operations that only build test and demo worlds; the daemon never calls them.
const WORLD_BUILDING: [Operation; 5] = [
    Operation::CreateVpc,
    Operation::RunInstances,
    Operation::StopInstances,
    Operation::StartInstances,
    Operation::TerminateInstances,
];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn policy() -> Value {
    serde_json::from_str(&read("docs/iam-policy.json")).expect("docs/iam-policy.json is valid JSON")
}

fn statements(policy: &Value) -> &Vec<Value> {
    policy["Statement"].as_array().expect("Statement is an array")
}

/// A string-or-array policy field as a list.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().map(|v| v.as_str().expect("a string")).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a string or an array of strings, got {other}"),
    }
}

fn actions(statement: &Value) -> Vec<&str> {
    strings(&statement["Action"])
}

/// The statements that allow `action`.
fn granting<'a>(policy: &'a Value, action: &str) -> Vec<&'a Value> {
    statements(policy).iter().filter(|s| actions(s).contains(&action)).collect()
}

fn daemon_operations() -> Vec<Operation> {
    Operation::ALL.into_iter().filter(|op| !WORLD_BUILDING.contains(op)).collect()
}

#[test]
fn iam_policy_grants_every_ec2_action_the_daemon_calls_and_nothing_else() {
    let policy = policy();
    assert_eq!(policy["Version"], "2012-10-17");
    let granted: BTreeSet<&str> =
        statements(&policy).iter().flat_map(actions).filter(|a| !a.starts_with("sqs:")).collect();
    let needed: BTreeSet<String> = daemon_operations().iter().map(|op| format!("ec2:{op}")).collect();
    let needed: BTreeSet<&str> = needed.iter().map(String::as_str).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "docs/iam-policy.json lacks {missing:?}");
    assert!(extra.is_empty(), "docs/iam-policy.json grants actions the daemon never calls: {extra:?}");
    for statement in statements(&policy) {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        assert!(actions(statement).iter().all(|a| !a.contains('*')), "no wildcard actions: {statement}");
    }
}

#[test]
fn iam_policy_grants_the_event_queue_receive_and_delete_on_that_queue_only() {
    let policy = policy();
    let sqs: Vec<&Value> =
        statements(&policy).iter().filter(|s| actions(s).iter().any(|a| a.starts_with("sqs:"))).collect();
    assert_eq!(sqs.len(), 1, "one statement for the event queue");
    // DeleteMessageBatch is authorised as sqs:DeleteMessage; the daemon calls
    // nothing else (no GetQueueUrl: `[events] queue_url` is a URL).
    assert_eq!(actions(sqs[0]), ["sqs:ReceiveMessage", "sqs:DeleteMessage"]);
    let resources = strings(&sqs[0]["Resource"]);
    assert!(resources.iter().all(|r| r.starts_with("arn:aws:sqs:") && !r.ends_with(":*")), "{resources:?}");
}

#[test]
fn iam_policy_allows_only_describes_on_every_resource() {
    let policy = policy();
    for statement in statements(&policy) {
        let unrestricted = strings(&statement["Resource"]).contains(&"*");
        let describes_only = actions(statement).iter().all(|a| a.starts_with("ec2:Describe"));
        assert_eq!(unrestricted, describes_only, "only Describe* may (and must) use Resource \"*\": {statement}");
    }
}

#[test]
fn iam_policy_ties_changes_to_existing_groups_to_the_ownership_tag() {
    let policy = policy();
    let resource_tag = format!("ec2:ResourceTag/{OWNERSHIP_TAG}");
    for action in [
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
        "ec2:DeleteSecurityGroup",
        "ec2:DeleteTags",
    ] {
        for statement in granting(&policy, action) {
            assert_eq!(
                statement["Condition"]["Null"][&resource_tag], "false",
                "{action} must require the ownership tag on the group: {statement}"
            );
            assert_eq!(strings(&statement["Resource"]), ["arn:aws:ec2:*:*:security-group/*"], "{statement}");
        }
    }
}

#[test]
fn iam_policy_creates_groups_only_with_the_ownership_tag() {
    let policy = policy();
    let request_tag = format!("aws:RequestTag/{OWNERSHIP_TAG}");
    for statement in granting(&policy, "ec2:CreateSecurityGroup") {
        for resource in strings(&statement["Resource"]) {
            if resource.contains(":security-group/") {
                assert_eq!(statement["Condition"]["Null"][&request_tag], "false", "{statement}");
            } else {
                assert!(resource.contains(":vpc/"), "CreateSecurityGroup on {resource}: {statement}");
            }
        }
    }
}

#[test]
fn iam_policy_tags_existing_groups_with_the_ownership_tag_only() {
    let policy = policy();
    for action in ["ec2:CreateTags", "ec2:DeleteTags"] {
        for statement in granting(&policy, action) {
            let condition = &statement["Condition"];
            if condition["StringEquals"]["ec2:CreateAction"] == "CreateSecurityGroup" {
                continue; // tags in the CreateSecurityGroup call itself
            }
            assert_eq!(
                strings(&condition["ForAllValues:StringEquals"]["aws:TagKeys"]),
                [OWNERSHIP_TAG],
                "{action} outside creation may touch the ownership tag only: {statement}"
            );
            // ForAllValues is also true when the request names no tag keys at
            // all, which for DeleteTags means "delete every tag".
            assert_eq!(condition["Null"]["aws:TagKeys"], "false", "{action} must require tag keys: {statement}");
        }
    }
}

#[test]
fn runbook_warning_kinds_exist() {
    let runbook = read("docs/operations.md");
    let documented = [
        "unmirrorable",
        "missing_source",
        "conflict_name_taken",
        "conflict_foreign_link",
        "conflict_multi_vpc",
        "conflict_duplicate_mapping",
        "conflict_duplicate_name",
        "conflict_invalid_mapping",
        "discovery_tag",
        "quota_exceeded",
        "link_limit",
        "classiclink_disabled",
        "vpc_not_found",
        "orphan_waiting",
        "orphan_kept",
        "delete_backoff",
        "name_drift",
        "incomplete_snapshot",
        "safety_hold",
    ];
    for kind in documented {
        let parsed: WarningKind =
            serde_json::from_value(Value::from(kind)).unwrap_or_else(|e| panic!("{kind:?} is not a warning kind: {e}"));
        assert_eq!(parsed.as_str(), kind);
        assert!(runbook.contains(&format!("`{kind}`")), "docs/operations.md does not explain `{kind}`");
    }
}
