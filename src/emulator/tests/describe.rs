//! Describes: pages, tokens, explicit ids, filters, and how the port walks pages.

use std::collections::BTreeMap;

use super::*;
use crate::ec2::{Ec2, GroupFilter, InstanceFilter, LinkFilter, Operation};
use crate::emulator::{Filter, PageRequest, RunInstances, codes};
use crate::model::{DEFAULT_DISCOVERY_TAG, InstanceId, InstanceState};

#[tokio::test]
async fn security_groups_come_in_pages_until_the_token_runs_out() {
    let (emu, vpc) = world_with_vpc().await;
    for i in 0..9 {
        vpc_group(&emu, &vpc, &format!("g{i}")).await;
    }
    // 2 default groups + 9 = 11 groups: pages of 5, 5, 1.
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = emu
            .describe_security_groups_page(&[], &GroupFilter::default(), &PageRequest::after(5, token))
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|g| g.id));
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 11);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order, no repeats");
    assert_eq!(emu.counters().requests(Operation::DescribeSecurityGroups), 3, "each page is one request");
}

#[tokio::test]
async fn without_max_results_everything_comes_in_one_page() {
    let (emu, vpc) = world_with_vpc().await;
    for i in 0..7 {
        vpc_group(&emu, &vpc, &format!("g{i}")).await;
    }
    let page = emu.describe_security_groups_page(&[], &GroupFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!((page.items.len(), page.next_token), (9, None));
}

#[tokio::test]
async fn max_results_outside_five_to_a_thousand_is_invalid() {
    let (emu, _) = world_with_vpc().await;
    let filter = GroupFilter::default();
    for bad in [0, 4, 1001] {
        let result = emu.describe_security_groups_page(&[], &filter, &PageRequest::first(bad)).await;
        assert_eq!(code(result), codes::INVALID_PARAMETER_VALUE);
        let result = emu.describe_instances_page(&[], &InstanceFilter::default(), &PageRequest::first(bad)).await;
        assert_eq!(code(result), codes::INVALID_PARAMETER_VALUE);
        assert_eq!(code(emu.describe_vpcs_page(&[], &PageRequest::first(bad)).await), codes::INVALID_PARAMETER_VALUE);
    }
    let result = emu.describe_classic_link_instances_page(&[], &LinkFilter::default(), &PageRequest::first(4)).await;
    assert_eq!(code(result), codes::INVALID_PARAMETER_VALUE);
    // DescribeClassicLinkInstances caps large values instead.
    emu.describe_classic_link_instances_page(&[], &LinkFilter::default(), &PageRequest::first(5000)).await.unwrap();
}

#[tokio::test]
async fn a_token_not_issued_for_the_action_is_rejected() {
    let (emu, _) = world_with_vpc().await;
    let page = PageRequest { max_results: Some(5), next_token: Some("garbage".into()) };
    assert_eq!(
        code(emu.describe_instances_page(&[], &InstanceFilter::default(), &page).await),
        codes::INVALID_PAGINATION_TOKEN
    );
    let page = PageRequest { max_results: Some(5), next_token: Some("i:i-00000001".into()) };
    let groups = emu.describe_security_groups_page(&[], &GroupFilter::default(), &page).await;
    assert_eq!(code(groups), codes::INVALID_PAGINATION_TOKEN);
}

#[tokio::test]
async fn explicit_ids_must_exist_while_filters_only_narrow() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let missing = GroupId::try_new("sg-0badbad0").unwrap();
    let result = emu
        .describe_security_groups_page(
            &[web.clone(), missing.clone()],
            &GroupFilter::default(),
            &PageRequest::default(),
        )
        .await;
    assert_eq!(code(result), codes::GROUP_NOT_FOUND);
    let filter = GroupFilter { group_ids: vec![web.clone(), missing], ..Default::default() };
    assert_eq!(emu.describe_security_groups(&filter).await.unwrap().len(), 1);

    let instance = InstanceId::try_new("i-0badbad0").unwrap();
    let result = emu
        .describe_instances_page(std::slice::from_ref(&instance), &InstanceFilter::default(), &PageRequest::default())
        .await;
    assert_eq!(code(result), codes::INSTANCE_NOT_FOUND);
    let result = emu
        .describe_classic_link_instances_page(
            std::slice::from_ref(&instance),
            &LinkFilter::default(),
            &PageRequest::default(),
        )
        .await;
    assert_eq!(code(result), codes::INSTANCE_NOT_FOUND);
    let gone = VpcId::try_new("vpc-0badbad0").unwrap();
    assert_eq!(
        code(emu.describe_vpcs_page(std::slice::from_ref(&gone), &PageRequest::default()).await),
        codes::VPC_NOT_FOUND
    );
}

#[tokio::test]
async fn instance_ids_cannot_be_combined_with_max_results() {
    let (emu, _) = world_with_vpc().await;
    let id = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    let ids = std::slice::from_ref(&id);
    let result = emu.describe_instances_page(ids, &InstanceFilter::default(), &PageRequest::first(5)).await;
    assert_eq!(code(result), codes::INVALID_PARAMETER_COMBINATION);
    let result = emu.describe_classic_link_instances_page(ids, &LinkFilter::default(), &PageRequest::first(5)).await;
    assert_eq!(code(result), codes::INVALID_PARAMETER_COMBINATION);
    let page = emu.describe_instances_page(ids, &InstanceFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(page.items[0].id, id);
}

#[tokio::test]
async fn the_port_walks_every_page_of_a_large_describe() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    emu.run_instances(&RunInstances::classic([web.clone()]).count(2500)).await.unwrap();
    emu.reset_counters();
    let filter = InstanceFilter { group_ids: vec![web], ..Default::default() };
    let all = emu.describe_instances(&filter).await.unwrap();
    assert_eq!(all.len(), 2500);
    assert_eq!(emu.counters().requests(Operation::DescribeInstances), 3);
}

#[tokio::test]
async fn group_filters_narrow_by_name_vpc_and_tags() {
    let (emu, vpc) = world_with_vpc().await;
    let tagged = emu
        .create_group(&NewGroup::classic("web", "Web").tag(DEFAULT_DISCOVERY_TAG, vpc.as_str()).tag("env", "prod"))
        .await
        .unwrap();
    classic_group(&emu, "app").await;
    let mirror = vpc_group(&emu, &vpc, "web").await;
    let names = GroupFilter { group_names: vec!["web".into()], ..Default::default() };
    assert_eq!(emu.describe_security_groups(&names).await.unwrap().len(), 2);
    let in_vpc = GroupFilter { group_names: vec!["web".into()], vpc_ids: vec![vpc.clone()], ..Default::default() };
    assert_eq!(emu.describe_security_groups(&in_vpc).await.unwrap()[0].id, mirror);
    let by_key = GroupFilter { tag_keys: vec![DEFAULT_DISCOVERY_TAG.into()], ..Default::default() };
    assert_eq!(emu.describe_security_groups(&by_key).await.unwrap()[0].id, tagged);
    let by_value = |values: Vec<&str>| GroupFilter {
        tags: BTreeMap::from([("env".to_owned(), values.into_iter().map(String::from).collect())]),
        ..Default::default()
    };
    assert_eq!(emu.describe_security_groups(&by_value(vec!["staging", "prod"])).await.unwrap().len(), 1);
    assert!(emu.describe_security_groups(&by_value(vec!["staging"])).await.unwrap().is_empty());
}

#[tokio::test]
async fn instance_filters_narrow_by_id_group_and_state() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    let app = classic_group(&emu, "app").await;
    let a = emu.run_instances(&RunInstances::classic([web.clone()])).await.unwrap().remove(0);
    let b = emu.run_instances(&RunInstances::classic([web.clone(), app.clone()])).await.unwrap().remove(0);
    let c = emu.run_instances(&RunInstances::classic([app.clone()])).await.unwrap().remove(0);
    emu.stop_instances(std::slice::from_ref(&b)).await.unwrap();
    let ids = |f: InstanceFilter| {
        let emu = emu.clone();
        async move { emu.describe_instances(&f).await.unwrap().into_iter().map(|i| i.id).collect::<Vec<_>>() }
    };
    assert_eq!(
        ids(InstanceFilter { group_ids: vec![web.clone()], ..Default::default() }).await,
        vec![a.clone(), b.clone()]
    );
    assert_eq!(ids(InstanceFilter { group_ids: vec![web.clone(), app.clone()], ..Default::default() }).await.len(), 3);
    let running_web =
        InstanceFilter { group_ids: vec![web], states: vec![InstanceState::Running], ..Default::default() };
    assert_eq!(ids(running_web).await, vec![a.clone()]);
    let by_id = InstanceFilter { instance_ids: vec![c.clone(), a.clone()], group_ids: vec![app], ..Default::default() };
    assert_eq!(ids(by_id).await, vec![c]);
}

#[tokio::test]
async fn generic_filters_are_parsed_inside_the_counted_request() {
    let (emu, vpc) = world_with_vpc().await;
    vpc_group(&emu, &vpc, "web").await;
    let page = emu
        .describe_security_groups_filtered(
            &[],
            &[Filter::new("vpc-id", [vpc.as_str()]), Filter::new("group-name", ["web"])],
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let bad =
        emu.describe_security_groups_filtered(&[], &[Filter::new("owner-id", ["1"])], &PageRequest::default()).await;
    assert_eq!(code(bad), codes::INVALID_PARAMETER_VALUE);
    let id = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    let page = emu
        .describe_instances_filtered(&[], &[Filter::new("instance-state-name", ["running"])], &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items[0].id, id);
    let links = emu
        .describe_classic_link_instances_filtered(
            &[],
            &[Filter::new("vpc-id", [vpc.as_str()])],
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(links.items.is_empty());
    let counts = emu.counters().get(Operation::DescribeSecurityGroups);
    assert_eq!((counts.ok, counts.error_total()), (1, 1));
}

#[tokio::test]
async fn instances_and_links_paginate_too() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let ids = emu.run_instances(&RunInstances::classic([]).count(12)).await.unwrap();
    for id in &ids {
        emu.attach_classic_link_vpc(id, &vpc, std::slice::from_ref(&web)).await.unwrap();
    }
    let first = emu.describe_instances_page(&[], &InstanceFilter::default(), &PageRequest::first(5)).await.unwrap();
    assert_eq!(first.items.len(), 5);
    let second = emu
        .describe_instances_page(&[], &InstanceFilter::default(), &PageRequest::after(10, first.next_token))
        .await
        .unwrap();
    assert_eq!((second.items.len(), second.next_token), (7, None));
    assert_eq!(second.items[0].id, ids[5]);
    let first =
        emu.describe_classic_link_instances_page(&[], &LinkFilter::default(), &PageRequest::first(10)).await.unwrap();
    let rest = emu
        .describe_classic_link_instances_page(&[], &LinkFilter::default(), &PageRequest::after(10, first.next_token))
        .await
        .unwrap();
    assert_eq!((first.items.len(), rest.items.len(), rest.next_token), (10, 2, None));
}

#[tokio::test]
async fn vpcs_are_described_in_pages_and_classic_link_status_by_id() {
    let emu = Emulator::default();
    let mut vpcs = Vec::new();
    for i in 0..7 {
        vpcs.push(emu.create_vpc(&NewVpc::classic_link(i % 2 == 0)).await.unwrap());
    }
    let first = emu.describe_vpcs_page(&[], &PageRequest::first(5)).await.unwrap();
    let rest = emu.describe_vpcs_page(&[], &PageRequest::after(5, first.next_token)).await.unwrap();
    assert_eq!((first.items.len(), rest.items.len()), (5, 2));
    assert!(rest.items[1].classic_link_enabled);

    let gone = VpcId::try_new("vpc-0badbad0").unwrap();
    let asked = [vpcs[1].clone(), gone.clone()];
    let answer = emu.describe_vpc_classic_link(&asked).await.unwrap();
    assert_eq!(answer.len(), 1, "the port leaves unknown VPCs out");
    assert!(!answer[0].classic_link_enabled);
    assert_eq!(code(emu.describe_vpc_classic_link_strict(&asked).await), codes::VPC_NOT_FOUND);
    // The port asks for no VPC without a request, as over the wire; one
    // request without ids is every VPC, as EC2 answers it.
    assert!(emu.describe_vpc_classic_link(&[]).await.unwrap().is_empty());
    assert_eq!(emu.vpc_classic_link_request(&[]).await.unwrap().len(), 7);
    assert_eq!(code(emu.vpc_classic_link_request(&asked).await), codes::VPC_NOT_FOUND);
}
