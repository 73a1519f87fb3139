//! ClassicLink: attach, detach, and every reason an attach is refused.

use std::collections::BTreeSet;

use super::*;
use crate::ec2::{Ec2, LinkFilter};
use crate::emulator::{RunInstances, codes};
use crate::model::InstanceId;

async fn running_classic(emu: &Emulator) -> InstanceId {
    emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0)
}

#[tokio::test]
async fn a_running_classic_instance_links_to_groups_of_a_classic_link_vpc() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let app = vpc_group(&emu, &vpc, "app").await;
    let instance = running_classic(&emu).await;
    emu.attach_classic_link_vpc(&instance, &vpc, &[web.clone(), app.clone(), web.clone()]).await.unwrap();
    let link = emu.peek_link(&instance).unwrap();
    assert_eq!(link.vpc_id, vpc);
    assert_eq!(link.groups, BTreeSet::from([web, app]));
}

#[tokio::test]
async fn attaching_an_unknown_instance_or_to_an_unknown_vpc_is_not_found() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let missing = InstanceId::try_new("i-0badbad0").unwrap();
    assert_eq!(
        code(emu.attach_classic_link_vpc(&missing, &vpc, std::slice::from_ref(&web)).await),
        codes::INSTANCE_NOT_FOUND
    );
    let instance = running_classic(&emu).await;
    let gone = VpcId::try_new("vpc-0badbad0").unwrap();
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &gone, &[web]).await), codes::VPC_NOT_FOUND);
}

#[tokio::test]
async fn only_running_classic_instances_are_linkable() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let in_vpc = emu.run_instances(&RunInstances::in_vpc(&vpc, [])).await.unwrap().remove(0);
    assert_eq!(
        code(emu.attach_classic_link_vpc(&in_vpc, &vpc, std::slice::from_ref(&web)).await),
        codes::INSTANCE_NOT_LINKABLE
    );
    let stopped = running_classic(&emu).await;
    emu.stop_instances(std::slice::from_ref(&stopped)).await.unwrap();
    assert_eq!(
        code(emu.attach_classic_link_vpc(&stopped, &vpc, std::slice::from_ref(&web)).await),
        codes::INSTANCE_NOT_LINKABLE
    );
    let pending = emu
        .run_instances(&RunInstances::classic([]).pending_for(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(code(emu.attach_classic_link_vpc(&pending, &vpc, &[web]).await), codes::INSTANCE_NOT_LINKABLE);
}

#[tokio::test]
async fn linking_to_a_vpc_without_classic_link_is_refused_until_it_is_enabled() {
    let emu = Emulator::default();
    let vpc = emu.create_vpc(&NewVpc::classic_link(false)).await.unwrap();
    let web = vpc_group(&emu, &vpc, "web").await;
    let instance = running_classic(&emu).await;
    assert_eq!(
        code(emu.attach_classic_link_vpc(&instance, &vpc, std::slice::from_ref(&web)).await),
        codes::INSTANCE_NOT_LINKABLE
    );
    emu.enable_vpc_classic_link(&vpc).await.unwrap();
    emu.attach_classic_link_vpc(&instance, &vpc, &[web]).await.unwrap();
}

#[tokio::test]
async fn groups_of_another_vpc_or_classic_groups_are_not_found_in_the_link_vpc() {
    let (emu, vpc) = world_with_vpc().await;
    let other = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let elsewhere = vpc_group(&emu, &other, "web").await;
    let classic = classic_group(&emu, "web").await;
    let instance = running_classic(&emu).await;
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &vpc, &[elsewhere]).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &vpc, &[classic]).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &vpc, &[]).await), codes::MISSING_PARAMETER);
}

#[tokio::test]
async fn a_link_has_at_most_five_groups() {
    let (emu, vpc) = world_with_vpc().await;
    let mut groups = Vec::new();
    for i in 0..6 {
        groups.push(vpc_group(&emu, &vpc, &format!("g{i}")).await);
    }
    let instance = running_classic(&emu).await;
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &vpc, &groups).await), codes::GROUPS_PER_INSTANCE_LIMIT);
    emu.attach_classic_link_vpc(&instance, &vpc, &groups[..5]).await.unwrap();
}

#[tokio::test]
async fn an_instance_already_linked_cannot_be_linked_again_until_detached() {
    let (emu, vpc) = world_with_vpc().await;
    let other = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = vpc_group(&emu, &vpc, "web").await;
    let app = vpc_group(&emu, &vpc, "app").await;
    let there = vpc_group(&emu, &other, "web").await;
    let instance = running_classic(&emu).await;
    emu.attach_classic_link_vpc(&instance, &vpc, std::slice::from_ref(&web)).await.unwrap();
    let same_vpc = emu.attach_classic_link_vpc(&instance, &vpc, &[web.clone(), app.clone()]).await;
    assert_eq!(code(same_vpc), codes::INSTANCE_ALREADY_LINKED);
    assert_eq!(code(emu.attach_classic_link_vpc(&instance, &other, &[there]).await), codes::INSTANCE_ALREADY_LINKED);
    // A relink is detach then attach.
    emu.detach_classic_link_vpc(&instance, &vpc).await.unwrap();
    emu.attach_classic_link_vpc(&instance, &vpc, &[web.clone(), app.clone()]).await.unwrap();
    assert_eq!(emu.peek_link(&instance).unwrap().groups, BTreeSet::from([web, app]));
}

#[tokio::test]
async fn detaching_an_instance_that_is_not_linked_there_is_harmless() {
    let (emu, vpc) = world_with_vpc().await;
    let other = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = vpc_group(&emu, &vpc, "web").await;
    let instance = running_classic(&emu).await;
    emu.detach_classic_link_vpc(&instance, &vpc).await.unwrap();
    emu.attach_classic_link_vpc(&instance, &vpc, &[web]).await.unwrap();
    emu.detach_classic_link_vpc(&instance, &other).await.unwrap();
    assert!(emu.peek_link(&instance).is_some(), "a detach from another VPC leaves the link alone");
    let missing = InstanceId::try_new("i-0badbad0").unwrap();
    assert_eq!(code(emu.detach_classic_link_vpc(&missing, &vpc).await), codes::INSTANCE_NOT_FOUND);
}

#[tokio::test]
async fn classic_link_instances_are_described_with_filters() {
    let (emu, vpc) = world_with_vpc().await;
    let other = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = vpc_group(&emu, &vpc, "web").await;
    let app = vpc_group(&emu, &vpc, "app").await;
    let there = vpc_group(&emu, &other, "db").await;
    let ids = emu.run_instances(&RunInstances::classic([]).count(4)).await.unwrap();
    emu.attach_classic_link_vpc(&ids[0], &vpc, std::slice::from_ref(&web)).await.unwrap();
    emu.attach_classic_link_vpc(&ids[1], &vpc, &[web.clone(), app.clone()]).await.unwrap();
    emu.attach_classic_link_vpc(&ids[2], &other, &[there]).await.unwrap();
    let all = emu.describe_classic_link_instances(&LinkFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    let by_group = LinkFilter { group_ids: vec![app], ..Default::default() };
    assert_eq!(emu.describe_classic_link_instances(&by_group).await.unwrap()[0].instance_id, ids[1]);
    let by_vpc = LinkFilter { vpc_ids: vec![other.clone()], ..Default::default() };
    assert_eq!(emu.describe_classic_link_instances(&by_vpc).await.unwrap()[0].instance_id, ids[2]);
    let by_id = LinkFilter { instance_ids: vec![ids[0].clone(), ids[3].clone()], ..Default::default() };
    let found = emu.describe_classic_link_instances(&by_id).await.unwrap();
    assert_eq!(found.len(), 1, "unlinked instances are not listed");
    let combined = LinkFilter { vpc_ids: vec![vpc], group_ids: vec![web], instance_ids: vec![ids[1].clone()] };
    assert_eq!(emu.describe_classic_link_instances(&combined).await.unwrap().len(), 1);
}
