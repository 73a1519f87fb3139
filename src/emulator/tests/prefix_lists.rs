//! Managed prefix lists, their references in rules, private addresses and
//! network interfaces.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;
use crate::ec2::{CreatePrefixList, Ec2, InterfaceFilter, ModifyPrefixList, PrefixListFilter};
use crate::emulator::{Limits, PageRequest, RunInstances, codes};
use crate::model::{InstanceState, PrefixListEntry, PrefixListId};

fn entry(cidr: &str) -> PrefixListEntry {
    PrefixListEntry { cidr: cidr.parse().unwrap(), description: None }
}

fn create(name: &str, max_entries: u32, entries: &[&str]) -> CreatePrefixList {
    CreatePrefixList {
        name: name.into(),
        address_family: "IPv4".into(),
        max_entries,
        entries: entries.iter().map(|c| entry(c)).collect(),
        tags: BTreeMap::from([("owner".to_owned(), "test".to_owned())]),
        client_token: None,
    }
}

fn modify(id: &PrefixListId, version: u64, add: &[&str], remove: &[&str]) -> ModifyPrefixList {
    ModifyPrefixList {
        id: id.clone(),
        current_version: version,
        add: add.iter().map(|c| entry(c)).collect(),
        remove: remove.iter().map(|c| c.parse().unwrap()).collect(),
    }
}

fn from_list(port: u16, list: &PrefixListId) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::PrefixList(list.clone()), None)
}

async fn cidrs(emu: &Emulator, id: &PrefixListId) -> Vec<String> {
    emu.prefix_list_entries(id).await.unwrap().iter().map(|e| e.cidr.to_string()).collect()
}

#[tokio::test]
async fn a_list_is_created_with_its_tags_and_entries_and_described_by_filter() {
    let emu = Emulator::new(EmulatorOptions::default());
    let list = emu.create_prefix_list(&create("bastion", 10, &["10.128.0.2/32", "10.128.0.1/32"])).await.unwrap();
    assert_eq!(list.id.as_str(), "pl-00000001");
    assert_eq!((list.version, list.max_entries, list.state.as_str()), (1, 10, "create-complete"));
    assert_eq!(cidrs(&emu, &list.id).await, ["10.128.0.1/32", "10.128.0.2/32"], "canonical, in CIDR order");
    emu.create_prefix_list(&create("other", 5, &[])).await.unwrap();
    let by_tag = PrefixListFilter {
        tags: BTreeMap::from([("owner".to_owned(), vec!["test".to_owned()])]),
        ..PrefixListFilter::default()
    };
    assert_eq!(emu.describe_prefix_lists(&by_tag).await.unwrap().len(), 2);
    let by_name = PrefixListFilter { names: vec!["bastion".into()], ..PrefixListFilter::default() };
    assert_eq!(emu.describe_prefix_lists(&by_name).await.unwrap(), [list]);
}

#[tokio::test]
async fn creation_checks_sizes_names_families_and_the_client_token() {
    let emu = Emulator::new(EmulatorOptions::default());
    assert_eq!(code(emu.create_prefix_list(&create("a", 0, &[])).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(code(emu.create_prefix_list(&create("a", 1001, &[])).await), codes::INVALID_PARAMETER_VALUE);
    let reserved = create("com.amazonaws.probe", 1, &[]);
    assert_eq!(code(emu.create_prefix_list(&reserved).await), codes::INVALID_PARAMETER_VALUE);
    assert!(emu.create_prefix_list(&create("com.amazonaws-probe", 1, &[])).await.is_ok(), "the dot is the prefix");
    let v6 = create("a", 2, &["2001:db8::/32"]);
    assert_eq!(code(emu.create_prefix_list(&v6).await), codes::INVALID_PARAMETER_VALUE);
    let full = create("a", 1, &["10.0.0.1/32", "10.0.0.2/32"]);
    assert_eq!(code(emu.create_prefix_list(&full).await), codes::PREFIX_LIST_MAX_ENTRIES);
    let many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(code(emu.create_prefix_list(&create("a", 1000, &many)).await), codes::INVALID_PARAMETER_VALUE);
    let token = CreatePrefixList { client_token: Some("t-1".into()), ..create("tok", 3, &[]) };
    let first = emu.create_prefix_list(&token).await.unwrap();
    assert_eq!(emu.create_prefix_list(&token).await.unwrap().id, first.id, "the same token, the same list");
    let other = CreatePrefixList { max_entries: 4, ..token };
    assert_eq!(code(emu.create_prefix_list(&other).await), codes::IDEMPOTENT_PARAMETER_MISMATCH);
}

#[tokio::test]
async fn modifications_need_the_current_version_and_make_a_new_one() {
    let emu = Emulator::new(EmulatorOptions::default());
    let list = emu.create_prefix_list(&create("bastion", 3, &["10.128.0.1/32"])).await.unwrap();
    let next = emu.modify_prefix_list(&modify(&list.id, 1, &["10.128.0.2/32"], &["10.128.0.1/32"])).await.unwrap();
    assert_eq!((next.version, next.state.as_str()), (2, "modify-complete"));
    assert_eq!(cidrs(&emu, &list.id).await, ["10.128.0.2/32"]);
    // A writer that read version 1 is refused, not applied over the newer entries.
    let stale = modify(&list.id, 1, &["10.128.0.3/32"], &[]);
    assert_eq!(code(emu.modify_prefix_list(&stale).await), codes::PREFIX_LIST_VERSION_MISMATCH);
    let missing = modify(&list.id, 2, &[], &["10.128.0.9/32"]);
    assert_eq!(code(emu.modify_prefix_list(&missing).await), codes::PREFIX_LIST_MODIFICATION);
    let again = modify(&list.id, 2, &["10.128.0.2/32"], &[]);
    assert_eq!(code(emu.modify_prefix_list(&again).await), codes::PREFIX_LIST_MODIFICATION);
    let over = modify(&list.id, 2, &["10.128.0.3/32", "10.128.0.4/32", "10.128.0.5/32"], &[]);
    assert_eq!(code(emu.modify_prefix_list(&over).await), codes::PREFIX_LIST_MAX_ENTRIES);
    assert_eq!(emu.peek_prefix_list(&list.id).unwrap().version, 2, "refused changes make no version");
    // Old versions stay readable.
    let old = emu.get_managed_prefix_list_entries(&list.id, Some(1), &PageRequest::default()).await.unwrap();
    assert_eq!(old.items, [entry("10.128.0.1/32")]);
    let none = emu.get_managed_prefix_list_entries(&list.id, Some(3), &PageRequest::default()).await;
    assert_eq!(code(none), codes::INVALID_PARAMETER_VALUE);
    let unknown = PrefixListId::try_new("pl-0badc0de").unwrap();
    assert_eq!(
        code(emu.modify_prefix_list(&modify(&unknown, 1, &[], &["10.0.0.1/32"])).await),
        codes::PREFIX_LIST_NOT_FOUND
    );
}

#[tokio::test]
async fn entries_and_the_size_never_change_in_one_request_and_a_resize_a_group_cannot_take_fails() {
    let limits = Limits { rules_per_group: 10, ..Limits::default() };
    let (emu, vpc) = {
        let emu = Emulator::new(EmulatorOptions { limits, ..EmulatorOptions::default() });
        let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
        (emu, vpc)
    };
    let group = vpc_group(&emu, &vpc, "web").await;
    let list = emu.create_prefix_list(&create("bastion", 4, &["10.128.0.1/32"])).await.unwrap();
    let both = crate::emulator::ModifyPrefixListSpec {
        current_version: Some(1),
        add: vec![("10.128.0.2/32".into(), None)],
        max_entries: Some(5),
        ..Default::default()
    };
    assert_eq!(code(emu.modify_managed_prefix_list(&list.id, both).await), codes::INVALID_PARAMETER_COMBINATION);
    emu.authorize_ingress(&group, &[from_list(22, &list.id), tcp(443, "0.0.0.0/0")]).await.unwrap();
    // 4 + 1 of 10: growing the list to 10 would put the group at 11.
    let grow = |max| crate::emulator::ModifyPrefixListSpec { max_entries: Some(max), ..Default::default() };
    let failed = emu.modify_managed_prefix_list(&list.id, grow(10)).await.unwrap();
    assert_eq!((failed.state.as_str(), failed.max_entries), ("modify-failed", 4));
    assert!(failed.state_message.unwrap().contains(group.as_str()));
    let grown = emu.modify_managed_prefix_list(&list.id, grow(9)).await.unwrap();
    assert_eq!((grown.state.as_str(), grown.max_entries, grown.version), ("modify-complete", 9, 1));
}

#[tokio::test]
async fn a_reference_weighs_its_max_entries_against_the_rules_quota() {
    let limits = Limits { rules_per_group: 60, ..Limits::default() };
    let emu = Emulator::new(EmulatorOptions { limits, ..EmulatorOptions::default() });
    let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let group = vpc_group(&emu, &vpc, "web").await;
    let list = emu.create_prefix_list(&create("bastion", 50, &[])).await.unwrap();
    emu.authorize_ingress(&group, &[from_list(22, &list.id)]).await.unwrap();
    let rules: Vec<Grant> = (0..10).map(|i| tcp(1000 + i, "0.0.0.0/0")).collect();
    emu.authorize_ingress(&group, &rules).await.unwrap();
    assert_eq!(code(emu.authorize_ingress(&group, &[tcp(2000, "0.0.0.0/0")]).await), codes::RULES_LIMIT);
    assert_eq!(code(emu.authorize_ingress(&group, &[from_list(23, &list.id)]).await), codes::RULES_LIMIT);
    let unknown = PrefixListId::try_new("pl-0badc0de").unwrap();
    let other = vpc_group(&emu, &vpc, "other").await;
    assert_eq!(code(emu.authorize_ingress(&other, &[from_list(22, &unknown)]).await), codes::PREFIX_LIST_NOT_FOUND);
    let classic = classic_group(&emu, "app").await;
    assert_eq!(code(emu.authorize_ingress(&classic, &[from_list(22, &list.id)]).await), codes::INVALID_PARAMETER_VALUE);
}

#[tokio::test]
async fn a_referenced_list_is_not_deleted_but_left_delete_failed() {
    let (emu, vpc) = world_with_vpc().await;
    let group = vpc_group(&emu, &vpc, "web").await;
    let list = emu.create_prefix_list(&create("bastion", 5, &[])).await.unwrap();
    emu.authorize_ingress(&group, &[from_list(22, &list.id)]).await.unwrap();
    emu.delete_prefix_list(&list.id).await.expect("EC2 accepts the request");
    let kept = emu.peek_prefix_list(&list.id).expect("still there");
    assert_eq!(kept.state, "delete-failed");
    assert!(kept.state_message.unwrap().contains(group.as_str()));
    emu.revoke_ingress(&group, &[from_list(22, &list.id)]).await.unwrap();
    emu.delete_prefix_list(&list.id).await.unwrap();
    assert!(emu.peek_prefix_list(&list.id).is_none());
    assert_eq!(code(emu.delete_prefix_list(&list.id).await), codes::PREFIX_LIST_NOT_FOUND);
}

#[tokio::test]
async fn describes_page_by_max_results() {
    let emu = Emulator::new(EmulatorOptions::default());
    let many: Vec<String> = (0..7).map(|i| format!("10.128.0.{i}/32")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let list = emu.create_prefix_list(&create("a", 10, &many)).await.unwrap();
    for i in 0..3 {
        emu.create_prefix_list(&create(&format!("l{i}"), 1, &[])).await.unwrap();
    }
    // Four lists of the account and the region's three AWS-managed ones.
    let first = emu.describe_managed_prefix_lists_filtered(&[], &[], &PageRequest::first(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let rest = PageRequest::after(3, first.next_token.clone());
    let second = emu.describe_managed_prefix_lists_filtered(&[], &[], &rest).await.unwrap();
    assert_eq!(second.items.len(), 3);
    let rest = PageRequest::after(3, second.next_token.clone());
    let third = emu.describe_managed_prefix_lists_filtered(&[], &[], &rest).await.unwrap();
    assert_eq!((third.items.len(), third.next_token), (1, None));
    let entries = emu.get_managed_prefix_list_entries(&list.id, None, &PageRequest::first(5)).await.unwrap();
    assert_eq!(entries.items.len(), 5);
    let bad = PageRequest::first(101);
    assert_eq!(code(emu.get_managed_prefix_list_entries(&list.id, None, &bad).await), codes::INVALID_PARAMETER_VALUE);
    assert_eq!(emu.prefix_list_entries(&list.id).await.unwrap().len(), 7, "the port walks every page");
}

#[tokio::test]
async fn instances_get_deterministic_private_addresses_and_classic_ones_a_new_one_on_start() {
    let (emu, vpc) = world_with_vpc().await;
    let bastion = classic_group(&emu, "bastion").await;
    let ids = emu.run_instances(&RunInstances::classic([bastion.clone()]).count(2)).await.unwrap();
    let address = |id| emu.peek_instance(id).unwrap().private_ip;
    assert_eq!(address(&ids[0]), Some(Ipv4Addr::new(10, 128, 0, 1)));
    assert_eq!(address(&ids[1]), Some(Ipv4Addr::new(10, 128, 0, 2)));
    emu.stop_instances(&ids[..1]).await.unwrap();
    assert_eq!(address(&ids[0]), None, "a stopped Classic instance has no address");
    emu.start_instances(&ids[..1]).await.unwrap();
    assert_eq!(address(&ids[0]), Some(Ipv4Addr::new(10, 128, 0, 3)), "and a new one when started");
    let web = vpc_group(&emu, &vpc, "web").await;
    let in_vpc = emu.run_instances(&RunInstances::in_vpc(&vpc, [web.clone()])).await.unwrap();
    assert_eq!(address(&in_vpc[0]), Some(Ipv4Addr::new(10, 0, 0, 4)), "after the four EC2 reserves");
    let described = emu.describe_instances(&crate::ec2::InstanceFilter::default()).await.unwrap();
    assert!(described.iter().all(|i| i.state != InstanceState::Running || i.private_ip.is_some()));
}

#[tokio::test]
async fn network_interfaces_are_found_by_group_until_their_instance_terminates() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let other = vpc_group(&emu, &vpc, "other").await;
    let ids = emu.run_instances(&RunInstances::in_vpc(&vpc, [web.clone()]).count(2)).await.unwrap();
    emu.run_instances(&RunInstances::in_vpc(&vpc, [other])).await.unwrap();
    let by_group = InterfaceFilter { group_ids: vec![web.clone()], ..InterfaceFilter::default() };
    let interfaces = emu.describe_network_interfaces(&by_group).await.unwrap();
    assert_eq!(interfaces.len(), 2);
    assert_eq!(interfaces[0].instance_id.as_ref(), Some(&ids[0]));
    assert_eq!(interfaces[0].private_ip, Some(Ipv4Addr::new(10, 0, 0, 4)));
    emu.terminate_instances(&ids[..1]).await.unwrap();
    assert_eq!(emu.describe_network_interfaces(&by_group).await.unwrap().len(), 1);
}

#[tokio::test]
async fn estates_declare_prefix_lists_that_rules_name() {
    let estate = crate::emulator::Estate::from_toml(
        r#"
        [[vpc]]
        name = "target"
        [[prefix_list]]
        name = "office"
        max_entries = 5
        entries = ["203.0.113.0/24"]
        [[group]]
        name = "web"
        vpc = "target"
        rules = [{ protocol = "tcp", port = 22, prefix_list = "office" }]
        "#,
    )
    .unwrap();
    let emu = Emulator::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let web = emu.group_id(emu.vpc_id("target").as_ref(), "web").unwrap();
    let list = emu.peek_group(&web).unwrap().ingress[0].key.peer.clone();
    let Peer::PrefixList(id) = list else { panic!("{list:?}") };
    assert_eq!(emu.peek_prefix_list(&id).unwrap().name, "office");
    let unknown = crate::emulator::Estate::from_toml(
        "[[vpc]]\nname = \"t\"\n[[group]]\nname = \"w\"\nvpc = \"t\"\nrules = [{ protocol = \"tcp\", port = 22, prefix_list = \"nope\" }]\n",
    )
    .unwrap();
    let errors = Emulator::from_estate(&unknown, EmulatorOptions::default()).unwrap_err().to_string();
    assert!(errors.contains("group[0].rules[0].prefix_list"), "{errors}");
}

#[tokio::test]
async fn every_region_has_its_aws_managed_lists_under_ids_shared_by_its_accounts_and_read_only() {
    use crate::emulator::Cloud;
    let cloud = Cloud::new(Emulator::default());
    let a = cloud.world("111111111111", "eu-west-1");
    let b = cloud.world("222222222222", "eu-west-1");
    let c = cloud.world("222222222222", "us-west-2");
    let aws = |emu: &Emulator, name: &str| {
        let filter = PrefixListFilter {
            names: vec![name.to_owned()],
            owner_ids: vec!["AWS".to_owned()],
            ..PrefixListFilter::default()
        };
        let emu = emu.clone();
        async move { emu.describe_prefix_lists(&filter).await.unwrap() }
    };
    let s3 = aws(&a, "com.amazonaws.eu-west-1.s3").await;
    assert_eq!(s3.len(), 1, "{s3:?}");
    assert_eq!((s3[0].owner_id.as_str(), s3[0].max_entries), ("AWS", 5));
    assert_eq!(aws(&b, "com.amazonaws.eu-west-1.s3").await, s3, "one id in every account of the region");
    assert!(aws(&c, "com.amazonaws.eu-west-1.s3").await.is_empty(), "another region has its own");
    let other = aws(&c, "com.amazonaws.us-west-2.s3").await;
    assert_ne!(other[0].id, s3[0].id);
    assert_eq!(aws(&c, "com.amazonaws.us-west-2.dynamodb").await.len(), 1);
    let global = "com.amazonaws.global.cloudfront.origin-facing";
    assert_eq!(aws(&a, global).await[0].max_entries, 55);
    // Read-only to customers; a rule may reference it.
    let id = s3[0].id.clone();
    assert_eq!(code(a.modify_prefix_list(&modify(&id, 1, &["10.0.0.0/8"], &[])).await), codes::UNAUTHORIZED_OPERATION);
    assert_eq!(code(a.delete_prefix_list(&id).await), codes::UNAUTHORIZED_OPERATION);
    let vpc = a.create_vpc(&crate::emulator::NewVpc::default()).await.unwrap();
    let group = vpc_group(&a, &vpc, "web").await;
    a.authorize_ingress(&group, &[from_list(443, &id)]).await.unwrap();
    // The customer's own lists are still the account's.
    let own = a.create_prefix_list(&create("mine", 5, &[])).await.unwrap();
    assert_eq!(own.owner_id, "111111111111");
}

#[tokio::test]
async fn an_estate_declares_more_aws_managed_lists_and_refuses_one_outside_com_amazonaws() {
    use crate::emulator::Estate;
    let text = |name: &str| {
        format!(
            "[[vpc]]\nname = \"v\"\n[[prefix_list]]\nname = \"{name}\"\nmax_entries = 3\nentries = [\"18.206.107.24/29\"]\n\
             aws_managed = true\n[[group]]\nname = \"web\"\nvpc = \"v\"\n[[group.rules]]\nprotocol = \"tcp\"\nport = 22\n\
             prefix_list = \"{name}\"\n"
        )
    };
    let estate = Estate::from_toml(&text("com.amazonaws.us-east-1.ec2-instance-connect")).unwrap();
    let emu = Emulator::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let filter = PrefixListFilter { owner_ids: vec!["AWS".into()], ..PrefixListFilter::default() };
    let names: Vec<String> = emu.describe_prefix_lists(&filter).await.unwrap().into_iter().map(|l| l.name).collect();
    assert!(names.contains(&"com.amazonaws.us-east-1.ec2-instance-connect".to_owned()), "{names:?}");
    assert_eq!(names.len(), 4, "the three built-in ones and the estate's");
    let errors = Emulator::from_estate(&Estate::from_toml(&text("office")).unwrap(), EmulatorOptions::default())
        .unwrap_err()
        .to_string();
    assert!(errors.contains("prefix_list[0]") && errors.contains("com.amazonaws."), "{errors}");
}
