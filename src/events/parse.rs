//! One event message → the groups and instances it marks dirty, or why it
//! is ignored. Pure and total: any body, however broken, gives a
//! [`Verdict`] (the proptest below feeds it arbitrary JSON and text).
//!
//! What is read, and nothing more:
//!
//! - the EventBridge envelope: `source` (`aws.ec2`), `detail-type`,
//!   `account`, `region`, `id`, `time`;
//! - "AWS API Call via CloudTrail": `detail.eventName` (one of
//!   [`WATCHED_CALLS`]), `detail.errorCode` (a failed call changed nothing),
//!   `detail.userAgent` (our own writes carry `app/classiclink-mirror`), and
//!   every `sg-…` / `i-…` id anywhere in `detail.requestParameters` and
//!   `detail.responseElements` — robust to CloudTrail's shapes, which
//!   differ per call and over time; naming a source group of a rule too
//!   only describes one group more;
//! - "EC2 Instance State-change Notification": `detail.instance-id` (and
//!   `detail.state`, which must be present).

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::Value;

use crate::model::{GroupId, InstanceId};

use super::OWN_APP_NAME;

/// `detail-type` of a CloudTrail-delivered API call.
pub const API_CALL: &str = "AWS API Call via CloudTrail";
/// `detail-type` of an instance state change.
pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
/// `source` of EC2's events.
pub const EC2_SOURCE: &str = "aws.ec2";

/// The EC2 calls that can change what is mirrored.
pub const WATCHED_CALLS: [&str; 15] = [
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupEgress",
    "UpdateSecurityGroupRuleDescriptionsIngress",
    "CreateTags",
    "DeleteTags",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
    "AttachClassicLinkVpc",
    "DetachClassicLinkVpc",
    "RunInstances",
    "StartInstances",
    "StopInstances",
    "TerminateInstances",
];

/// More ids than this in one event: a targeted pass would not be small;
/// the event asks for a full pass instead.
pub const MAX_IDS_PER_EVENT: usize = 1000;

/// What the daemon expects of its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The account; `None` accepts any (the daemon has not learnt it yet).
    pub account: Option<String>,
    /// The region the daemon reconciles.
    pub region: String,
}

/// Why an event is ignored (a metric label each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IgnoreReason {
    /// Not JSON, not an EventBridge envelope, or a field of the wrong shape.
    Malformed,
    /// Another account's event.
    OtherAccount,
    /// Another region's event.
    OtherRegion,
    /// Caused by our own write.
    OwnEcho,
    /// A call that failed (CloudTrail records those too): nothing changed.
    FailedCall,
    /// Not an event that can change what is mirrored.
    Irrelevant,
}

impl IgnoreReason {
    /// Every reason, for metric initialisation.
    pub const ALL: [Self; 6] =
        [Self::Malformed, Self::OtherAccount, Self::OtherRegion, Self::OwnEcho, Self::FailedCall, Self::Irrelevant];

    /// A metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::OtherAccount => "other_account",
            Self::OtherRegion => "other_region",
            Self::OwnEcho => "own_echo",
            Self::FailedCall => "failed_call",
            Self::Irrelevant => "irrelevant",
        }
    }
}

/// What an event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The event's `id` (duplicates delivered by EventBridge share it).
    pub event_id: String,
    /// `eventName`, or `state-change`.
    pub what: String,
    /// The event's `time`, if it parses.
    pub time: Option<SystemTime>,
    /// Groups to look at again.
    pub groups: BTreeSet<GroupId>,
    /// Instances to look at again.
    pub instances: BTreeSet<InstanceId>,
    /// Something changed that ids cannot narrow down: run a full pass soon.
    pub everything: bool,
    /// Who made the call: CloudTrail's `userIdentity.arn`, when present (a
    /// state change names nobody).
    pub principal: Option<String>,
}

/// The longest `userIdentity.arn` kept (IAM ARNs are at most 2,048
/// characters); a longer one is not kept.
pub const MAX_PRINCIPAL_LEN: usize = 2048;

/// The outcome of parsing one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Mark these dirty.
    Act(Hint),
    /// Delete and count.
    Ignore(IgnoreReason),
}

fn text<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// Parses one message body.
#[must_use]
pub fn parse(body: &str, expected: &Expected) -> Verdict {
    match parse_inner(body, expected) {
        Ok(hint) => Verdict::Act(hint),
        Err(reason) => Verdict::Ignore(reason),
    }
}

fn parse_inner(body: &str, expected: &Expected) -> Result<Hint, IgnoreReason> {
    use IgnoreReason::*;
    let event: Value = serde_json::from_str(body).map_err(|_| Malformed)?;
    let (Some(source), Some(detail_type), Some(account), Some(region), Some(id)) = (
        text(&event, "source"),
        text(&event, "detail-type"),
        text(&event, "account"),
        text(&event, "region"),
        text(&event, "id"),
    ) else {
        return Err(Malformed);
    };
    let detail = event.get("detail").filter(|d| d.is_object()).ok_or(Malformed)?;
    if source != EC2_SOURCE {
        return Err(Irrelevant);
    }
    if expected.account.as_deref().is_some_and(|a| a != account) {
        return Err(OtherAccount);
    }
    if region != expected.region {
        return Err(OtherRegion);
    }
    let mut hint = Hint {
        event_id: id.to_owned(),
        what: String::new(),
        time: text(&event, "time").and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
        groups: BTreeSet::new(),
        instances: BTreeSet::new(),
        everything: false,
        principal: None,
    };
    match detail_type {
        API_CALL => {
            let name = text(detail, "eventName").ok_or(Malformed)?;
            if !WATCHED_CALLS.contains(&name) {
                return Err(Irrelevant);
            }
            if detail.get("errorCode").is_some_and(|c| !c.is_null()) {
                return Err(FailedCall);
            }
            let agent = text(detail, "userAgent").unwrap_or_default();
            let own = format!("app/{OWN_APP_NAME}");
            if agent.split_whitespace().any(|token| token == own) {
                return Err(OwnEcho);
            }
            hint.what = name.to_owned();
            hint.principal = detail
                .get("userIdentity")
                .and_then(|identity| text(identity, "arn"))
                .filter(|arn| !arn.is_empty() && arn.len() <= MAX_PRINCIPAL_LEN)
                .map(str::to_owned);
            let mut budget = MAX_IDS_PER_EVENT;
            for part in ["requestParameters", "responseElements"] {
                if let Some(value) = detail.get(part) {
                    collect_ids(value, &mut hint, &mut budget);
                }
            }
            if budget == 0 {
                hint.groups.clear();
                hint.instances.clear();
                hint.everything = true;
            } else if hint.groups.is_empty() && hint.instances.is_empty() {
                if matches!(name, "CreateTags" | "DeleteTags") {
                    // Tags on VPCs, subnets, volumes …: nothing we mirror.
                    return Err(Irrelevant);
                }
                hint.everything = true;
            }
        }
        STATE_CHANGE => {
            let instance = text(detail, "instance-id").and_then(|i| InstanceId::try_new(i).ok()).ok_or(Malformed)?;
            text(detail, "state").ok_or(Malformed)?;
            hint.what = "state-change".to_owned();
            hint.instances.insert(instance);
        }
        _ => return Err(Irrelevant),
    }
    Ok(hint)
}

/// Every `sg-…` and `i-…` string under `value`, until `budget` ids are
/// taken (then `budget` is 0). serde_json's nesting limit bounds the depth.
fn collect_ids(value: &Value, hint: &mut Hint, budget: &mut usize) {
    if *budget == 0 {
        return;
    }
    match value {
        Value::String(s) => {
            if s.starts_with("sg-") {
                if let Ok(group) = GroupId::try_new(s.as_str())
                    && hint.groups.insert(group)
                {
                    *budget -= 1;
                }
            } else if s.starts_with("i-")
                && let Ok(instance) = InstanceId::try_new(s.as_str())
                && hint.instances.insert(instance)
            {
                *budget -= 1;
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, hint, budget)),
        Value::Object(map) => map.values().for_each(|v| collect_ids(v, hint, budget)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn expected() -> Expected {
        Expected { account: Some("123456789012".into()), region: "us-east-1".into() }
    }

    fn call(name: &str, request: Value) -> Value {
        json!({
            "version": "0", "id": "6f0c-1", "detail-type": API_CALL, "source": "aws.ec2",
            "account": "123456789012", "time": "2026-12-06T08:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {
                "eventSource": "ec2.amazonaws.com", "eventName": name, "userAgent": "aws-cli/2.15",
                "requestParameters": request, "responseElements": { "_return": true },
            },
        })
    }

    fn verdict(event: &Value) -> Verdict {
        parse(&event.to_string(), &expected())
    }

    fn acted(event: &Value) -> Hint {
        match verdict(event) {
            Verdict::Act(hint) => hint,
            other => panic!("expected a hint, got {other:?}"),
        }
    }

    fn groups(ids: &[&str]) -> BTreeSet<GroupId> {
        ids.iter().map(|i| GroupId::try_new(*i).unwrap()).collect()
    }

    #[test]
    fn the_callers_arn_is_kept_as_the_principal_and_an_absent_or_oversized_one_is_not() {
        let mut event = call("RevokeSecurityGroupIngress", json!({ "groupId": "sg-0a1" }));
        assert_eq!(acted(&event).principal, None);
        let arn = "arn:aws:sts::123456789012:assumed-role/ops/alice";
        event["detail"]["userIdentity"] = json!({ "type": "AssumedRole", "arn": arn });
        assert_eq!(acted(&event).principal.as_deref(), Some(arn));
        event["detail"]["userIdentity"]["arn"] = json!("a".repeat(MAX_PRINCIPAL_LEN + 1));
        assert_eq!(acted(&event).principal, None);
        event["detail"]["userIdentity"]["arn"] = json!(42);
        assert_eq!(acted(&event).principal, None, "not a string: no principal, the event still counts");
    }

    #[test]
    fn a_rule_change_marks_its_group_and_referenced_groups_dirty() {
        let event = call(
            "AuthorizeSecurityGroupIngress",
            json!({ "groupId": "sg-0a1", "ipPermissions": { "items": [{
                "ipProtocol": "tcp", "fromPort": 5432, "toPort": 5432,
                "groups": { "items": [{ "groupId": "sg-0b2", "userId": "123456789012" }] },
                "ipRanges": {} }] } }),
        );
        let hint = acted(&event);
        assert_eq!(hint.groups, groups(&["sg-0a1", "sg-0b2"]));
        assert_eq!(hint.what, "AuthorizeSecurityGroupIngress");
        assert_eq!(hint.event_id, "6f0c-1");
        assert!(hint.time.is_some() && !hint.everything);
    }

    #[test]
    fn an_egress_rule_change_marks_its_group_and_referenced_groups_dirty() {
        for name in ["AuthorizeSecurityGroupEgress", "RevokeSecurityGroupEgress"] {
            let event = call(
                name,
                json!({ "groupId": "sg-0a1", "ipPermissions": { "items": [{
                    "ipProtocol": "tcp", "fromPort": 5432, "toPort": 5432,
                    "groups": { "items": [{ "groupId": "sg-0b2", "userId": "123456789012" }] } }] } }),
            );
            let hint = acted(&event);
            assert_eq!(hint.groups, groups(&["sg-0a1", "sg-0b2"]), "{name}");
            assert_eq!(hint.what, name);
        }
    }

    #[test]
    fn launches_and_state_changes_mark_instances_dirty() {
        let mut launch = call("RunInstances", json!({ "instancesSet": { "items": [{ "imageId": "ami-1" }] } }));
        launch["detail"]["responseElements"] = json!({ "instancesSet": { "items": [{ "instanceId": "i-0c3" }] } });
        let hint = acted(&launch);
        assert_eq!(hint.instances.iter().map(InstanceId::as_str).collect::<Vec<_>>(), ["i-0c3"]);
        let state = json!({
            "version": "0", "id": "x", "detail-type": STATE_CHANGE, "source": "aws.ec2",
            "account": "123456789012", "time": "2026-12-06T08:00:00Z", "region": "us-east-1",
            "detail": { "instance-id": "i-0c3", "state": "running" },
        });
        assert_eq!(acted(&state).instances, hint.instances);
    }

    #[test]
    fn other_accounts_regions_own_echoes_and_failed_calls_are_ignored() {
        let base = call("CreateTags", json!({ "resourcesSet": { "items": [{ "resourceId": "sg-1" }] } }));
        let mut other = base.clone();
        other["account"] = json!("999999999999");
        assert_eq!(verdict(&other), Verdict::Ignore(IgnoreReason::OtherAccount));
        let any_account = Expected { account: None, ..expected() };
        assert!(matches!(parse(&other.to_string(), &any_account), Verdict::Act(_)));
        let mut elsewhere = base.clone();
        elsewhere["region"] = json!("eu-west-1");
        assert_eq!(verdict(&elsewhere), Verdict::Ignore(IgnoreReason::OtherRegion));
        let mut ours = base.clone();
        ours["detail"]["userAgent"] = json!("aws-sdk-rust/1.3 os/linux lang/rust/1.95 app/classiclink-mirror");
        assert_eq!(verdict(&ours), Verdict::Ignore(IgnoreReason::OwnEcho));
        let mut lookalike = base.clone();
        lookalike["detail"]["userAgent"] = json!("aws-sdk-rust/1.3 app/classiclink-mirror-demo-operator");
        assert!(matches!(verdict(&lookalike), Verdict::Act(_)), "only our exact app name is an echo");
        let mut failed = base;
        failed["detail"]["errorCode"] = json!("Client.UnauthorizedOperation");
        assert_eq!(verdict(&failed), Verdict::Ignore(IgnoreReason::FailedCall));
    }

    #[test]
    fn unwatched_calls_other_sources_and_untracked_tags_are_irrelevant() {
        assert_eq!(verdict(&call("DescribeInstances", json!({}))), Verdict::Ignore(IgnoreReason::Irrelevant));
        let mut s3 = call("CreateTags", json!({}));
        s3["source"] = json!("aws.s3");
        assert_eq!(verdict(&s3), Verdict::Ignore(IgnoreReason::Irrelevant));
        let vpc_tag = call("CreateTags", json!({ "resourcesSet": { "items": [{ "resourceId": "vpc-1" }] } }));
        assert_eq!(verdict(&vpc_tag), Verdict::Ignore(IgnoreReason::Irrelevant));
        let mut other_type = vpc_tag;
        other_type["detail-type"] = json!("EBS Volume Notification");
        assert_eq!(verdict(&other_type), Verdict::Ignore(IgnoreReason::Irrelevant));
    }

    #[test]
    fn a_watched_call_naming_no_id_asks_for_a_full_pass() {
        let by_name = call("DeleteSecurityGroup", json!({ "groupName": "legacy" }));
        let hint = acted(&by_name);
        assert!(hint.everything && hint.groups.is_empty());
    }

    #[test]
    fn an_event_naming_too_many_ids_asks_for_a_full_pass() {
        let items: Vec<Value> = (0..=MAX_IDS_PER_EVENT).map(|i| json!({ "resourceId": format!("sg-{i:x}") })).collect();
        let hint = acted(&call("CreateTags", json!({ "resourcesSet": { "items": items } })));
        assert!(hint.everything && hint.groups.is_empty());
    }

    #[test]
    fn broken_documents_are_malformed() {
        for body in ["", "null", "[]", "{", "\"text\"", "{\"source\":\"aws.ec2\"}"] {
            assert_eq!(parse(body, &expected()), Verdict::Ignore(IgnoreReason::Malformed), "{body}");
        }
        let mut no_name = call("CreateTags", json!({}));
        no_name["detail"].as_object_mut().unwrap().remove("eventName");
        assert_eq!(verdict(&no_name), Verdict::Ignore(IgnoreReason::Malformed));
        let bad_instance = json!({
            "id": "x", "detail-type": STATE_CHANGE, "source": "aws.ec2", "account": "123456789012",
            "region": "us-east-1", "detail": { "instance-id": "not-an-id", "state": "running" },
        });
        assert_eq!(verdict(&bad_instance), Verdict::Ignore(IgnoreReason::Malformed));
        let deep = "[".repeat(10_000);
        assert_eq!(parse(&deep, &expected()), Verdict::Ignore(IgnoreReason::Malformed));
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof![
                "[a-z0-9-]{0,12}",
                Just("sg-1".to_owned()),
                Just("i-1".to_owned()),
                Just("aws.ec2".to_owned()),
                Just(API_CALL.to_owned()),
                Just(STATE_CHANGE.to_owned()),
                Just("123456789012".to_owned()),
                Just("us-east-1".to_owned()),
                Just("CreateTags".to_owned()),
                any::<String>(),
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("source".to_owned()),
                Just("detail-type".to_owned()),
                Just("detail".to_owned()),
                Just("account".to_owned()),
                Just("region".to_owned()),
                Just("id".to_owned()),
                Just("time".to_owned()),
                Just("eventName".to_owned()),
                Just("instance-id".to_owned()),
                Just("state".to_owned()),
                Just("requestParameters".to_owned()),
                Just("errorCode".to_owned()),
                Just("userAgent".to_owned()),
                "[a-zA-Z]{1,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics_and_hints_name_only_valid_ids(value in arbitrary_json()) {
            if let Verdict::Act(hint) = parse(&value.to_string(), &expected()) {
                prop_assert!(hint.everything || !hint.groups.is_empty() || !hint.instances.is_empty());
                prop_assert!(hint.groups.len() + hint.instances.len() <= MAX_IDS_PER_EVENT);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(body in any::<String>()) {
            let _ = parse(&body, &expected());
        }

        #[test]
        fn a_valid_event_with_any_field_replaced_never_panics(
            field in prop_oneof![Just("detail"), Just("account"), Just("region"), Just("id"), Just("source")],
            replacement in arbitrary_json(),
        ) {
            let mut event = call("AuthorizeSecurityGroupIngress", json!({ "groupId": "sg-1" }));
            event[field] = replacement;
            let _ = parse(&event.to_string(), &expected());
        }
    }
}
