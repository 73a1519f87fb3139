//! The shipped operations files stay true to the code: the IAM policy in
//! `docs/iam-policy.json` grants every EC2 action the daemon calls and
//! nothing else, with its writes on security groups tied to the ownership
//! tag; the warning kinds the runbook explains are real ones.

use std::collections::BTreeSet;
use std::path::Path;

use classiclink_mirror::ec2::Operation;
use classiclink_mirror::model::{ORPHANED_SINCE_TAG, OWNER_TAG, OWNERSHIP_TAG};
use classiclink_mirror::plan::WarningKind;
use serde_json::Value;

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
    Operation::daemon_operations().collect()
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
fn iam_policy_tags_existing_groups_with_our_tags_only() {
    let policy = policy();
    let resource_tag = format!("ec2:ResourceTag/{OWNERSHIP_TAG}");
    for action in ["ec2:CreateTags", "ec2:DeleteTags"] {
        for statement in granting(&policy, action) {
            let condition = &statement["Condition"];
            if condition["StringEquals"]["ec2:CreateAction"] == "CreateSecurityGroup" {
                continue; // tags in the CreateSecurityGroup call itself
            }
            if condition["StringEquals"]["ec2:CreateAction"] == "CreateManagedPrefixList" {
                // Tags in the CreateManagedPrefixList call itself, on the new list only.
                assert_eq!(strings(&statement["Resource"]), ["arn:aws:ec2:*:*:prefix-list/*"], "{statement}");
                continue;
            }
            let keys = strings(&condition["ForAllValues:StringEquals"]["aws:TagKeys"]);
            let owned_only = condition["Null"][&resource_tag] == "false";
            if owned_only {
                // On groups that are ours: our tags (ownership, owner, orphan mark).
                assert!(
                    !keys.is_empty() && keys.iter().all(|k| [OWNERSHIP_TAG, OWNER_TAG, ORPHANED_SINCE_TAG].contains(k)),
                    "{action} on owned groups may touch our tags only: {statement}"
                );
            } else {
                // On any group (the default group, adoption, a claim): the
                // ownership and owner tags alone.
                assert_eq!(
                    keys,
                    [OWNERSHIP_TAG, OWNER_TAG],
                    "{action} on any group may set the ownership and owner tags only: {statement}"
                );
            }
            // ForAllValues is also true when the request names no tag keys at
            // all, which for DeleteTags means "delete every tag".
            assert_eq!(condition["Null"]["aws:TagKeys"], "false", "{action} must require tag keys: {statement}");
        }
    }
}

/// Whether some statement of `policy` allows `action` with these tag keys on
/// a security group that does (`owned`) or does not carry the ownership tag.
/// Evaluates exactly the condition operators the policy uses on tag writes.
fn allows_tag_write(policy: &Value, action: &str, keys: &[&str], owned: bool) -> bool {
    let resource_tag = format!("ec2:ResourceTag/{OWNERSHIP_TAG}");
    granting(policy, action).into_iter().any(|statement| {
        let condition = &statement["Condition"];
        if !strings(&statement["Resource"]).contains(&"arn:aws:ec2:*:*:security-group/*")
            || !condition["StringEquals"]["ec2:CreateAction"].is_null()
        {
            return false;
        }
        let null = condition["Null"].as_object().cloned().unwrap_or_default();
        let known = ["aws:TagKeys", resource_tag.as_str()];
        assert!(null.keys().all(|k| known.contains(&k.as_str())), "unexpected Null condition: {statement}");
        let needs_owned = null.get(&resource_tag).is_some_and(|v| v == "false");
        let needs_keys = null.get("aws:TagKeys").is_some_and(|v| v == "false");
        let allowed = strings(&condition["ForAllValues:StringEquals"]["aws:TagKeys"]);
        (owned || !needs_owned) && (!keys.is_empty() || !needs_keys) && keys.iter().all(|k| allowed.contains(k))
    })
}

#[test]
fn iam_policy_allows_exactly_the_tag_writes_the_daemon_makes() {
    let policy = policy();
    // What the executor sends (`src/execute.rs`): tag_group, mark_orphan,
    // unmark_orphan, untag_group (which removes all of our keys).
    let needed = [
        ("ec2:CreateTags", vec![OWNERSHIP_TAG, OWNER_TAG], false, "tag_group: the default group, adoption"),
        ("ec2:CreateTags", vec![OWNER_TAG], true, "tag_group: a claim of a mirror without an owner"),
        ("ec2:CreateTags", vec![ORPHANED_SINCE_TAG], true, "mark_orphan"),
        ("ec2:DeleteTags", vec![ORPHANED_SINCE_TAG], true, "unmark_orphan"),
        ("ec2:DeleteTags", vec![OWNERSHIP_TAG, OWNER_TAG, ORPHANED_SINCE_TAG], true, "untag_group"),
    ];
    for (action, keys, owned, what) in &needed {
        assert!(allows_tag_write(&policy, action, keys, *owned), "{what}: {action} {keys:?} is not allowed");
    }
    let forbidden = [
        ("ec2:CreateTags", vec![ORPHANED_SINCE_TAG], false, "marking a group that is not ours"),
        ("ec2:DeleteTags", vec![ORPHANED_SINCE_TAG], false, "unmarking a group that is not ours"),
        ("ec2:DeleteTags", vec![OWNERSHIP_TAG], false, "untagging a group that is not ours"),
        ("ec2:CreateTags", vec![OWNERSHIP_TAG, "Name"], false, "other tags with the ownership tag"),
        ("ec2:CreateTags", vec![OWNER_TAG, "Name"], true, "other tags with the owner tag"),
        ("ec2:DeleteTags", vec![OWNER_TAG], false, "removing an owner tag from a group that is not a mirror"),
        ("ec2:CreateTags", vec![ORPHANED_SINCE_TAG, "team"], true, "other tags with the mark"),
        ("ec2:DeleteTags", vec!["team"], true, "deleting another tag of a mirror"),
        ("ec2:DeleteTags", vec![], true, "deleting every tag of a mirror"),
    ];
    for (action, keys, owned, what) in &forbidden {
        assert!(!allows_tag_write(&policy, action, keys, *owned), "{what}: {action} {keys:?} is allowed");
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
        "conflict_foreign_owner",
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
        "orphan_tag_invalid",
        "state_lost",
    ];
    for kind in documented {
        let parsed: WarningKind =
            serde_json::from_value(Value::from(kind)).unwrap_or_else(|e| panic!("{kind:?} is not a warning kind: {e}"));
        assert_eq!(parsed.as_str(), kind);
        assert!(runbook.contains(&format!("`{kind}`")), "docs/operations.md does not explain `{kind}`");
    }
}

/// The owner-restricted variant (`docs/iam-policy-owner.json`, explained in
/// `docs/iam.md`): the same policy, plus on every write to an existing group
/// "its owner tag, if any, is this deployment's", and on every write of the
/// owner tag (a create, a claim) "the value is this deployment's".
#[test]
fn the_owner_restricted_policy_is_the_policy_plus_owner_conditions() {
    let variant: Value =
        serde_json::from_str(&read("docs/iam-policy-owner.json")).expect("docs/iam-policy-owner.json is valid JSON");
    let resource_tag = format!("aws:ResourceTag/{OWNER_TAG}");
    let request_tag = format!("aws:RequestTag/{OWNER_TAG}");
    // Its owner is one `daemon.owner` accepts.
    let owner = variant["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["Condition"]["StringEquals"][&request_tag].as_str())
        .expect("a statement names the owner");
    let config = format!("[aws]\nregion = \"us-east-1\"\n[daemon]\nowner = \"{owner}\"\n");
    assert!(classiclink_mirror::config::Config::from_toml_str(&config, None).is_ok(), "{owner:?}");

    for statement in statements(&variant) {
        let condition = &statement["Condition"];
        let on_groups = strings(&statement["Resource"]) == ["arn:aws:ec2:*:*:security-group/*"];
        let at_creation = condition["StringEquals"]["ec2:CreateAction"] == "CreateSecurityGroup";
        let writes_existing = actions(statement).iter().any(|a| {
            [
                "ec2:AuthorizeSecurityGroupIngress",
                "ec2:RevokeSecurityGroupIngress",
                "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
                "ec2:DeleteSecurityGroup",
                "ec2:DeleteTags",
                "ec2:CreateTags",
            ]
            .contains(a)
        });
        if on_groups && writes_existing && !at_creation {
            assert_eq!(
                condition["StringEqualsIfExists"][&resource_tag], owner,
                "a write to an existing group must be limited to ours or unowned ones: {statement}"
            );
        }
        let sets_owner = strings(&condition["ForAllValues:StringEquals"]["aws:TagKeys"]).contains(&OWNER_TAG);
        let creates = actions(statement).contains(&"ec2:CreateSecurityGroup") && on_groups;
        if creates || (sets_owner && actions(statement).contains(&"ec2:CreateTags")) {
            assert_eq!(
                condition["StringEquals"][&request_tag], owner,
                "a write of the owner tag must write ours: {statement}"
            );
        }
    }

    // Without its owner conditions it is the shipped policy, statement for statement.
    let mut stripped = variant.clone();
    for statement in stripped["Statement"].as_array_mut().unwrap() {
        let Some(condition) = statement.get_mut("Condition").and_then(Value::as_object_mut) else { continue };
        for operator in condition.values_mut() {
            if let Some(keys) = operator.as_object_mut() {
                keys.retain(|key, _| !key.ends_with(OWNER_TAG));
            }
        }
        condition.retain(|_, keys| keys.as_object().is_none_or(|k| !k.is_empty()));
        if condition.is_empty() {
            statement.as_object_mut().unwrap().remove("Condition");
        }
    }
    assert_eq!(stripped, policy(), "docs/iam-policy-owner.json and docs/iam-policy.json differ beyond the owner");
}
