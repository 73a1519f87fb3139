//! Grants across accounts and regions end to end (docs/semantics.md,
//! "Prefix lists" and "References to groups of other accounts"): a VPC
//! source in account A / us-east-1 with a rule from S3's AWS-managed prefix
//! list and one from an unmanaged group of its VPC, mirrored into account B
//! in another region (the list mapped by name, the reference reported) and
//! in the same region (the list as it is, the reference kept as
//! `UserId` + group, revoked when the source drops it).

use std::time::SystemTime;

use classiclink_mirror::config::Config;
use classiclink_mirror::ec2::{Ec2, Operation, PrefixListFilter};
use classiclink_mirror::emulator::{Cloud, Emulator, EmulatorOptions, Estate};
use classiclink_mirror::model::{Grant, GroupId, Peer, Ports, PrefixListId, Protocol, VpcId};
use classiclink_mirror::plan::{Unmirrorable, WarningKind};
use classiclink_mirror::reconcile;
use tokio_util::sync::CancellationToken;

use crate::accounts::{connect, serve};

const SOURCE_ACCOUNT: &str = "111111111111";
const TARGET_ACCOUNT: &str = "222222222222";

/// Account A (us-east-1): `web` allows 443 from S3's list and 22 from
/// `bastion`, which no mapping manages. Account B: the target VPC, in the
/// region `{target_region}`.
const ESTATE: &str = r#"
[[account]]
id = "111111111111"
[[account.role]]
name = "read"
[[account]]
id = "222222222222"
[[account.role]]
name = "write"

[[world]]
account = "111111111111"
region = "us-east-1"
[[world.vpc]]
name = "old"
id = "vpc-0a0a0a0a"
[[world.group]]
name = "web"
vpc = "old"
id = "sg-0e0e0e01"
[[world.group.rules]]
protocol = "tcp"
port = 443
prefix_list = "com.amazonaws.us-east-1.s3"
description = "to S3"
[[world.group.rules]]
protocol = "tcp"
port = 22
from_group = "bastion"
[[world.group]]
name = "bastion"
vpc = "old"
id = "sg-0e0e0e09"

[[world]]
account = "222222222222"
region = "{target_region}"
[[world.vpc]]
name = "new"
id = "vpc-0b0b0b0b"
cidr = "10.20.0.0/16"
"#;

async fn setup(target_region: &str) -> (Cloud, Config, std::sync::Arc<dyn Ec2>) {
    let estate = Estate::from_toml(&ESTATE.replace("{target_region}", target_region)).unwrap();
    let cloud = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let url = serve(cloud.clone()).await;
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         [accounts.source]\nregion = \"us-east-1\"\nrole_arn = \"arn:aws:iam::{SOURCE_ACCOUNT}:role/read\"\n\
         [accounts.target]\nregion = \"{target_region}\"\nrole_arn = \"arn:aws:iam::{TARGET_ACCOUNT}:role/write\"\n\
         [[mirror]]\nsource_group = \"sg-0e0e0e01\"\nvpc = \"vpc-0b0b0b0b\"\nsource_account = \"source\"\n\
         target_account = \"target\"\n"
    );
    let config = Config::from_toml_str(&text, None)
        .unwrap_or_else(|e| panic!("{}", classiclink_mirror::config::render_errors(&e)));
    let ec2 = connect(&config).await;
    (cloud, config, ec2)
}

async fn aws_list(world: &Emulator, name: &str) -> PrefixListId {
    let filter =
        PrefixListFilter { names: vec![name.to_owned()], owner_ids: vec!["AWS".into()], ..PrefixListFilter::default() };
    world.describe_prefix_lists(&filter).await.unwrap().remove(0).id
}

fn mirror(world: &Emulator) -> GroupId {
    world.group_id(Some(&VpcId::try_new("vpc-0b0b0b0b").unwrap()), "web").expect("the mirror")
}

fn calls(world: &Emulator, operation: Operation) -> u64 {
    world.counters().iter().find(|(op, _)| *op == operation).map_or(0, |(_, counts)| counts.requests)
}

#[tokio::test]
async fn an_s3_list_rule_gets_the_target_regions_s3_list_and_a_reference_across_regions_is_reported() {
    let (cloud, config, ec2) = setup("eu-west-1").await;
    let first = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(first.converged, "{:#?}", first.passes);

    let source = cloud.world(SOURCE_ACCOUNT, "us-east-1");
    let target = cloud.world(TARGET_ACCOUNT, "eu-west-1");
    // One describe of the lists in each account per pass.
    let passes = first.passes.len() as u64;
    assert_eq!(calls(&source, Operation::DescribeManagedPrefixLists), passes);
    assert_eq!(calls(&target, Operation::DescribeManagedPrefixLists), passes);
    let (ours, theirs) =
        (aws_list(&target, "com.amazonaws.eu-west-1.s3").await, aws_list(&source, "com.amazonaws.us-east-1.s3").await);
    assert_ne!(ours, theirs, "each region has its own list");
    let grants = target.peek_group(&mirror(&target)).unwrap().ingress;
    let https = Grant::new(Protocol::Tcp, Ports::Range { from: 443, to: 443 }, Peer::PrefixList(ours), None);
    assert_eq!(grants.iter().map(|g| &g.key).collect::<Vec<_>>(), vec![&https.key], "{grants:#?}");
    assert_eq!(grants[0].description.as_deref(), Some("to S3"));
    // bastion, in us-east-1, cannot be referenced from eu-west-1.
    let warning = first.passes[0].plan.warnings.iter().find(|w| w.reason == Some(Unmirrorable::OtherRegion));
    assert!(warning.is_some_and(|w| w.message.contains("sg-0e0e0e09")), "{:#?}", first.passes[0].plan.warnings);

    target.reset_counters();
    let second = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(second.converged && second.passes.len() == 1, "{:#?}", second.passes);
    assert_eq!(target.mutating_calls(), 0, "a converged target gets no writes");
    assert_eq!(source.mutating_calls(), 0, "nothing is written in the source account");
}

#[tokio::test]
async fn in_the_same_region_the_list_is_the_same_and_a_reference_stays_user_id_and_group_until_the_source_drops_it() {
    let (cloud, config, ec2) = setup("us-east-1").await;
    let first = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(first.converged, "{:#?}", first.passes);
    assert!(!first.passes.iter().any(|p| p.plan.warnings.iter().any(|w| w.kind == WarningKind::Unmirrorable)));

    let source = cloud.world(SOURCE_ACCOUNT, "us-east-1");
    let target = cloud.world(TARGET_ACCOUNT, "us-east-1");
    // No list is described in the target: the regions are the same.
    assert_eq!(calls(&target, Operation::DescribeManagedPrefixLists), 0);
    let s3 = aws_list(&source, "com.amazonaws.us-east-1.s3").await;
    assert_eq!(aws_list(&target, "com.amazonaws.us-east-1.s3").await, s3, "one id for every account of the region");
    let web = mirror(&target);
    let mut peers: Vec<Peer> = target.peek_group(&web).unwrap().ingress.into_iter().map(|g| g.key.peer).collect();
    peers.sort();
    let bastion = GroupId::try_new("sg-0e0e0e09").unwrap();
    let kept = Peer::Group { group: bastion.clone(), owner: Some(SOURCE_ACCOUNT.to_owned()) };
    assert_eq!(peers, vec![Peer::PrefixList(s3), kept.clone()]);

    target.reset_counters();
    let second = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(second.converged && second.passes.len() == 1, "{:#?}", second.passes);
    assert_eq!(target.mutating_calls(), 0, "a converged target gets no writes");

    // The source drops the rule: the kept reference is ours, and goes.
    let source_web = GroupId::try_new("sg-0e0e0e01").unwrap();
    let ssh =
        Grant::new(Protocol::Tcp, Ports::Range { from: 22, to: 22 }, Peer::Group { group: bastion, owner: None }, None);
    source.revoke_ingress(&source_web, &[ssh]).await.unwrap();
    let third = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(third.converged, "{:#?}", third.passes);
    let peers: Vec<Peer> = target.peek_group(&web).unwrap().ingress.into_iter().map(|g| g.key.peer).collect();
    assert!(!peers.contains(&kept), "{peers:?}");
}

#[tokio::test]
async fn a_reference_to_a_group_another_account_does_not_have_is_refused_invalid_group_not_found() {
    let (cloud, config, ec2) = setup("us-east-1").await;
    let _ = config;
    let target = cloud.world(TARGET_ACCOUNT, "us-east-1");
    let group = target
        .create_security_group(&classiclink_mirror::ec2::CreateGroup {
            name: "g".into(),
            description: "g".into(),
            vpc_id: VpcId::try_new("vpc-0b0b0b0b").unwrap(),
            tags: Default::default(),
        })
        .await
        .unwrap();
    let from = |id: &str| {
        let peer = Peer::Group { group: GroupId::try_new(id).unwrap(), owner: Some(SOURCE_ACCOUNT.to_owned()) };
        [Grant::new(Protocol::Tcp, Ports::Range { from: 22, to: 22 }, peer, None)]
    };
    // Through the target account's client, over the wire.
    let error = ec2.authorize_ingress(&group, &from("sg-0e0e0e77")).await.unwrap_err();
    assert_eq!(error.code, classiclink_mirror::ec2::codes::GROUP_NOT_FOUND, "{error:?}");
    ec2.authorize_ingress(&group, &from("sg-0e0e0e09")).await.unwrap();
}

#[tokio::test]
async fn a_reference_emulated_ec2_refuses_fails_alone_and_the_other_grants_are_applied() {
    let (cloud, config, ec2) = setup("us-east-1").await;
    // web also allows 9100 from a group account 333333333333 does not have.
    let source = cloud.world(SOURCE_ACCOUNT, "us-east-1");
    let missing = Peer::Group { group: GroupId::try_new("sg-0e0e0e77").unwrap(), owner: Some("333333333333".into()) };
    let monitoring = Grant::new(Protocol::Tcp, Ports::Range { from: 9100, to: 9100 }, missing.clone(), None);
    source.authorize_ingress(&GroupId::try_new("sg-0e0e0e01").unwrap(), &[monitoring]).await.unwrap();

    let first = reconcile::apply(ec2.as_ref(), &config, 3, &SystemTime::now, &CancellationToken::new()).await;
    assert!(!first.converged, "EC2 keeps refusing the reference");
    let refused: Vec<String> = first.passes[0].report.failures().map(|(_, e)| e.to_string()).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("InvalidGroup.NotFound") && refused[0].contains("sg-0e0e0e77"), "{refused:?}");
    let target = cloud.world(TARGET_ACCOUNT, "us-east-1");
    let peers: Vec<Peer> =
        target.peek_group(&mirror(&target)).unwrap().ingress.into_iter().map(|g| g.key.peer).collect();
    assert_eq!(peers.len(), 2, "the list and the bastion reference are there: {peers:?}");
    assert!(!peers.contains(&missing));
}

#[tokio::test]
async fn a_source_rule_naming_a_group_of_the_target_account_was_left_on_the_mirror_when_the_source_dropped_it() {
    let (cloud, config, ec2) = setup("us-east-1").await;
    let target = cloud.world(TARGET_ACCOUNT, "us-east-1");
    let jump = target
        .create_security_group(&classiclink_mirror::ec2::CreateGroup {
            name: "jump".into(),
            description: "jump".into(),
            vpc_id: VpcId::try_new("vpc-0b0b0b0b").unwrap(),
            tags: Default::default(),
        })
        .await
        .unwrap();
    // web (account A) allows 2222 from jump, a group of the target account B.
    let source = cloud.world(SOURCE_ACCOUNT, "us-east-1");
    let named = Peer::Group { group: jump.clone(), owner: Some(TARGET_ACCOUNT.to_owned()) };
    let rule = Grant::new(Protocol::Tcp, Ports::Range { from: 2222, to: 2222 }, named, None);
    let source_web = GroupId::try_new("sg-0e0e0e01").unwrap();
    source.authorize_ingress(&source_web, std::slice::from_ref(&rule)).await.unwrap();

    let first = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(first.converged, "{:#?}", first.passes);
    let web = mirror(&target);
    // Described back on the mirror as EC2 does: a group of its own account, no owner.
    let kept = Peer::Group { group: jump, owner: None };
    let peers: Vec<Peer> = target.peek_group(&web).unwrap().ingress.into_iter().map(|g| g.key.peer).collect();
    assert!(peers.contains(&kept), "{peers:?}");
    target.reset_counters();
    let second = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(second.converged && second.passes.len() == 1, "{:#?}", second.passes);
    assert_eq!(target.mutating_calls(), 0, "a converged target gets no writes");

    // The source drops the rule: the reference was its, and goes.
    source.revoke_ingress(&source_web, &[rule]).await.unwrap();
    let third = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(third.converged, "{:#?}", third.passes);
    let peers: Vec<Peer> = target.peek_group(&web).unwrap().ingress.into_iter().map(|g| g.key.peer).collect();
    assert!(!peers.contains(&kept), "{peers:?}");
}
