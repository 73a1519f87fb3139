//! The event documents EventBridge delivers for EC2, as the emulator
//! publishes them: the EventBridge envelope (`version`, `id`,
//! `detail-type`, `source`, `account`, `time`, `region`, `resources`,
//! `detail`) around either a CloudTrail record ("AWS API Call via
//! CloudTrail": `eventName`, `requestParameters`, `responseElements`,
//! `userIdentity`, `userAgent`, …) or an "EC2 Instance State-change
//! Notification" (`instance-id`, `state`).
//!
//! The `requestParameters` shapes follow CloudTrail's records of EC2 calls:
//! lists as `{"items": [...]}` (`ipPermissions`, `resourcesSet`, `tagSet`,
//! `instancesSet`, `groupSet`), ids as `groupId` / `instanceId` /
//! `resourceId` / `vpcId`.

use serde_json::{Value, json};

use crate::model::{Grant, GroupId, InstanceId, InstanceState, VpcId};

use super::super::permissions::IpPermission;

/// `detail-type` of a CloudTrail-delivered API call.
pub const API_CALL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";
/// `detail-type` of an instance state change.
pub const STATE_CHANGE_DETAIL_TYPE: &str = "EC2 Instance State-change Notification";
/// `source` of every EC2 event.
pub const EC2_SOURCE: &str = "aws.ec2";
/// CloudTrail's `eventSource` for EC2.
pub const EC2_EVENT_SOURCE: &str = "ec2.amazonaws.com";

/// What one accepted write publishes, before it is wrapped in an envelope.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Published {
    /// An API call as CloudTrail records it.
    Call {
        /// `eventName`: the EC2 action.
        event_name: &'static str,
        /// `requestParameters`.
        request: Value,
        /// `responseElements` (`null` when EC2 records none).
        response: Value,
    },
    /// An instance entered `state`, `after` the request (a pending launch
    /// turns `running` later).
    StateChange {
        /// The instance.
        instance: InstanceId,
        /// Its new state.
        state: InstanceState,
        /// How long after the request the change happens.
        after: std::time::Duration,
    },
}

/// Who made a request, as CloudTrail records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The request's `User-Agent` (CloudTrail's `userAgent`).
    pub user_agent: String,
    /// The access key id of the request's SigV4 credential, if signed.
    pub access_key_id: Option<String>,
    /// The region of the SigV4 credential scope, if signed.
    pub region: Option<String>,
    /// The client's address (`sourceIPAddress`).
    pub source_ip: String,
}

impl Caller {
    /// The caller of requests made in-process (the `Ec2` port, world building).
    #[must_use]
    pub fn in_process() -> Self {
        Self {
            user_agent: "classiclink-mirror-emulator/in-process".to_owned(),
            access_key_id: None,
            region: None,
            source_ip: "127.0.0.1".to_owned(),
        }
    }

    /// Reads the caller from a request's `User-Agent` and SigV4
    /// `Authorization` header (`… Credential=AKID/20240101/us-east-1/ec2/aws4_request, …`).
    #[must_use]
    pub fn from_headers(user_agent: Option<&str>, authorization: Option<&str>, source_ip: String) -> Self {
        let scope = authorization
            .and_then(|a| a.split("Credential=").nth(1))
            .map(|c| c.split([',', ' ']).next().unwrap_or_default().split('/').collect::<Vec<_>>());
        let part = |i: usize| scope.as_ref().and_then(|s| s.get(i)).filter(|p| !p.is_empty()).map(|p| (*p).to_owned());
        Self {
            user_agent: user_agent.unwrap_or_default().to_owned(),
            access_key_id: part(0),
            region: part(2),
            source_ip,
        }
    }
}

/// Where and when an event happened: the envelope's fields.
#[derive(Clone, Debug)]
pub(crate) struct Envelope<'a> {
    /// The event's `id` (also the CloudTrail `eventID`).
    pub id: &'a str,
    /// The account.
    pub account: &'a str,
    /// The region.
    pub region: &'a str,
    /// RFC 3339 time, seconds precision.
    pub time: &'a str,
}

/// The whole event document of one published item.
pub(crate) fn document(published: &Published, envelope: &Envelope<'_>, caller: &Caller) -> Value {
    let Envelope { id, account, region, time } = *envelope;
    match published {
        Published::Call { event_name, request, response } => {
            let user_name = "emulator";
            json!({
                "version": "0",
                "id": id,
                "detail-type": API_CALL_DETAIL_TYPE,
                "source": EC2_SOURCE,
                "account": account,
                "time": time,
                "region": region,
                "resources": [],
                "detail": {
                    "eventVersion": "1.09",
                    "userIdentity": {
                        "type": "IAMUser",
                        "principalId": "AIDAEMULATOREXAMPLE01",
                        "arn": format!("arn:aws:iam::{account}:user/{user_name}"),
                        "accountId": account,
                        "accessKeyId": caller.access_key_id.clone().unwrap_or_default(),
                        "userName": user_name,
                    },
                    "eventTime": time,
                    "eventSource": EC2_EVENT_SOURCE,
                    "eventName": event_name,
                    "awsRegion": region,
                    "sourceIPAddress": caller.source_ip,
                    "userAgent": caller.user_agent,
                    "requestParameters": request,
                    "responseElements": response,
                    "requestID": id,
                    "eventID": id,
                    "readOnly": false,
                    "eventType": "AwsApiCall",
                    "managementEvent": true,
                    "recipientAccountId": account,
                    "eventCategory": "Management",
                },
            })
        }
        Published::StateChange { instance, state, .. } => json!({
            "version": "0",
            "id": id,
            "detail-type": STATE_CHANGE_DETAIL_TYPE,
            "source": EC2_SOURCE,
            "account": account,
            "time": time,
            "region": region,
            "resources": [format!("arn:aws:ec2:{region}:{account}:instance/{instance}")],
            "detail": { "instance-id": instance.as_str(), "state": state.as_ec2() },
        }),
    }
}

fn items(values: impl IntoIterator<Item = Value>) -> Value {
    let items: Vec<Value> = values.into_iter().collect();
    if items.is_empty() { json!({}) } else { json!({ "items": items }) }
}

fn described(value: Value, description: Option<&str>) -> Value {
    let mut value = value;
    if let (Some(d), Some(object)) = (description, value.as_object_mut()) {
        object.insert("description".to_owned(), json!(d));
    }
    value
}

/// One `IpPermission` in CloudTrail's shape.
fn permission(p: &IpPermission) -> Value {
    let mut value = json!({
        "ipProtocol": p.ip_protocol,
        "groups": items(p.user_id_group_pairs.iter().map(|g| {
            let mut pair = serde_json::Map::new();
            for (key, field) in [("groupId", &g.group_id), ("groupName", &g.group_name), ("userId", &g.user_id)] {
                if let Some(v) = field {
                    pair.insert(key.to_owned(), json!(v));
                }
            }
            described(Value::Object(pair), g.description.as_deref())
        })),
        "ipRanges": items(p.ip_ranges.iter().map(|r| described(json!({ "cidrIp": r.cidr }), r.description.as_deref()))),
        "ipv6Ranges": items(
            p.ipv6_ranges.iter().map(|r| described(json!({ "cidrIpv6": r.cidr }), r.description.as_deref())),
        ),
        "prefixListIds": items(
            p.prefix_list_ids
                .iter()
                .map(|l| described(json!({ "prefixListId": l.prefix_list_id }), l.description.as_deref())),
        ),
    });
    if let Some(object) = value.as_object_mut() {
        if let Some(from) = p.from_port {
            object.insert("fromPort".to_owned(), json!(from));
        }
        if let Some(to) = p.to_port {
            object.insert("toPort".to_owned(), json!(to));
        }
    }
    value
}

/// `AuthorizeSecurityGroupIngress` / `RevokeSecurityGroupIngress` /
/// `UpdateSecurityGroupRuleDescriptionsIngress` with EC2-shaped permissions.
pub(crate) fn ingress(event_name: &'static str, group: &GroupId, permissions: &[IpPermission]) -> Published {
    Published::Call {
        event_name,
        request: json!({
            "groupId": group.as_str(),
            "ipPermissions": items(permissions.iter().map(permission)),
        }),
        response: json!({ "_return": true }),
    }
}

/// The same from the engine's grants.
pub(crate) fn ingress_grants(event_name: &'static str, group: &GroupId, grants: &[Grant], account: &str) -> Published {
    ingress(event_name, group, &IpPermission::group_grants(grants, account))
}

/// `CreateSecurityGroup`.
pub(crate) fn create_group(name: &str, description: &str, vpc: Option<&VpcId>, id: &GroupId) -> Published {
    let mut request = json!({ "groupName": name, "groupDescription": description });
    if let (Some(vpc), Some(object)) = (vpc, request.as_object_mut()) {
        object.insert("vpcId".to_owned(), json!(vpc.as_str()));
    }
    Published::Call {
        event_name: "CreateSecurityGroup",
        request,
        response: json!({ "_return": true, "groupId": id.as_str() }),
    }
}

/// `DeleteSecurityGroup`.
pub(crate) fn delete_group(id: &GroupId) -> Published {
    Published::Call {
        event_name: "DeleteSecurityGroup",
        request: json!({ "groupId": id.as_str() }),
        response: json!({ "_return": true, "groupId": id.as_str() }),
    }
}

/// `CreateTags` / `DeleteTags` on groups; a tag without value is a key only.
pub(crate) fn tags<'a>(
    event_name: &'static str,
    groups: &[GroupId],
    tags: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Published {
    Published::Call {
        event_name,
        request: json!({
            "resourcesSet": items(groups.iter().map(|g| json!({ "resourceId": g.as_str() }))),
            "tagSet": items(tags.into_iter().map(|(key, value)| match value {
                Some(value) => json!({ "key": key, "value": value }),
                None => json!({ "key": key }),
            })),
        }),
        response: json!({ "_return": true }),
    }
}

/// `AttachClassicLinkVpc`.
pub(crate) fn attach(instance: &InstanceId, vpc: &VpcId, groups: &[GroupId]) -> Published {
    Published::Call {
        event_name: "AttachClassicLinkVpc",
        request: json!({
            "instanceId": instance.as_str(),
            "vpcId": vpc.as_str(),
            "groupSet": items(groups.iter().map(|g| json!({ "groupId": g.as_str() }))),
        }),
        response: json!({ "_return": true }),
    }
}

/// `DetachClassicLinkVpc`.
pub(crate) fn detach(instance: &InstanceId, vpc: &VpcId) -> Published {
    Published::Call {
        event_name: "DetachClassicLinkVpc",
        request: json!({ "instanceId": instance.as_str(), "vpcId": vpc.as_str() }),
        response: json!({ "_return": true }),
    }
}

/// `EnableVpcClassicLink`.
pub(crate) fn enable_classic_link(vpc: &VpcId) -> Published {
    Published::Call {
        event_name: "EnableVpcClassicLink",
        request: json!({ "vpcId": vpc.as_str() }),
        response: json!({ "_return": true }),
    }
}

/// `CreateVpc`.
pub(crate) fn create_vpc(cidr: &str, id: &VpcId) -> Published {
    Published::Call {
        event_name: "CreateVpc",
        request: json!({ "cidrBlock": cidr }),
        response: json!({ "vpc": { "vpcId": id.as_str(), "cidrBlock": cidr } }),
    }
}

/// `RunInstances`: the call, then each instance's `pending` and (`after`
/// `pending_for`) `running` notifications.
pub(crate) fn run_instances(
    groups: &[GroupId],
    count: usize,
    launched: &[InstanceId],
    pending_for: Option<std::time::Duration>,
) -> Vec<Published> {
    let state = if pending_for.is_some() { InstanceState::Pending } else { InstanceState::Running };
    let group_set = items(groups.iter().map(|g| json!({ "groupId": g.as_str() })));
    let mut out = vec![Published::Call {
        event_name: "RunInstances",
        request: json!({
            "instancesSet": { "items": [{ "imageId": "ami-emulator", "minCount": count, "maxCount": count }] },
            "groupSet": group_set.clone(),
        }),
        response: json!({
            "groupSet": group_set,
            "instancesSet": items(launched.iter().map(|i| json!({
                "instanceId": i.as_str(),
                "instanceState": { "code": state_code(state), "name": state.as_ec2() },
            }))),
        }),
    }];
    for instance in launched {
        out.push(Published::StateChange {
            instance: instance.clone(),
            state: InstanceState::Pending,
            after: std::time::Duration::ZERO,
        });
        out.push(Published::StateChange {
            instance: instance.clone(),
            state: InstanceState::Running,
            after: pending_for.unwrap_or_default(),
        });
    }
    out
}

/// `StopInstances` / `StartInstances` / `TerminateInstances`: the call, then
/// each instance's notifications (the transitional state first, as EC2 sends
/// it, then the state the emulator moved it to at once).
pub(crate) fn state_changes(event_name: &'static str, changes: &[super::super::StateChange]) -> Vec<Published> {
    let mut out = vec![Published::Call {
        event_name,
        request: json!({
            "instancesSet": items(changes.iter().map(|c| json!({ "instanceId": c.instance_id.as_str() }))),
        }),
        response: json!({
            "instancesSet": items(changes.iter().map(|c| json!({
                "instanceId": c.instance_id.as_str(),
                "currentState": { "code": state_code(c.current), "name": c.current.as_ec2() },
                "previousState": { "code": state_code(c.previous), "name": c.previous.as_ec2() },
            }))),
        }),
    }];
    for change in changes.iter().filter(|c| c.current != c.previous) {
        let transitional = match change.current {
            InstanceState::Stopped => Some(InstanceState::Stopping),
            InstanceState::Terminated => Some(InstanceState::ShuttingDown),
            InstanceState::Running => Some(InstanceState::Pending),
            _ => None,
        };
        for state in transitional.into_iter().chain([change.current]) {
            out.push(Published::StateChange {
                instance: change.instance_id.clone(),
                state,
                after: std::time::Duration::ZERO,
            });
        }
    }
    out
}

/// EC2's numeric state code.
fn state_code(state: InstanceState) -> i64 {
    match state {
        InstanceState::Pending => 0,
        InstanceState::Running => 16,
        InstanceState::ShuttingDown => 32,
        InstanceState::Terminated => 48,
        InstanceState::Stopping => 64,
        InstanceState::Stopped => 80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str) -> GroupId {
        GroupId::try_new(id).unwrap()
    }

    #[test]
    fn callers_are_read_from_the_sigv4_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=abc";
        let caller = Caller::from_headers(Some("aws-sdk-rust/1 app/x"), Some(auth), "10.0.0.1".into());
        assert_eq!(caller.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(caller.region.as_deref(), Some("eu-west-1"));
        assert_eq!(caller.user_agent, "aws-sdk-rust/1 app/x");
        let unsigned = Caller::from_headers(None, Some("Bearer x"), "10.0.0.1".into());
        assert_eq!((unsigned.access_key_id, unsigned.region), (None, None));
    }

    #[test]
    fn an_api_call_has_the_eventbridge_envelope_and_cloudtrail_detail() {
        let published = tags("CreateTags", &[group("sg-1")], [("team", Some("db")), ("gone", None)]);
        let envelope =
            Envelope { id: "e-1", account: "123456789012", region: "us-east-1", time: "2026-01-01T00:00:00Z" };
        let doc = document(&published, &envelope, &Caller::in_process());
        assert_eq!(doc["detail-type"], API_CALL_DETAIL_TYPE);
        assert_eq!(doc["source"], "aws.ec2");
        assert_eq!(doc["account"], "123456789012");
        assert_eq!(doc["detail"]["eventSource"], "ec2.amazonaws.com");
        assert_eq!(doc["detail"]["eventName"], "CreateTags");
        assert_eq!(doc["detail"]["awsRegion"], "us-east-1");
        assert_eq!(doc["detail"]["userIdentity"]["accountId"], "123456789012");
        assert_eq!(doc["detail"]["requestParameters"]["resourcesSet"]["items"][0]["resourceId"], "sg-1");
        assert_eq!(doc["detail"]["requestParameters"]["tagSet"]["items"][1], json!({ "key": "gone" }));
    }

    #[test]
    fn a_state_change_names_the_instance_and_its_arn() {
        let instance = InstanceId::try_new("i-1").unwrap();
        let published =
            Published::StateChange { instance, state: InstanceState::Running, after: std::time::Duration::ZERO };
        let envelope =
            Envelope { id: "e-2", account: "123456789012", region: "eu-west-1", time: "2026-01-01T00:00:00Z" };
        let doc = document(&published, &envelope, &Caller::in_process());
        assert_eq!(doc["detail-type"], STATE_CHANGE_DETAIL_TYPE);
        assert_eq!(doc["detail"], json!({ "instance-id": "i-1", "state": "running" }));
        assert_eq!(doc["resources"][0], "arn:aws:ec2:eu-west-1:123456789012:instance/i-1");
    }

    #[test]
    fn ingress_permissions_use_cloudtrail_item_lists() {
        let permission = IpPermission {
            ip_protocol: "tcp".into(),
            from_port: Some(22),
            to_port: Some(22),
            ip_ranges: vec![super::super::super::permissions::CidrSource {
                cidr: "10.0.0.0/8".into(),
                description: Some("ssh".into()),
            }],
            ..IpPermission::default()
        };
        let Published::Call { request, .. } = ingress("AuthorizeSecurityGroupIngress", &group("sg-1"), &[permission])
        else {
            panic!("a call")
        };
        let item = &request["ipPermissions"]["items"][0];
        assert_eq!(request["groupId"], "sg-1");
        assert_eq!(item["fromPort"], 22);
        assert_eq!(item["ipRanges"]["items"][0], json!({ "cidrIp": "10.0.0.0/8", "description": "ssh" }));
        assert_eq!(item["groups"], json!({}));
    }
}
