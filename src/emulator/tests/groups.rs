//! Security groups: creation, deletion, ingress grants, descriptions, tags.

use std::collections::BTreeMap;

use super::*;
use crate::ec2::{CreateGroup, Ec2, Operation};
use crate::emulator::{CidrSource, GroupSource, IpPermission, Limits, codes};
use crate::model::{InstanceState, OWNERSHIP_TAG};

fn create_request(vpc: &VpcId, name: &str) -> CreateGroup {
    CreateGroup {
        vpc_id: vpc.clone(),
        name: name.into(),
        description: format!("Mirror of {name}"),
        tags: BTreeMap::from([(OWNERSHIP_TAG.to_owned(), "sg-0a1".to_owned())]),
    }
}

#[tokio::test]
async fn the_world_starts_with_the_classic_default_group_and_each_vpc_gets_one() {
    let (emu, vpc) = world_with_vpc().await;
    let classic = emu.peek_group(&emu.default_group(None).unwrap()).unwrap();
    assert_eq!(classic.name, "default");
    assert!(classic.is_classic());
    assert_eq!(classic.ingress.len(), 3, "tcp, udp and icmp from itself");
    let default = emu.peek_group(&emu.default_group(Some(&vpc)).unwrap()).unwrap();
    assert_eq!(default.vpc_id.as_ref(), Some(&vpc));
    assert_eq!(default.ingress.len(), 1);
    assert_eq!(default.ingress[0].key.peer, Peer::Group { group: default.id.clone(), owner: None });
    assert_eq!(default.owner_id, "123456789012");
}

#[tokio::test]
async fn ids_are_deterministic_counters_and_seeds_separate_worlds() {
    let (emu, vpc) = world_with_vpc().await;
    assert_eq!(emu.default_group(None).unwrap().as_str(), "sg-00000001");
    assert_eq!(vpc.as_str(), "vpc-00000001");
    assert_eq!(emu.default_group(Some(&vpc)).unwrap().as_str(), "sg-00000002");
    let seeded = Emulator::new(EmulatorOptions { id_seed: 0xab, ..EmulatorOptions::default() });
    assert_eq!(seeded.default_group(None).unwrap().as_str(), "sg-000000ab00000001");
}

#[tokio::test]
async fn create_security_group_through_the_port_tags_atomically() {
    let (emu, vpc) = world_with_vpc().await;
    let id = emu.create_security_group(&create_request(&vpc, "web")).await.unwrap();
    let group = emu.peek_group(&id).unwrap();
    assert_eq!(group.vpc_id.as_ref(), Some(&vpc));
    assert_eq!(group.description, "Mirror of web");
    assert_eq!(group.tags[OWNERSHIP_TAG], "sg-0a1");
}

#[tokio::test]
async fn a_taken_name_is_a_duplicate_in_the_same_network_only() {
    let (emu, vpc) = world_with_vpc().await;
    emu.create_security_group(&create_request(&vpc, "web")).await.unwrap();
    assert_eq!(code(emu.create_security_group(&create_request(&vpc, "web")).await), codes::GROUP_DUPLICATE);
    classic_group(&emu, "web").await;
    assert_eq!(code(emu.create_group(&NewGroup::classic("web", "again")).await), codes::GROUP_DUPLICATE);
    let other = emu.create_vpc(&NewVpc::default()).await.unwrap();
    vpc_group(&emu, &other, "web").await;
}

#[tokio::test]
async fn group_names_and_descriptions_are_validated() {
    let (emu, vpc) = world_with_vpc().await;
    let bad = |name: &str, description: &str| NewGroup::in_vpc(&vpc, name, description);
    assert_eq!(code(emu.create_group(&bad("sg-web", "x")).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.create_group(&bad("default", "x")).await), codes::GROUP_RESERVED);
    assert_eq!(code(emu.create_group(&bad("web", "caf\u{e9}")).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.create_group(&bad("web", &"d".repeat(256))).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.create_group(&bad("web", "")).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(
        code(emu.create_group(&NewGroup::classic("web", "x").tag("aws:reserved", "1")).await),
        codes::INVALID_PARAMETER_VALUE
    );
    let missing = VpcId::try_new("vpc-0badbad0").unwrap();
    assert_eq!(code(emu.create_group(&NewGroup::in_vpc(&missing, "web", "x")).await), codes::VPC_NOT_FOUND);
    // Classic descriptions may use any ASCII.
    emu.create_group(&NewGroup::classic("web", "a|b~c")).await.unwrap();
}

#[tokio::test]
async fn deleting_a_missing_group_is_not_found() {
    let (emu, _) = world_with_vpc().await;
    let missing = GroupId::try_new("sg-0badbad0").unwrap();
    assert_eq!(code(emu.delete_security_group(&missing).await), codes::GROUP_NOT_FOUND);
}

#[tokio::test]
async fn default_groups_cannot_be_deleted() {
    let (emu, vpc) = world_with_vpc().await;
    let vpc_default = emu.default_group(Some(&vpc)).unwrap();
    assert_eq!(code(emu.delete_security_group(&vpc_default).await), codes::CANNOT_DELETE);
    let classic_default = emu.default_group(None).unwrap();
    assert_eq!(code(emu.delete_security_group(&classic_default).await), codes::GROUP_RESERVED);
}

#[tokio::test]
async fn a_vpc_group_referenced_by_another_groups_rule_cannot_be_deleted() {
    let (emu, vpc) = world_with_vpc().await;
    let app = vpc_group(&emu, &vpc, "app").await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp_from(8080, &app)]).await.unwrap();
    assert_eq!(code(emu.delete_security_group(&app).await), codes::DEPENDENCY_VIOLATION);
    emu.revoke_ingress(&web, &[tcp_from(8080, &app)]).await.unwrap();
    emu.delete_security_group(&app).await.unwrap();
    assert!(emu.peek_group(&app).is_none());
    // The name is free again.
    vpc_group(&emu, &vpc, "app").await;
}

#[tokio::test]
async fn a_self_reference_does_not_block_deletion() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp_from(443, &web)]).await.unwrap();
    emu.delete_security_group(&web).await.unwrap();
}

#[tokio::test]
async fn a_vpc_group_used_by_a_link_or_an_instance_cannot_be_deleted() {
    let (emu, vpc) = world_with_vpc().await;
    let mirror = vpc_group(&emu, &vpc, "web").await;
    let instance = emu.run_instances(&crate::emulator::RunInstances::classic([])).await.unwrap().remove(0);
    emu.attach_classic_link_vpc(&instance, &vpc, std::slice::from_ref(&mirror)).await.unwrap();
    assert_eq!(code(emu.delete_security_group(&mirror).await), codes::DEPENDENCY_VIOLATION);
    emu.detach_classic_link_vpc(&instance, &vpc).await.unwrap();
    emu.delete_security_group(&mirror).await.unwrap();

    let member = vpc_group(&emu, &vpc, "db").await;
    let vpc_instance =
        emu.run_instances(&crate::emulator::RunInstances::in_vpc(&vpc, [member.clone()])).await.unwrap().remove(0);
    assert_eq!(code(emu.delete_security_group(&member).await), codes::DEPENDENCY_VIOLATION);
    emu.terminate_instances(&[vpc_instance]).await.unwrap();
    emu.delete_security_group(&member).await.unwrap();
}

#[tokio::test]
async fn classic_groups_in_use_answer_invalid_group_in_use() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    let app = classic_group(&emu, "app").await;
    emu.authorize_ingress(&app, &[tcp_from(80, &web)]).await.unwrap();
    assert_eq!(code(emu.delete_security_group(&web).await), codes::GROUP_IN_USE);
    let lb = classic_group(&emu, "lb").await;
    let instance = emu.run_instances(&crate::emulator::RunInstances::classic([lb.clone()])).await.unwrap();
    assert_eq!(code(emu.delete_security_group(&lb).await), codes::GROUP_IN_USE);
    emu.stop_instances(&instance).await.unwrap();
    assert_eq!(code(emu.delete_security_group(&lb).await), codes::GROUP_IN_USE, "stopped instances still use it");
    emu.terminate_instances(&instance).await.unwrap();
    emu.delete_security_group(&lb).await.unwrap();
    assert_eq!(
        emu.peek_instance(&instance[0]).unwrap().state,
        InstanceState::Terminated,
        "terminated instances stay visible"
    );
}

#[tokio::test]
async fn authorizing_an_existing_grant_is_a_duplicate_and_adds_nothing() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let batch = [tcp(80, "0.0.0.0/0"), tcp(443, "0.0.0.0/0")];
    assert_eq!(code(emu.authorize_ingress(&web, &batch).await), codes::PERMISSION_DUPLICATE);
    assert_eq!(emu.peek_group(&web).unwrap().ingress.len(), 1, "the batch is all or nothing");
    // A different description does not make it a different grant.
    let mut described = tcp(443, "0.0.0.0/0");
    described.description = Some("https".into());
    assert_eq!(code(emu.authorize_ingress(&web, &[described]).await), codes::PERMISSION_DUPLICATE);
}

#[tokio::test]
async fn the_same_permission_twice_in_one_request_is_an_invalid_parameter_value() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let twice = [tcp(443, "10.1.2.3/8"), tcp(443, "10.0.0.0/8")];
    assert_eq!(code(emu.authorize_ingress(&web, &twice).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.revoke_ingress(&web, &twice).await), codes::INVALID_PARAMETER_VALUE);
}

#[tokio::test]
async fn invalid_ports_and_protocols_are_invalid_parameter_values() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let reversed =
        Grant::new(Protocol::Tcp, Ports::Range { from: 443, to: 80 }, Peer::Ipv4("0.0.0.0/0".parse().unwrap()), None);
    assert_eq!(code(emu.authorize_ingress(&web, &[reversed]).await), codes::INVALID_PARAMETER_VALUE);
    let mut permission = IpPermission {
        ip_protocol: "gre".into(),
        from_port: None,
        to_port: None,
        ip_ranges: vec![CidrSource { cidr: "10.0.0.0/8".into(), description: None }],
        ..IpPermission::default()
    };
    assert_eq!(code(emu.authorize_permissions(&web, &[permission.clone()]).await), codes::INVALID_PARAMETER_VALUE);
    permission.ip_protocol = "udp".into();
    permission.from_port = Some(0);
    permission.to_port = Some(70000);
    assert_eq!(code(emu.authorize_permissions(&web, &[permission.clone()]).await), codes::INVALID_PARAMETER_VALUE);
    permission.to_port = Some(53);
    emu.authorize_permissions(&web, &[permission]).await.unwrap();
    let counters = emu.counters();
    assert_eq!(counters.errors(Operation::AuthorizeSecurityGroupIngress, codes::INVALID_PARAMETER_VALUE), 3);
}

#[tokio::test]
async fn bad_rule_descriptions_are_rejected() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let mut grant = tcp(22, "192.0.2.0/24");
    grant.description = Some("ops & admins".into());
    assert_eq!(code(emu.authorize_ingress(&web, &[grant]).await), codes::INVALID_PARAMETER_VALUE);
}

#[tokio::test]
async fn the_rules_quota_counts_each_grant_and_is_configurable() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let grants: Vec<Grant> = (0..60).map(|p| tcp(1000 + p, "10.0.0.0/8")).collect();
    emu.authorize_ingress(&web, &grants).await.unwrap();
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp(22, "10.0.0.0/8")]).await), codes::RULES_LIMIT);

    let small = Emulator::new(EmulatorOptions {
        limits: Limits { rules_per_group: 2, classic_rules_per_group: 3 },
        ..EmulatorOptions::default()
    });
    let vpc = small.create_vpc(&NewVpc::default()).await.unwrap();
    let group = vpc_group(&small, &vpc, "web").await;
    let three = [tcp(1, "10.0.0.0/8"), tcp(2, "10.0.0.0/8"), tcp(3, "10.0.0.0/8")];
    assert_eq!(code(small.authorize_ingress(&group, &three).await), codes::RULES_LIMIT);
    assert!(small.peek_group(&group).unwrap().ingress.is_empty());
    let classic = classic_group(&small, "web").await;
    small.authorize_ingress(&classic, &three).await.unwrap();
}

#[tokio::test]
async fn the_rules_quota_counts_each_cidr_of_one_permission_as_ec2_does() {
    let small = Emulator::new(EmulatorOptions {
        limits: Limits { rules_per_group: 2, classic_rules_per_group: 3 },
        ..EmulatorOptions::default()
    });
    let vpc = small.create_vpc(&NewVpc::default()).await.unwrap();
    let group = vpc_group(&small, &vpc, "web").await;
    let cidrs = |list: &[&str]| IpPermission {
        ip_protocol: "tcp".into(),
        from_port: Some(22),
        to_port: Some(22),
        ip_ranges: list.iter().map(|c| CidrSource { cidr: (*c).into(), description: None }).collect(),
        ..IpPermission::default()
    };
    // One permission, three CIDRs: three rules, above a quota of two.
    let three = cidrs(&["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16"]);
    assert_eq!(code(small.authorize_permissions(&group, &[three]).await), codes::RULES_LIMIT);
    assert!(small.peek_group(&group).unwrap().ingress.is_empty());
    small.authorize_permissions(&group, &[cidrs(&["10.0.0.0/8", "10.1.0.0/16"])]).await.unwrap();
    assert_eq!(small.peek_group(&group).unwrap().ingress.len(), 2);
}

#[tokio::test]
async fn revoking_a_missing_grant_from_a_vpc_group_fails_and_revokes_nothing() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let batch = [tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")];
    assert_eq!(code(emu.revoke_ingress(&web, &batch).await), codes::PERMISSION_NOT_FOUND);
    assert_eq!(emu.peek_group(&web).unwrap().ingress.len(), 1);
    emu.revoke_ingress(&web, &batch[..1]).await.unwrap();
    assert!(emu.peek_group(&web).unwrap().ingress.is_empty());
}

#[tokio::test]
async fn revoking_from_a_classic_group_revokes_what_exists_and_reports_the_rest() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let permissions: Vec<IpPermission> = [tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")]
        .iter()
        .map(|g| IpPermission::from_grant(g, "123456789012"))
        .collect();
    let unknown = emu.revoke_permissions(&web, &permissions).await.unwrap();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].from_port, Some(80));
    assert!(emu.peek_group(&web).unwrap().ingress.is_empty());
}

#[tokio::test]
async fn updating_the_description_of_a_missing_rule_is_not_found() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let mut missing = tcp(80, "0.0.0.0/0");
    missing.description = Some("http".into());
    assert_eq!(code(emu.update_ingress_descriptions(&web, &[missing]).await), codes::PERMISSION_NOT_FOUND);
}

#[tokio::test]
async fn descriptions_are_updated_in_place_and_cleared_when_omitted() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let mut described = tcp(443, "0.0.0.0/0");
    described.description = Some("office".into());
    emu.update_ingress_descriptions(&web, std::slice::from_ref(&described)).await.unwrap();
    assert_eq!(emu.peek_group(&web).unwrap().ingress, vec![described]);
    emu.update_ingress_descriptions(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    assert_eq!(emu.peek_group(&web).unwrap().ingress[0].description, None);
}

#[tokio::test]
async fn references_must_name_an_existing_group_of_the_same_network() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let missing = GroupId::try_new("sg-0badbad0").unwrap();
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp_from(80, &missing)]).await), codes::GROUP_NOT_FOUND);
    let other_vpc = emu.create_vpc(&NewVpc::default()).await.unwrap();
    let elsewhere = vpc_group(&emu, &other_vpc, "app").await;
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp_from(80, &elsewhere)]).await), codes::GROUP_NOT_FOUND);
    let classic = classic_group(&emu, "web").await;
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp_from(80, &classic)]).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.authorize_ingress(&classic, &[tcp_from(80, &web)]).await), codes::GROUP_NOT_FOUND);
}

#[tokio::test]
async fn foreign_references_are_kept_with_their_owner_and_own_account_references_lose_it() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    let app = classic_group(&emu, "app").await;
    let elb = GroupId::try_new("sg-843f59ed").unwrap();
    let foreign = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 80, to: 80 },
        Peer::Group { group: elb.clone(), owner: Some("amazon-elb".into()) },
        None,
    );
    let own = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 81, to: 81 },
        Peer::Group { group: app.clone(), owner: Some("123456789012".into()) },
        None,
    );
    emu.authorize_ingress(&web, &[foreign.clone(), own]).await.unwrap();
    let ingress = emu.peek_group(&web).unwrap().ingress;
    assert!(ingress.contains(&foreign));
    assert!(ingress.contains(&tcp_from(81, &app)));
}

#[tokio::test]
async fn classic_source_groups_may_be_named_by_group_name() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    let app = classic_group(&emu, "app").await;
    let permission = IpPermission {
        ip_protocol: "tcp".into(),
        from_port: Some(8080),
        to_port: Some(8080),
        user_id_group_pairs: vec![GroupSource { group_name: Some("web".into()), ..GroupSource::default() }],
        ..IpPermission::default()
    };
    emu.authorize_permissions(&app, &[permission]).await.unwrap();
    assert_eq!(emu.peek_group(&app).unwrap().ingress, vec![tcp_from(8080, &web)]);
}

#[tokio::test]
async fn tags_are_created_replaced_and_deleted_by_key_or_by_key_and_value() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let tags = BTreeMap::from([(OWNERSHIP_TAG.to_owned(), "sg-1".to_owned()), ("env".to_owned(), "prod".to_owned())]);
    emu.create_tags(&web, &tags).await.unwrap();
    emu.create_tags(&web, &BTreeMap::from([("env".to_owned(), "staging".to_owned())])).await.unwrap();
    assert_eq!(emu.peek_group(&web).unwrap().tags["env"], "staging");
    emu.untag_groups(std::slice::from_ref(&web), &[("env".into(), Some("prod".into()))]).await.unwrap();
    assert!(emu.peek_group(&web).unwrap().tags.contains_key("env"), "value did not match");
    emu.delete_tags(&web, &["env".into()]).await.unwrap();
    assert_eq!(emu.peek_group(&web).unwrap().tags.len(), 1);
    let missing = GroupId::try_new("sg-0badbad0").unwrap();
    assert_eq!(code(emu.create_tags(&missing, &tags).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.delete_tags(&missing, &["env".into()]).await), codes::GROUP_NOT_FOUND);
}

#[tokio::test]
async fn more_than_fifty_tags_is_a_tag_limit_error() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let tags: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    emu.create_tags(&web, &tags).await.unwrap();
    let more = BTreeMap::from([("one-more".to_owned(), "v".to_owned())]);
    assert_eq!(code(emu.create_tags(&web, &more).await), codes::TAG_LIMIT);
    // Replacing an existing key is fine.
    emu.create_tags(&web, &BTreeMap::from([("k1".to_owned(), "w".to_owned())])).await.unwrap();
}

#[tokio::test]
async fn classic_groups_accept_grants_and_reject_ipv6() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    emu.authorize_ingress(&web, &[tcp(22, "203.0.113.0/24")]).await.unwrap();
    let v6 = Grant::new(Protocol::All, Ports::None, Peer::Ipv6("2001:db8::/32".parse().unwrap()), None);
    assert_eq!(code(emu.authorize_ingress(&web, &[v6]).await), codes::INVALID_PARAMETER_VALUE);
}

#[tokio::test]
async fn enabling_classic_link_on_a_conflicting_cidr_fails() {
    let emu = Emulator::default();
    let vpc = emu
        .create_vpc(&NewVpc { cidr_block: Some("10.5.0.0/16".parse().unwrap()), ..NewVpc::default() })
        .await
        .unwrap();
    assert_eq!(code(emu.enable_vpc_classic_link(&vpc).await), codes::VPC_CIDR_CONFLICT);
    let ok = emu
        .create_vpc(&NewVpc { cidr_block: Some("172.31.0.0/16".parse().unwrap()), ..NewVpc::default() })
        .await
        .unwrap();
    emu.enable_vpc_classic_link(&ok).await.unwrap();
    emu.enable_vpc_classic_link(&ok).await.unwrap();
    assert!(emu.peek_vpc(&ok).unwrap().classic_link_enabled);
    let missing = VpcId::try_new("vpc-0badbad0").unwrap();
    assert_eq!(code(emu.enable_vpc_classic_link(&missing).await), codes::VPC_NOT_FOUND);
}

// ----- egress ------------------------------------------------------------------

fn all_out() -> Grant {
    Grant::new(Protocol::All, Ports::None, Peer::Ipv4("0.0.0.0/0".parse().unwrap()), None)
}

#[tokio::test]
async fn a_new_vpc_group_gets_the_default_allow_all_egress_and_a_classic_group_none() {
    let (emu, vpc) = world_with_vpc().await;
    let id = emu.create_security_group(&create_request(&vpc, "web")).await.unwrap();
    assert_eq!(emu.peek_group(&id).unwrap().egress, vec![all_out()]);
    let default = emu.peek_group(&emu.default_group(Some(&vpc)).unwrap()).unwrap();
    assert_eq!(default.egress, vec![all_out()]);
    let classic = classic_group(&emu, "old").await;
    assert!(emu.peek_group(&classic).unwrap().egress.is_empty());
}

#[tokio::test]
async fn egress_is_authorized_and_revoked_apart_from_ingress_with_ec2_codes() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let db = vpc_group(&emu, &vpc, "db").await;
    emu.authorize_egress(&web, &[tcp(443, "10.0.0.0/8"), tcp_from(5432, &db)]).await.unwrap();
    let group = emu.peek_group(&web).unwrap();
    assert_eq!(group.egress.len(), 3, "{:?}", group.egress);
    assert!(group.ingress.is_empty());
    assert_eq!(code(emu.authorize_egress(&web, &[tcp(443, "10.0.0.0/8")]).await), codes::PERMISSION_DUPLICATE);
    // An ingress rule of the same key is another rule.
    emu.authorize_ingress(&web, &[tcp(443, "10.0.0.0/8")]).await.unwrap();
    emu.revoke_egress(&web, &[all_out(), tcp(443, "10.0.0.0/8")]).await.unwrap();
    assert_eq!(code(emu.revoke_egress(&web, &[all_out()]).await), codes::PERMISSION_NOT_FOUND);
    let group = emu.peek_group(&web).unwrap();
    assert_eq!(group.egress, vec![tcp_from(5432, &db)]);
    assert_eq!(group.ingress, vec![tcp(443, "10.0.0.0/8")]);
    // A group an egress rule references is in use.
    assert_eq!(code(emu.delete_security_group(&db).await), codes::DEPENDENCY_VIOLATION);
}

#[tokio::test]
async fn egress_on_a_classic_group_is_refused() {
    let (emu, _) = world_with_vpc().await;
    let old = classic_group(&emu, "old").await;
    assert_eq!(code(emu.authorize_egress(&old, &[tcp(443, "10.0.0.0/8")]).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.revoke_egress(&old, &[tcp(443, "10.0.0.0/8")]).await), codes::INVALID_PARAMETER_VALUE);
}
