//! The emulator's EC2 Query-API server driven by the real, unmodified
//! `aws-sdk-ec2` over HTTP on 127.0.0.1:0: every action through the
//! [`AwsEc2`] adapter (the port and its world-building helpers), and through
//! the raw SDK client where the adapter has no method (Classic
//! `CreateSecurityGroup`, `DescribeVpcs`, the shapes of `RevokeSecurityGroupIngress`
//! and the state-change answers). Round trips, pagination over more than one
//! page, filters, every EC2 error code the engine produces, throttling, the
//! counters endpoints and malformed requests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types as sdk;
use quick_xml::events::Event;

use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::ec2::{
    CreateGroup, CreatePrefixList, Ec2, Ec2Error, ErrorKind, GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter,
    ModifyPrefixList, Operation, PrefixListFilter,
};
use classiclink_mirror::emulator::{
    Bucket, Emulator, EmulatorOptions, ErrorInjection, Estate, Faults, NewGroup, NewVpc, RunInstances, Throttle, codes,
};
use classiclink_mirror::model::{
    EXPANSION_TAG, Grant, GroupId, InstanceId, InstanceState, OWNERSHIP_TAG, Peer, Ports, PrefixListEntry, Protocol,
    VpcId, canonical_ipv4, canonical_ipv6,
};

use crate::common::raw_ec2;
use crate::common::served::ServedEmulator;

/// The emulator served on 127.0.0.1:0 for one test (stops when dropped),
/// and the clients of this module's tests.
struct Wire(ServedEmulator);

impl std::ops::Deref for Wire {
    type Target = ServedEmulator;
    fn deref(&self) -> &ServedEmulator {
        &self.0
    }
}

impl Wire {
    async fn start(emulator: Emulator) -> Self {
        Self(ServedEmulator::start(emulator).await)
    }

    async fn with_estate(toml: &str) -> Self {
        let estate = Estate::from_toml(toml).expect("estate parses");
        Self::start(Emulator::from_estate(&estate, EmulatorOptions::default()).expect("estate loads")).await
    }

    /// The daemon's adapter, pointed at the emulator.
    async fn port(&self) -> AwsEc2 {
        self.port_paged(1000).await
    }

    async fn port_paged(&self, page_size: i32) -> AwsEc2 {
        crate::common::local_port_paged(&self.url, page_size).await
    }

    /// The raw SDK client, for what the adapter has no method for.
    fn sdk(&self) -> aws_sdk_ec2::Client {
        raw_ec2(&self.url)
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client")
    }
}

/// Form parameters of a hand-written request.
type Form<'a> = Vec<(&'a str, &'a str)>;

const FORM: &str = "application/x-www-form-urlencoded";

/// A form body as the SDK writes one: unreserved characters as they are,
/// everything else percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn sg(id: impl AsRef<str>) -> GroupId {
    GroupId::try_new(id.as_ref()).expect("group id")
}

fn tcp(port: u16) -> Ports {
    Ports::Range { from: port, to: port }
}

fn v4(cidr: &str) -> Peer {
    Peer::Ipv4(canonical_ipv4(cidr).expect("CIDR"))
}

fn to_group(id: &GroupId) -> Peer {
    Peer::Group { group: id.clone(), owner: None }
}

fn grant(protocol: Protocol, ports: Ports, peer: Peer, description: Option<&str>) -> Grant {
    Grant::new(protocol, ports, peer, description.map(Into::into))
}

fn sorted(grants: &[Grant]) -> Vec<Grant> {
    let mut grants = grants.to_vec();
    grants.sort();
    grants
}

fn assert_error(result: Result<impl std::fmt::Debug, Ec2Error>, code: &str) -> Ec2Error {
    let error = result.expect_err(code);
    assert_eq!(error.code, code, "{error}");
    assert_eq!(error.kind, ErrorKind::from_code(code), "{error}");
    error
}

fn prefix_list(name: &str, max_entries: u32, entries: &[&str]) -> CreatePrefixList {
    CreatePrefixList {
        name: name.into(),
        address_family: "IPv4".into(),
        max_entries,
        entries: entries.iter().map(|c| PrefixListEntry { cidr: c.parse().unwrap(), description: None }).collect(),
        tags: BTreeMap::from([(EXPANSION_TAG.to_owned(), "sg-0b1".to_owned())]),
        client_token: None,
    }
}

async fn group_by_id(port: &AwsEc2, id: &GroupId) -> Option<classiclink_mirror::model::SecurityGroup> {
    let filter = GroupFilter { group_ids: vec![id.clone()], ..GroupFilter::default() };
    port.describe_security_groups(&filter).await.expect("describe").into_iter().next()
}

// ----- managed prefix lists, addresses, interfaces -------------------------------------------

#[tokio::test]
async fn prefix_lists_round_trip_through_the_sdk_with_their_version_check() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port().await;
    let created = port.create_prefix_list(&prefix_list("bastion", 4, &["10.128.0.1/32"])).await.expect("create");
    assert_eq!((created.version, created.max_entries, created.address_family.as_str()), (1, 4, "IPv4"));
    assert_eq!(created.tags.get(EXPANSION_TAG).map(String::as_str), Some("sg-0b1"), "tags at creation");
    let by_tag = PrefixListFilter { tag_keys: vec![EXPANSION_TAG.to_owned()], ..PrefixListFilter::default() };
    assert_eq!(port.describe_prefix_lists(&by_tag).await.expect("describe"), std::slice::from_ref(&created));

    let change = |version, add: &[&str], remove: &[&str]| ModifyPrefixList {
        id: created.id.clone(),
        current_version: version,
        add: add.iter().map(|c| PrefixListEntry { cidr: c.parse().unwrap(), description: Some("m".into()) }).collect(),
        remove: remove.iter().map(|c| c.parse().unwrap()).collect(),
    };
    let modified = port.modify_prefix_list(&change(1, &["10.128.0.2/32"], &["10.128.0.1/32"])).await.expect("modify");
    assert_eq!(modified.version, 2);
    let entries = port.prefix_list_entries(&created.id).await.expect("entries");
    assert_eq!(entries, [PrefixListEntry { cidr: "10.128.0.2/32".parse().unwrap(), description: Some("m".into()) }]);
    assert_error(
        port.modify_prefix_list(&change(1, &["10.128.0.3/32"], &[])).await,
        codes::PREFIX_LIST_VERSION_MISMATCH,
    );
    assert_error(
        port.modify_prefix_list(&change(2, &["10.128.0.3/32", "10.128.0.4/32", "10.128.0.5/32", "10.128.0.6/32"], &[]))
            .await,
        codes::PREFIX_LIST_MAX_ENTRIES,
    );

    // A reference weighs the list's max entries; a referenced list is left delete-failed.
    let vpc = port.world().create_vpc("10.0.0.0/16").await.expect("create VPC");
    let mirror = port
        .create_security_group(&CreateGroup {
            vpc_id: vpc,
            name: "web".into(),
            description: "w".into(),
            tags: BTreeMap::new(),
        })
        .await
        .expect("create group");
    let from_list = grant(Protocol::Tcp, tcp(22), Peer::PrefixList(created.id.clone()), None);
    port.authorize_ingress(&mirror, std::slice::from_ref(&from_list)).await.expect("authorize");
    assert_eq!(group_by_id(&port, &mirror).await.unwrap().ingress, std::slice::from_ref(&from_list));
    port.delete_prefix_list(&created.id).await.expect("delete is accepted");
    let left = port.describe_prefix_lists(&by_tag).await.expect("describe");
    assert_eq!(left[0].state, "delete-failed", "{left:?}");
    port.revoke_ingress(&mirror, &[from_list]).await.expect("revoke");
    port.delete_prefix_list(&created.id).await.expect("delete");
    assert!(port.describe_prefix_lists(&by_tag).await.expect("describe").is_empty());
    assert_error(port.delete_prefix_list(&created.id).await, codes::PREFIX_LIST_NOT_FOUND);
}

#[tokio::test]
async fn private_addresses_and_network_interfaces_come_through_the_sdk() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port_paged(5).await;
    let sdk = wire.sdk();
    let bastion = sg(sdk
        .create_security_group()
        .group_name("bastion")
        .description("b")
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap());
    port.world().run_instances("ami-12345678", std::slice::from_ref(&bastion), 3).await.expect("run");
    let members = InstanceFilter { group_ids: vec![bastion.clone()], ..InstanceFilter::default() };
    let addresses: BTreeSet<String> = port
        .describe_instances(&members)
        .await
        .expect("describe")
        .iter()
        .filter_map(|i| i.private_ip.map(|a| a.to_string()))
        .collect();
    assert_eq!(addresses, BTreeSet::from(["10.128.0.1".into(), "10.128.0.2".into(), "10.128.0.3".into()]));

    let vpc = wire.emulator.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = wire.emulator.create_group(&NewGroup::in_vpc(&vpc, "web", "w")).await.unwrap();
    wire.emulator.run_instances(&RunInstances::in_vpc(&vpc, [web.clone()]).count(6)).await.unwrap();
    let by_group = InterfaceFilter { group_ids: vec![web.clone()], ..InterfaceFilter::default() };
    let interfaces = port.describe_network_interfaces(&by_group).await.expect("two pages of five");
    assert_eq!(interfaces.len(), 6);
    assert!(interfaces.iter().all(|n| n.groups.contains(&web) && n.private_ip.is_some() && n.instance_id.is_some()));
}

// ----- groups, rules, tags ---------------------------------------------------------------

#[tokio::test]
async fn classic_and_vpc_groups_rules_and_tags_round_trip_through_the_sdk() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port().await;
    let sdk = wire.sdk();

    // CreateVpc (helper) and its default group; CreateSecurityGroup without a VPC is Classic.
    let vpc = port.world().create_vpc("10.0.0.0/16").await.expect("create VPC");
    let out = sdk
        .create_security_group()
        .group_name("web")
        .description(r#"Web <tier> & "friends" 'n' more"#)
        .tag_specifications(
            sdk::TagSpecification::builder()
                .resource_type(sdk::ResourceType::SecurityGroup)
                .tags(sdk::Tag::builder().key("team").value("front <&> end\nline two\r").build())
                .tags(sdk::Tag::builder().key("empty").build())
                .build(),
        )
        .send()
        .await
        .expect("create Classic group");
    let web = sg(out.group_id().expect("group id"));
    assert_eq!(out.tags().len(), 2, "the answer carries the tags created with the group");
    let classic = group_by_id(&port, &web).await.expect("the Classic group is described");
    assert!(classic.is_classic(), "a Classic group has no VpcId: {classic:?}");
    assert_eq!(classic.description, r#"Web <tier> & "friends" 'n' more"#);
    assert_eq!(classic.owner_id, classiclink_mirror::emulator::DEFAULT_ACCOUNT_ID);
    assert_eq!(
        classic.tags,
        BTreeMap::from([("empty".into(), String::new()), ("team".into(), "front <&> end\nline two\r".into())])
    );

    // CreateSecurityGroup in the VPC with TagSpecifications (the port's create).
    let tags = BTreeMap::from([(OWNERSHIP_TAG.to_owned(), web.to_string())]);
    let request = CreateGroup {
        vpc_id: vpc.clone(),
        name: "web".into(),
        description: "Mirror of web".into(),
        tags: tags.clone(),
    };
    let mirror = port.create_security_group(&request).await.expect("create mirror");
    let described = group_by_id(&port, &mirror).await.expect("mirror described");
    assert_eq!((described.vpc_id.as_ref(), &described.tags), (Some(&vpc), &tags));
    assert_eq!(described.mirrored_from(), Some(web.clone()));
    let in_vpc = port
        .describe_security_groups(&GroupFilter { vpc_ids: vec![vpc.clone()], ..GroupFilter::default() })
        .await
        .expect("describe VPC");
    let names: BTreeSet<&str> = in_vpc.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["default", "web"]), "every VPC has a default group");

    // AuthorizeSecurityGroupIngress: every kind of source, several permissions in one request.
    let classic_grants = vec![
        grant(Protocol::Tcp, tcp(443), v4("203.0.113.0/24"), Some("office")),
        grant(Protocol::Tcp, tcp(443), to_group(&web), None),
        grant(Protocol::Icmp, Ports::Icmp { icmp_type: 8, code: -1 }, v4("0.0.0.0/0"), None),
        grant(Protocol::Udp, Ports::Range { from: 53, to: 54 }, v4("10.1.0.0/16"), Some("dns")),
        grant(
            Protocol::Tcp,
            tcp(80),
            Peer::Group { group: sg("sg-843f59ed"), owner: Some("amazon-elb".into()) },
            Some("Classic ELB"),
        ),
    ];
    port.authorize_ingress(&web, &classic_grants).await.expect("authorize Classic");
    // A prefix-list source must name a list that exists.
    let list = port.create_prefix_list(&prefix_list("office", 5, &[])).await.expect("create prefix list").id;
    let vpc_grants = vec![
        grant(Protocol::Tcp, tcp(443), to_group(&mirror), Some("self")),
        grant(Protocol::Tcp, tcp(22), Peer::Ipv6(canonical_ipv6("2001:db8::/32").unwrap()), None),
        grant(Protocol::All, Ports::None, Peer::PrefixList(list), None),
        grant(Protocol::Number(50), Ports::None, v4("192.0.2.0/24"), None),
    ];
    port.authorize_ingress(&mirror, &vpc_grants).await.expect("authorize VPC");
    assert_eq!(sorted(&group_by_id(&port, &web).await.unwrap().ingress), sorted(&classic_grants));
    assert_eq!(sorted(&group_by_id(&port, &mirror).await.unwrap().ingress), sorted(&vpc_grants));

    // UpdateSecurityGroupRuleDescriptionsIngress: change one, clear one.
    let updated = vec![
        grant(Protocol::Tcp, tcp(443), v4("203.0.113.0/24"), Some("head office")),
        grant(Protocol::Udp, Ports::Range { from: 53, to: 54 }, v4("10.1.0.0/16"), None),
    ];
    port.update_ingress_descriptions(&web, &updated).await.expect("update descriptions");
    let now = group_by_id(&port, &web).await.unwrap().ingress;
    assert!(now.contains(&updated[0]) && now.contains(&updated[1]), "{now:?}");

    // RevokeSecurityGroupIngress on a VPC group; a missing rule there is InvalidPermission.NotFound.
    port.revoke_ingress(&mirror, &vpc_grants[1..2]).await.expect("revoke VPC");
    assert_eq!(group_by_id(&port, &mirror).await.unwrap().ingress.len(), 3);
    assert_error(port.revoke_ingress(&mirror, &vpc_grants[1..2]).await, codes::PERMISSION_NOT_FOUND);

    // On a Classic group, unknown rules come back as unknownIpPermissionSet and the rest is revoked.
    let out = sdk
        .revoke_security_group_ingress()
        .group_id(web.as_str())
        .ip_permissions(
            sdk::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ip_ranges(sdk::IpRange::builder().cidr_ip("203.0.113.0/24").build())
                .ip_ranges(sdk::IpRange::builder().cidr_ip("198.51.100.0/24").build())
                .build(),
        )
        .send()
        .await
        .expect("revoke Classic");
    assert_eq!(out.r#return(), Some(true));
    let unknown = out.unknown_ip_permissions();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].ip_ranges()[0].cidr_ip(), Some("198.51.100.0/24"));
    assert_eq!(group_by_id(&port, &web).await.unwrap().ingress.len(), classic_grants.len() - 1);
    port.revoke_ingress(&web, &classic_grants[0..1]).await.expect("the port takes unknown rules as done");

    // CreateTags / DeleteTags.
    let more = BTreeMap::from([("env".to_owned(), "prod".to_owned()), ("owner".to_owned(), "ops".to_owned())]);
    port.create_tags(&mirror, &more).await.expect("create tags");
    port.delete_tags(&mirror, &["owner".to_owned()]).await.expect("delete tags");
    let tags = group_by_id(&port, &mirror).await.unwrap().tags;
    assert_eq!(tags.keys().map(String::as_str).collect::<Vec<_>>(), vec![OWNERSHIP_TAG, "env"]);

    // DeleteSecurityGroup, by id through the port and by name (Classic) through the SDK.
    port.revoke_ingress(&mirror, &vpc_grants[0..1]).await.expect("drop the self-reference");
    port.delete_security_group(&mirror).await.expect("delete mirror");
    assert!(group_by_id(&port, &mirror).await.is_none());
    let other = sdk.create_security_group().group_name("spare").description("spare").send().await.unwrap();
    let out = sdk.delete_security_group().group_name("spare").send().await.expect("delete by name");
    assert_eq!(out.group_id(), other.group_id());
}

#[tokio::test]
async fn estate_groups_come_back_as_the_estate_says_classic_without_vpc_id() {
    let wire = Wire::with_estate(include_str!("../fixtures/estates/small.toml")).await;
    let groups = wire.port().await.describe_security_groups(&GroupFilter::default()).await.expect("describe");
    let by_name = |name: &str, classic: bool| {
        groups.iter().find(|g| g.name == name && g.is_classic() == classic).unwrap_or_else(|| panic!("{name}"))
    };
    let web = by_name("web", true);
    assert_eq!(web.id, sg("sg-0a1b2c3d"));
    assert_eq!(web.tags.get("team").map(String::as_str), Some("frontend"));
    assert!(web.ingress.contains(&grant(
        Protocol::Tcp,
        tcp(80),
        Peer::Group { group: sg("sg-843f59ed"), owner: Some("amazon-elb".into()) },
        Some("Classic ELB"),
    )));
    let app = by_name("app", true);
    assert!(app.ingress.contains(&grant(Protocol::Tcp, tcp(7000), to_group(&app.id), None)));
    assert_eq!(by_name("app", false).vpc_id, Some(VpcId::try_new("vpc-9f2e1d0c").unwrap()));
    assert!(by_name("default", true).ingress.len() >= 3);

    // EC2-Classic answers name the groups its rules reference.
    let out = wire.sdk().describe_security_groups().group_names("app").send().await.expect("by name");
    let pairs: Vec<(Option<&str>, Option<&str>)> = out.security_groups()[0]
        .ip_permissions()
        .iter()
        .flat_map(|p| p.user_id_group_pairs())
        .map(|p| (p.group_id(), p.group_name()))
        .collect();
    assert!(pairs.iter().all(|(_, name)| name.is_some()), "{pairs:?}");
}

// ----- instances -------------------------------------------------------------------------------

#[tokio::test]
async fn instances_launch_stop_start_and_terminate_through_the_sdk() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port().await;
    let sdk = wire.sdk();
    let web =
        sg(sdk.create_security_group().group_name("web").description("w").send().await.unwrap().group_id().unwrap());

    let ids = port.world().run_instances("ami-12345678", std::slice::from_ref(&web), 3).await.expect("run");
    assert_eq!(ids.len(), 3);
    let members = InstanceFilter { group_ids: vec![web.clone()], ..InstanceFilter::default() };
    let instances = port.describe_instances(&members).await.expect("describe");
    assert_eq!(instances.len(), 3);
    for instance in &instances {
        assert_eq!((instance.state, instance.vpc_id.as_ref()), (InstanceState::Running, None), "{instance:?}");
        assert_eq!(instance.groups, BTreeSet::from([web.clone()]));
    }

    port.world().stop_instances(&ids[0..1]).await.expect("stop");
    port.world().terminate_instances(&ids[2..3]).await.expect("terminate");
    let state_of = |id: &InstanceId, all: &[classiclink_mirror::model::Instance]| {
        all.iter().find(|i| &i.id == id).map(|i| i.state)
    };
    let all = port.describe_instances(&InstanceFilter::default()).await.unwrap();
    assert_eq!(state_of(&ids[0], &all), Some(InstanceState::Stopped));
    assert_eq!(state_of(&ids[1], &all), Some(InstanceState::Running));
    assert_eq!(state_of(&ids[2], &all), Some(InstanceState::Terminated));
    let running = InstanceFilter { states: vec![InstanceState::Running], ..InstanceFilter::default() };
    assert_eq!(port.describe_instances(&running).await.unwrap().len(), 1);

    // StartInstances answers previous and current states.
    let out = sdk.start_instances().instance_ids(ids[0].as_str()).send().await.expect("start");
    let change = &out.starting_instances()[0];
    assert_eq!(change.instance_id(), Some(ids[0].as_str()));
    assert_eq!(change.previous_state().and_then(|s| s.name()), Some(&sdk::InstanceStateName::Stopped));
    assert_eq!(change.current_state().and_then(|s| s.name()), Some(&sdk::InstanceStateName::Running));
    assert_eq!(change.current_state().and_then(|s| s.code()), Some(16));
    port.world().start_instances(&ids[0..1]).await.expect("starting a running instance is a no-op");

    // The raw answer: a reservation per instance with the group names.
    let out = sdk.describe_instances().instance_ids(ids[1].as_str()).send().await.expect("by id");
    let reservation = &out.reservations()[0];
    let instance = &reservation.instances()[0];
    assert_eq!(instance.security_groups()[0].group_name(), Some("web"));
    assert_eq!(instance.vpc_id(), None);

    // Launching into a subnet is not modelled: no subnet exists.
    let error = sdk
        .run_instances()
        .image_id("ami-1")
        .min_count(1)
        .max_count(1)
        .subnet_id("subnet-1")
        .send()
        .await
        .expect_err("no subnets");
    assert_eq!(error.code(), Some(codes::SUBNET_NOT_FOUND));
}

// ----- ClassicLink --------------------------------------------------------------------------------

#[tokio::test]
async fn classic_link_enable_attach_describe_and_detach_through_the_sdk() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port().await;
    let vpc = port.world().create_vpc("10.0.0.0/16").await.unwrap();
    let other_vpc = port.world().create_vpc("172.31.0.0/16").await.unwrap();
    let create = |name: &str| CreateGroup {
        vpc_id: vpc.clone(),
        name: name.into(),
        description: name.into(),
        tags: BTreeMap::new(),
    };
    let mirror_a = port.create_security_group(&create("a")).await.unwrap();
    let mirror_b = port.create_security_group(&create("b")).await.unwrap();
    let ids = port.world().run_instances("ami-1", &[], 2).await.unwrap();

    let flags = port.describe_vpc_classic_link(&[vpc.clone(), other_vpc.clone()]).await.unwrap();
    assert!(flags.iter().all(|v| !v.classic_link_enabled), "{flags:?}");
    assert_error(
        port.attach_classic_link_vpc(&ids[0], &vpc, std::slice::from_ref(&mirror_a)).await,
        codes::INSTANCE_NOT_LINKABLE,
    );
    port.enable_vpc_classic_link(&vpc).await.expect("enable ClassicLink");
    let flags = port.describe_vpc_classic_link(std::slice::from_ref(&vpc)).await.unwrap();
    assert!(flags[0].classic_link_enabled);
    // The port leaves an unknown VPC out (the adapter retries without the ids).
    let unknown = VpcId::try_new("vpc-0000ffff").unwrap();
    assert_eq!(port.describe_vpc_classic_link(&[vpc.clone(), unknown]).await.unwrap().len(), 1);

    port.attach_classic_link_vpc(&ids[0], &vpc, &[mirror_a.clone(), mirror_b.clone()]).await.expect("attach");
    port.attach_classic_link_vpc(&ids[1], &vpc, std::slice::from_ref(&mirror_b)).await.expect("attach");
    let links = port.describe_classic_link_instances(&LinkFilter::default()).await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].instance_id, ids[0]);
    assert_eq!(links[0].vpc_id, vpc);
    assert_eq!(links[0].groups, BTreeSet::from([mirror_a.clone(), mirror_b.clone()]));
    let with_a = LinkFilter { group_ids: vec![mirror_a.clone()], ..LinkFilter::default() };
    assert_eq!(port.describe_classic_link_instances(&with_a).await.unwrap().len(), 1);

    port.detach_classic_link_vpc(&ids[0], &vpc).await.expect("detach");
    port.world().stop_instances(&ids[1..2]).await.expect("stop");
    assert!(port.describe_classic_link_instances(&LinkFilter::default()).await.unwrap().is_empty(), "stop unlinks");
    port.detach_classic_link_vpc(&ids[0], &vpc).await.expect("detaching twice is a no-op");
}

// ----- pagination ----------------------------------------------------------------------------------

#[tokio::test]
async fn groups_instances_links_and_vpcs_page_through_more_than_one_page() {
    let emulator = Emulator::default();
    for i in 0..1200 {
        emulator.create_group(&NewGroup::classic(format!("g{i:04}"), "generated")).await.unwrap();
    }
    emulator.run_instances(&RunInstances::classic([]).count(1100)).await.unwrap();
    let vpc = emulator.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    for _ in 0..6 {
        emulator
            .create_vpc(&NewVpc { cidr_block: Some("172.16.0.0/16".parse().unwrap()), ..NewVpc::default() })
            .await
            .unwrap();
    }
    let mirror = emulator.create_group(&NewGroup::in_vpc(&vpc, "m", "m")).await.unwrap();
    let linked = emulator.run_instances(&RunInstances::classic([]).count(12)).await.unwrap();
    for id in &linked {
        Ec2::attach_classic_link_vpc(&emulator, id, &vpc, std::slice::from_ref(&mirror)).await.unwrap();
    }
    emulator.reset_counters();
    let wire = Wire::start(emulator).await;

    let port = wire.port().await;
    let groups = port.describe_security_groups(&GroupFilter::default()).await.expect("groups");
    assert_eq!(groups.len(), 1200 + 1 + 7 + 1, "generated, Classic default, VPC defaults, mirror");
    let ids: BTreeSet<&GroupId> = groups.iter().map(|g| &g.id).collect();
    assert_eq!(ids.len(), groups.len(), "no group twice across pages");
    let instances = port.describe_instances(&InstanceFilter::default()).await.expect("instances");
    assert_eq!(instances.len(), 1112);
    let small_pages = wire.port_paged(5).await;
    let links = small_pages.describe_classic_link_instances(&LinkFilter::default()).await.expect("links");
    assert_eq!(links.iter().map(|l| l.instance_id.clone()).collect::<Vec<_>>(), linked);

    let mut vpcs = Vec::new();
    let mut pages = wire.sdk().describe_vpcs().max_results(5).into_paginator().send();
    let mut vpc_pages = 0;
    while let Some(page) = pages.next().await {
        vpc_pages += 1;
        vpcs.extend(page.expect("VPC page").vpcs().iter().map(|v| v.vpc_id().unwrap().to_owned()));
    }
    assert_eq!((vpcs.len(), vpc_pages), (7, 2));

    let calls = wire.emulator.counters();
    assert_eq!(calls.requests(Operation::DescribeSecurityGroups), 2, "1,209 groups in pages of 1,000");
    assert_eq!(calls.requests(Operation::DescribeInstances), 2, "1,112 instances in pages of 1,000");
    assert_eq!(calls.requests(Operation::DescribeClassicLinkInstances), 3, "12 links in pages of 5");
    assert_eq!(calls.requests(Operation::DescribeVpcs), 2);
}

// ----- filters -------------------------------------------------------------------------------------

#[tokio::test]
async fn filters_narrow_every_describe_and_unknown_filters_are_refused() {
    let wire = Wire::with_estate(include_str!("../fixtures/estates/small.toml")).await;
    let port = wire.port().await;
    let target = VpcId::try_new("vpc-9f2e1d0c").unwrap();
    let names = |groups: Vec<classiclink_mirror::model::SecurityGroup>| {
        groups.into_iter().map(|g| g.name).collect::<BTreeSet<_>>()
    };
    let by = |filter: GroupFilter| {
        let port = port.clone();
        async move { names(port.describe_security_groups(&filter).await.expect("describe")) }
    };
    let discovery = BTreeMap::from([("classiclinkmirror:linkToVPC".to_owned(), vec![target.to_string()])]);
    assert_eq!(
        by(GroupFilter { tags: discovery, ..GroupFilter::default() }).await,
        BTreeSet::from(["web".into(), "app".into()])
    );
    assert_eq!(
        by(GroupFilter { tag_keys: vec!["note".into()], ..GroupFilter::default() }).await,
        BTreeSet::from(["default".into()])
    );
    assert_eq!(
        by(GroupFilter { vpc_ids: vec![target.clone()], ..GroupFilter::default() }).await,
        BTreeSet::from(["default".into(), "app".into()])
    );
    let db = by(GroupFilter { group_names: vec!["db".into()], ..GroupFilter::default() }).await;
    assert_eq!(db, BTreeSet::from(["db".into()]));

    let web = sg("sg-0a1b2c3d");
    let stopped = InstanceFilter { states: vec![InstanceState::Stopped], ..InstanceFilter::default() };
    assert_eq!(port.describe_instances(&stopped).await.unwrap().len(), 1);
    let web_members = InstanceFilter { group_ids: vec![web.clone()], ..InstanceFilter::default() };
    assert_eq!(port.describe_instances(&web_members).await.unwrap().len(), 4);
    let one =
        InstanceFilter { instance_ids: vec![InstanceId::try_new("i-0b3c4d5e").unwrap()], ..InstanceFilter::default() };
    assert_eq!(port.describe_instances(&one).await.unwrap().len(), 1);
    let in_target = LinkFilter { vpc_ids: vec![target.clone()], ..LinkFilter::default() };
    assert_eq!(port.describe_classic_link_instances(&in_target).await.unwrap().len(), 1);

    let sdk = wire.sdk();
    let filter = |name: &str, value: &str| sdk::Filter::builder().name(name).values(value).build();
    let vpcs = sdk.describe_vpcs().filters(filter("tag:Name", "legacy")).send().await.expect("VPC by tag");
    assert_eq!(vpcs.vpcs().len(), 1);
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("172.31.0.0/16"));
    let enabled = sdk
        .describe_vpc_classic_link()
        .filters(filter("is-classic-link-enabled", "true"))
        .send()
        .await
        .expect("ClassicLink filter");
    assert_eq!(enabled.vpcs().iter().map(|v| v.vpc_id().unwrap()).collect::<Vec<_>>(), vec![target.as_str()]);

    let error = sdk.describe_security_groups().filters(filter("owner-id", "1")).send().await.expect_err("unknown");
    assert_eq!(error.code(), Some(codes::INVALID_PARAMETER_VALUE));
    let error = sdk.describe_vpcs().filters(filter("dhcp-options-id", "x")).send().await.expect_err("unknown");
    assert_eq!(error.code(), Some(codes::INVALID_PARAMETER_VALUE));
}

// ----- errors --------------------------------------------------------------------------------------

/// Every code the engine answers, provoked through the SDK: the adapter's
/// `Ec2Error` has the engine's code and the daemon's classification of it,
/// and the engine counted the request as that error.
#[tokio::test]
async fn every_engine_error_code_surfaces_through_the_sdk_with_its_classification() {
    let emulator = Emulator::default();
    let vpc = emulator.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let conflicting = emulator
        .create_vpc(&NewVpc { cidr_block: Some("10.2.0.0/16".parse().unwrap()), ..NewVpc::default() })
        .await
        .unwrap();
    let web = emulator.create_group(&NewGroup::classic("web", "web")).await.unwrap();
    let mut mirrors = Vec::new();
    for i in 0..6 {
        mirrors.push(emulator.create_group(&NewGroup::in_vpc(&vpc, format!("m{i}"), "m")).await.unwrap());
    }
    let running = emulator.run_instances(&RunInstances::classic([web.clone()]).count(3)).await.unwrap();
    let stopped = emulator.run_instances(&RunInstances::classic([]).count(1)).await.unwrap();
    emulator.stop_instances(&stopped).await.unwrap();
    let terminated = emulator.run_instances(&RunInstances::classic([]).count(1)).await.unwrap();
    emulator.terminate_instances(&terminated).await.unwrap();
    Ec2::attach_classic_link_vpc(&emulator, &running[1], &vpc, &mirrors[0..1]).await.unwrap();
    let office = grant(Protocol::Tcp, tcp(443), v4("203.0.113.0/24"), None);
    Ec2::authorize_ingress(&emulator, &web, std::slice::from_ref(&office)).await.unwrap();
    Ec2::authorize_ingress(&emulator, &mirrors[2], &[grant(Protocol::All, Ports::None, to_group(&mirrors[3]), None)])
        .await
        .unwrap();
    let vpc_default = emulator.default_group(Some(&vpc)).unwrap();
    let classic_default = emulator.default_group(None).unwrap();
    emulator.reset_counters();

    let wire = Wire::start(emulator).await;
    let port = wire.port().await;
    let sdk = wire.sdk();
    let missing_group = sg("sg-0000ffff");
    let missing_instance = InstanceId::try_new("i-0000ffff").unwrap();
    let missing_vpc = VpcId::try_new("vpc-0000ffff").unwrap();
    let create_in = |vpc: &VpcId, name: &str| CreateGroup {
        vpc_id: vpc.clone(),
        name: name.into(),
        description: "d".into(),
        tags: BTreeMap::new(),
    };
    let too_many_rules: Vec<Grant> =
        (0..61).map(|i| grant(Protocol::Tcp, tcp(1000 + i), v4("10.0.0.0/8"), None)).collect();
    let too_many_tags: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();

    let cases: Vec<(Operation, &str, Result<(), Ec2Error>)> = vec![
        (
            Operation::AuthorizeSecurityGroupIngress,
            codes::PERMISSION_DUPLICATE,
            port.authorize_ingress(&web, std::slice::from_ref(&office)).await,
        ),
        (
            Operation::RevokeSecurityGroupIngress,
            codes::PERMISSION_NOT_FOUND,
            port.revoke_ingress(&mirrors[4], std::slice::from_ref(&office)).await,
        ),
        (
            Operation::UpdateSecurityGroupRuleDescriptionsIngress,
            codes::PERMISSION_NOT_FOUND,
            port.update_ingress_descriptions(&mirrors[4], std::slice::from_ref(&office)).await,
        ),
        (
            Operation::CreateSecurityGroup,
            codes::GROUP_DUPLICATE,
            port.create_security_group(&create_in(&vpc, "m0")).await.map(drop),
        ),
        (
            Operation::CreateSecurityGroup,
            codes::GROUP_RESERVED,
            port.create_security_group(&create_in(&vpc, "default")).await.map(drop),
        ),
        (
            Operation::CreateSecurityGroup,
            codes::INVALID_PARAMETER_VALUE,
            port.create_security_group(&create_in(&vpc, "sg-web")).await.map(drop),
        ),
        (
            Operation::CreateSecurityGroup,
            codes::VPC_NOT_FOUND,
            port.create_security_group(&create_in(&missing_vpc, "x")).await.map(drop),
        ),
        (Operation::DeleteSecurityGroup, codes::GROUP_NOT_FOUND, port.delete_security_group(&missing_group).await),
        (Operation::DeleteSecurityGroup, codes::GROUP_IN_USE, port.delete_security_group(&web).await),
        (Operation::DeleteSecurityGroup, codes::CANNOT_DELETE, port.delete_security_group(&vpc_default).await),
        (Operation::DeleteSecurityGroup, codes::GROUP_RESERVED, port.delete_security_group(&classic_default).await),
        (Operation::DeleteSecurityGroup, codes::DEPENDENCY_VIOLATION, port.delete_security_group(&mirrors[3]).await),
        (Operation::DeleteSecurityGroup, codes::DEPENDENCY_VIOLATION, port.delete_security_group(&mirrors[0]).await),
        (
            Operation::AuthorizeSecurityGroupIngress,
            codes::RULES_LIMIT,
            port.authorize_ingress(&mirrors[5], &too_many_rules).await,
        ),
        (
            Operation::AuthorizeSecurityGroupIngress,
            codes::GROUP_NOT_FOUND,
            port.authorize_ingress(&mirrors[5], &[grant(Protocol::All, Ports::None, to_group(&web), None)]).await,
        ),
        (Operation::CreateTags, codes::TAG_LIMIT, port.create_tags(&mirrors[5], &too_many_tags).await),
        (Operation::CreateTags, codes::GROUP_NOT_FOUND, port.create_tags(&missing_group, &too_many_tags).await),
        (Operation::DeleteTags, codes::GROUP_NOT_FOUND, port.delete_tags(&missing_group, &["k".into()]).await),
        (
            Operation::StopInstances,
            codes::INSTANCE_NOT_FOUND,
            port.world().stop_instances(std::slice::from_ref(&missing_instance)).await,
        ),
        (Operation::StartInstances, codes::INCORRECT_INSTANCE_STATE, port.world().start_instances(&terminated).await),
        (
            Operation::TerminateInstances,
            codes::INSTANCE_NOT_FOUND,
            port.world().terminate_instances(std::slice::from_ref(&missing_instance)).await,
        ),
        (
            Operation::RunInstances,
            codes::GROUP_NOT_FOUND,
            port.world().run_instances("ami-1", &mirrors[0..1], 1).await.map(drop),
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::INSTANCE_NOT_LINKABLE,
            port.attach_classic_link_vpc(&stopped[0], &vpc, &mirrors[0..1]).await,
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::INSTANCE_ALREADY_LINKED,
            port.attach_classic_link_vpc(&running[1], &vpc, &mirrors[0..1]).await,
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::GROUPS_PER_INSTANCE_LIMIT,
            port.attach_classic_link_vpc(&running[0], &vpc, &mirrors).await,
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::MISSING_PARAMETER,
            port.attach_classic_link_vpc(&running[0], &vpc, &[]).await,
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::INSTANCE_NOT_FOUND,
            port.attach_classic_link_vpc(&missing_instance, &vpc, &mirrors[0..1]).await,
        ),
        (
            Operation::AttachClassicLinkVpc,
            codes::VPC_NOT_FOUND,
            port.attach_classic_link_vpc(&running[0], &missing_vpc, &mirrors[0..1]).await,
        ),
        (
            Operation::DetachClassicLinkVpc,
            codes::INSTANCE_NOT_FOUND,
            port.detach_classic_link_vpc(&missing_instance, &vpc).await,
        ),
        (Operation::EnableVpcClassicLink, codes::VPC_CIDR_CONFLICT, port.enable_vpc_classic_link(&conflicting).await),
        (Operation::EnableVpcClassicLink, codes::VPC_NOT_FOUND, port.enable_vpc_classic_link(&missing_vpc).await),
        (Operation::CreateVpc, "InvalidVpc.Range", port.world().create_vpc("10.0.0.0/8").await.map(drop)),
    ];
    let counted = wire.emulator.counters();
    for (operation, code, result) in cases {
        let error = assert_error(result, code);
        assert_eq!(error.operation, operation);
        assert!(counted.errors(operation, code) >= 1, "{operation} {code} was not answered by the engine");
    }

    // What the port cannot express, through the raw SDK.
    let raw = |result: Result<(), String>, code: &str| {
        assert_eq!(result.expect_err(code), code);
    };
    fn code_of<T, E: ProvideErrorMetadata>(result: Result<T, E>) -> Result<(), String> {
        result.map(drop).map_err(|e| e.code().unwrap_or("none").to_owned())
    }
    let bad_cidr = sdk::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(sdk::IpRange::builder().cidr_ip("10.0.0.0/33").build())
        .build();
    raw(
        code_of(sdk.authorize_security_group_ingress().group_id(web.as_str()).ip_permissions(bad_cidr).send().await),
        codes::PERMISSION_MALFORMED,
    );
    let bad_ports = sdk::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(80)
        .ip_ranges(sdk::IpRange::builder().cidr_ip("10.0.0.0/8").build())
        .build();
    raw(
        code_of(sdk.authorize_security_group_ingress().group_id(web.as_str()).ip_permissions(bad_ports).send().await),
        codes::INVALID_PARAMETER_VALUE,
    );
    raw(
        code_of(sdk.describe_instances().instance_ids(running[0].as_str()).max_results(5).send().await),
        codes::INVALID_PARAMETER_COMBINATION,
    );
    raw(code_of(sdk.describe_security_groups().next_token("bogus").send().await), codes::INVALID_PAGINATION_TOKEN);
    raw(code_of(sdk.describe_security_groups().max_results(2).send().await), codes::INVALID_PARAMETER_VALUE);
    raw(code_of(sdk.describe_security_groups().group_ids(missing_group.as_str()).send().await), codes::GROUP_NOT_FOUND);
    raw(
        code_of(sdk.describe_instances().instance_ids(missing_instance.as_str()).send().await),
        codes::INSTANCE_NOT_FOUND,
    );
    raw(code_of(sdk.describe_vpcs().vpc_ids(missing_vpc.as_str()).send().await), codes::VPC_NOT_FOUND);
    raw(code_of(sdk.describe_vpc_classic_link().vpc_ids(missing_vpc.as_str()).send().await), codes::VPC_NOT_FOUND);
    raw(code_of(sdk.delete_security_group().group_id("web").send().await), codes::GROUP_ID_MALFORMED);
    raw(code_of(sdk.stop_instances().instance_ids("web").send().await), codes::INSTANCE_ID_MALFORMED);
    raw(code_of(sdk.enable_vpc_classic_link().vpc_id("web").send().await), codes::VPC_ID_MALFORMED);
    raw(
        code_of(sdk.create_tags().resources("ami-1").tags(sdk::Tag::builder().key("k").build()).send().await),
        codes::INVALID_ID,
    );
    raw(code_of(sdk.create_security_group().group_name("x").send().await), codes::MISSING_PARAMETER);
    raw(
        code_of(sdk.create_security_group().group_name("x").description("d").dry_run(true).send().await),
        codes::DRY_RUN_OPERATION,
    );
    assert!(sdk.describe_security_groups().group_names("x").send().await.is_err());
}

#[tokio::test]
async fn injected_faults_answer_500_and_503_and_classify_as_transient() {
    let faults = Faults {
        errors: ErrorInjection { rate: 1.0, codes: vec![codes::INTERNAL_ERROR.into()], ..ErrorInjection::default() },
        ..Faults::none()
    };
    let wire = Wire::start(Emulator::new(EmulatorOptions { faults, ..EmulatorOptions::default() })).await;
    let port = wire.port().await;
    let error = assert_error(port.describe_security_groups(&GroupFilter::default()).await, codes::INTERNAL_ERROR);
    assert_eq!(error.kind, ErrorKind::Transient);
    let status = |wire: &Wire| {
        let request = wire
            .http()
            .post(&wire.url)
            .header("content-type", FORM)
            .body(form(&[("Action", "DescribeVpcs"), ("Version", "2016-11-15")]));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(&wire).await.as_u16(), 500);
    wire.emulator.set_faults(Faults {
        errors: ErrorInjection { rate: 1.0, codes: vec![codes::UNAVAILABLE.into()], ..ErrorInjection::default() },
        ..Faults::none()
    });
    assert_eq!(status(&wire).await.as_u16(), 503);
    assert_error(port.enable_vpc_classic_link(&VpcId::try_new("vpc-1").unwrap()).await, codes::UNAVAILABLE);
}

#[tokio::test]
async fn an_empty_token_bucket_answers_503_request_limit_exceeded_classified_as_throttled() {
    let stingy = Throttle {
        describe: Bucket { capacity: 2.0, refill_per_second: 0.001 },
        mutating: Bucket { capacity: 1.0, refill_per_second: 0.001 },
    };
    let faults = Faults::none().with_throttle(stingy);
    let wire = Wire::start(Emulator::new(EmulatorOptions { faults, ..EmulatorOptions::default() })).await;
    let port = wire.port().await;
    port.describe_security_groups(&GroupFilter::default()).await.expect("first token");
    port.describe_security_groups(&GroupFilter::default()).await.expect("second token");
    let error =
        assert_error(port.describe_security_groups(&GroupFilter::default()).await, codes::REQUEST_LIMIT_EXCEEDED);
    assert_eq!(error.kind, ErrorKind::Throttled);
    // Mutating actions draw from their own bucket, and bad requests spend tokens too.
    let raw = wire.sdk().create_security_group().group_name("x").send().await.expect_err("missing description");
    assert_eq!(raw.code(), Some(codes::MISSING_PARAMETER));
    let raw = wire.sdk().create_security_group().group_name("x").description("d").send().await.expect_err("empty");
    assert_eq!(raw.code(), Some(codes::REQUEST_LIMIT_EXCEEDED));
    assert_eq!(raw.raw_response().map(|r| r.status().as_u16()), Some(503));
    let calls = wire.emulator.counters();
    assert_eq!(calls.get(Operation::DescribeSecurityGroups).throttled, 1);
    assert_eq!(calls.get(Operation::CreateSecurityGroup).throttled, 1);
}

// ----- control endpoints and malformed requests -------------------------------------------------

#[tokio::test]
async fn counters_are_served_as_json_and_reset() {
    let wire = Wire::start(Emulator::default()).await;
    let port = wire.port().await;
    port.describe_security_groups(&GroupFilter::default()).await.unwrap();
    let _ = port.delete_security_group(&sg("sg-0000ffff")).await;
    let http = wire.http();
    let calls: serde_json::Value =
        http.get(format!("{}/_emulator/calls", wire.url)).send().await.unwrap().json().await.expect("JSON");
    assert_eq!(calls["DescribeSecurityGroups"]["requests"], 1);
    assert_eq!(calls["DescribeSecurityGroups"]["ok"], 1);
    assert_eq!(calls["DeleteSecurityGroup"]["errors"][codes::GROUP_NOT_FOUND], 1);
    let reset = http.post(format!("{}/_emulator/reset-calls", wire.url)).send().await.unwrap();
    assert_eq!(reset.status().as_u16(), 204);
    let calls: serde_json::Value =
        http.get(format!("{}/_emulator/calls", wire.url)).send().await.unwrap().json().await.expect("JSON");
    assert_eq!(calls, serde_json::json!({}));
}

/// The parts of an EC2 error document, parsed with a real XML parser.
#[derive(Debug, Default, PartialEq)]
struct ErrorDoc {
    root: String,
    code: String,
    message: String,
    request_id: String,
}

fn parse_error_doc(text: &str) -> ErrorDoc {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut doc = ErrorDoc::default();
    let mut path: Vec<String> = Vec::new();
    loop {
        // Text comes in pieces: character data, then each entity or character reference.
        let piece = match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                let name = e.name().0.to_owned();
                if path.is_empty() {
                    doc.root.clone_from(&name);
                }
                path.push(name);
                continue;
            }
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Text(t) => t.xml10_content().into_owned(),
            Event::GeneralRef(r) => {
                quick_xml::escape::unescape(&format!("&{};", r.into_inner())).expect("known entity").into_owned()
            }
            Event::Eof => return doc,
            _ => continue,
        };
        match path.join("/").as_str() {
            "Response/Errors/Error/Code" => doc.code.push_str(&piece),
            "Response/Errors/Error/Message" => doc.message.push_str(&piece),
            "Response/RequestID" => doc.request_id.push_str(&piece),
            _ => {}
        }
    }
}

#[tokio::test]
async fn malformed_requests_are_answered_with_ec2_error_documents() {
    let wire = Wire::start(Emulator::default()).await;
    let http = wire.http();
    let version = ("Version", "2016-11-15");
    let cases: Vec<(Form<'_>, u16, &str)> = vec![
        (vec![version], 400, codes::MISSING_ACTION),
        (vec![("Action", "DescribeUnicorns"), version], 400, codes::INVALID_ACTION),
        (vec![("Action", "DescribeSecurityGroups")], 400, codes::MISSING_PARAMETER),
        (
            vec![("Action", "DescribeSecurityGroups"), version, ("GroupId.x", "sg-1")],
            400,
            codes::INVALID_PARAMETER_VALUE,
        ),
        (
            vec![("Action", "DescribeSecurityGroups"), version, ("GroupId.0", "sg-1")],
            400,
            codes::INVALID_PARAMETER_VALUE,
        ),
        (
            vec![("Action", "DescribeSecurityGroups"), version, ("MaxResults", "lots")],
            400,
            codes::INVALID_PARAMETER_VALUE,
        ),
        (vec![("Action", "DescribeInstances"), version, ("Filter.1.Value.1", "x")], 400, codes::MISSING_PARAMETER),
        (vec![("Action", "CreateSecurityGroup"), version, ("GroupName", "<&>")], 400, codes::MISSING_PARAMETER),
        (vec![("Action", "DeleteSecurityGroup"), version, ("DryRun", "true")], 412, codes::DRY_RUN_OPERATION),
    ];
    for (pairs, status, code) in cases {
        let response = http.post(&wire.url).header("content-type", FORM).body(form(&pairs)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{pairs:?}");
        assert_eq!(response.headers()["content-type"], "text/xml;charset=UTF-8");
        let header_id = response.headers()["x-amzn-requestid"].to_str().unwrap().to_owned();
        let doc = parse_error_doc(&response.text().await.unwrap());
        assert_eq!((doc.root.as_str(), doc.code.as_str()), ("Response", code), "{pairs:?}: {doc:?}");
        assert!(!doc.message.is_empty(), "{doc:?}");
        assert_eq!(doc.request_id, header_id);
    }

    // Broken percent-encoding.
    let response = http
        .post(&wire.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=DescribeVpcs&Version=2016-11-15&VpcId.1=%zz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(parse_error_doc(&response.text().await.unwrap()).code, codes::MALFORMED_QUERY_STRING);

    // A message quoting the request is escaped, not injected.
    let response = http
        .post(&wire.url)
        .header("content-type", FORM)
        .body(form(&[("Action", "DescribeSecurityGroups"), version, ("GroupName.1", "</Message><Code>Evil")]))
        .send()
        .await
        .unwrap();
    let doc = parse_error_doc(&response.text().await.unwrap());
    assert_eq!(doc.code, codes::GROUP_NOT_FOUND);
    assert!(doc.message.contains("</Message><Code>Evil"), "{doc:?}");

    // GET with a query string works like a POST.
    let response = http.get(format!("{}/?Action=DescribeVpcs&Version=2016-11-15", wire.url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains(r#"<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">"#), "{body}");

    // Refused parameters are counted against their action; requests without one are not.
    let calls = wire.emulator.counters();
    assert_eq!(calls.errors(Operation::DescribeSecurityGroups, codes::INVALID_PARAMETER_VALUE), 3);
    assert_eq!(calls.errors(Operation::DescribeSecurityGroups, codes::MISSING_PARAMETER), 1);
    assert_eq!(calls.requests(Operation::DeleteSecurityGroup), 0, "a dry run is not a request to the engine");
}

#[tokio::test]
async fn a_body_over_two_megabytes_is_answered_with_an_ec2_error_document_not_a_reset() {
    let wire = Wire::start(Emulator::default()).await;
    let http = wire.http();
    // Just at the limit: parsed and answered normally.
    let base = "Action=DescribeVpcs&Version=2016-11-15&Pad=";
    let at_limit = format!("{base}{}", "a".repeat(codes::MAX_REQUEST_BYTES - base.len()));
    let response = http.post(&wire.url).header("content-type", FORM).body(at_limit).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // One byte over, and far over: an EC2 error document with status 413.
    for size in [codes::MAX_REQUEST_BYTES + 1, 5 * codes::MAX_REQUEST_BYTES] {
        let body = format!("{base}{}", "a".repeat(size - base.len()));
        let response = http.post(&wire.url).header("content-type", FORM).body(body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 413, "{size} bytes");
        assert_eq!(response.headers()["content-type"], "text/xml;charset=UTF-8");
        let header_id = response.headers()["x-amzn-requestid"].to_str().unwrap().to_owned();
        let doc = parse_error_doc(&response.text().await.unwrap());
        assert_eq!((doc.root.as_str(), doc.code.as_str()), ("Response", codes::REQUEST_ENTITY_TOO_LARGE), "{doc:?}");
        assert!(doc.message.contains("2097152 bytes"), "{doc:?}");
        assert_eq!(doc.request_id, header_id);
    }
    assert_eq!(wire.emulator.counters().requests(Operation::DescribeVpcs), 1, "an oversized request reaches no engine");
}

#[tokio::test]
async fn reversed_ports_are_refused_without_rust_debug_text_in_the_message() {
    let wire = Wire::start(Emulator::default()).await;
    let vpc = wire.emulator.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let group = wire.emulator.create_group(&NewGroup::in_vpc(&vpc, "web", "Web")).await.unwrap();
    let version = ("Version", "2016-11-15");
    let pairs: Form<'_> = vec![
        ("Action", "AuthorizeSecurityGroupIngress"),
        version,
        ("GroupId", group.as_str()),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "80"),
        ("IpPermissions.1.ToPort", "22"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
    ];
    let response = wire.http().post(&wire.url).header("content-type", FORM).body(form(&pairs)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let doc = parse_error_doc(&response.text().await.unwrap());
    assert_eq!(doc.code, codes::INVALID_PARAMETER_VALUE);
    assert!(doc.message.contains("FromPort 80, ToPort 22"), "{doc:?}");
    for debug in ["Some(", "None", "Range {", "{ from"] {
        assert!(!doc.message.contains(debug), "{debug} in {doc:?}");
    }

    // Through the port, a grant whose ports do not fit its protocol.
    let bad = Grant::new(Protocol::Tcp, Ports::None, v4("10.0.0.0/8"), None);
    let error = wire.emulator.authorize_ingress(&group, &[bad]).await.unwrap_err();
    assert_eq!(error.code, codes::INVALID_PARAMETER_VALUE);
    assert!(!error.message.contains("None") && !error.message.contains('{'), "{error:?}");
    assert!(error.message.contains("FromPort none, ToPort none"), "{error:?}");
}
