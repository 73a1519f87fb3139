//! The cross-account path against moto: the daemon's clients assume a role
//! with STS (`aws-config`'s `AssumeRoleProvider`, unmodified) and then speak
//! EC2 in the role's account and region. moto implements both: the
//! credentials its `AssumeRole` returns act in the account of the role's ARN,
//! each account and region its own EC2. moto trusts any caller for any role
//! (it checks no trust policy nor external id): the refusals are the
//! emulator's to test (`tests/it/accounts.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use classiclink_mirror::config::Config;
use classiclink_mirror::ec2::aws::{self, AwsEc2, AwsOptions};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{CreateGroup, Ec2, GroupFilter};
use classiclink_mirror::model::{Grant, GroupId, OWNERSHIP_TAG, Peer, Ports, Protocol};
use classiclink_mirror::reconcile;
use tokio_util::sync::CancellationToken;

use crate::common::moto::{client, moto, ok};
use crate::common::test_credentials;

const TARGET_ACCOUNT: &str = "111122223333";

fn tcp(port: u16, peer: Peer) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, peer, None)
}

#[tokio::test]
async fn a_vpc_group_is_mirrored_into_another_account_and_region_through_an_assumed_role() {
    let Some(moto) = moto() else { return };
    let home = client(moto).await;
    // Sources in moto's default account, us-east-1.
    let source_vpc = ok(moto, home.world().create_vpc("10.60.0.0/16").await);
    let group = |name: &str| CreateGroup {
        vpc_id: source_vpc.clone(),
        name: format!("xacct-{name}"),
        description: format!("{name} tier"),
        tags: Default::default(),
    };
    let web = ok(moto, home.create_security_group(&group("web")).await);
    let app = ok(moto, home.create_security_group(&group("app")).await);
    let db = ok(moto, home.create_security_group(&group("db")).await);
    let same = |id: &GroupId| Peer::Group { group: id.clone(), owner: None };
    let web_rules = [tcp(443, Peer::Ipv4("0.0.0.0/0".parse().unwrap())), tcp(8080, same(&app)), tcp(5432, same(&db))];
    ok(moto, home.authorize_ingress(&web, &web_rules).await);

    // The target VPC, made through the role in the other account and region.
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         [accounts.target]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::{TARGET_ACCOUNT}:role/classiclink-mirror\"\n\
         external_id = \"migration-2026\"\n",
        url = moto.url
    );
    let options = AwsOptions { credentials: Some(test_credentials()), ..AwsOptions::default() };
    let bare = Config::from_toml_str(&text, None).unwrap();
    let target = AwsEc2::for_account(&bare.aws, bare.accounts.get("target"), options.clone()).await;
    let target_vpc = ok(moto, target.world().create_vpc("10.61.0.0/16").await);
    let seen_from_home = home.describe_vpcs(&[]).await.unwrap();
    assert!(!seen_from_home.contains(&target_vpc), "the target VPC is in the other account only");

    let mut text = text;
    for id in [&web, &app, &db] {
        text.push_str(&format!(
            "[[mirror]]\nsource_group = \"{id}\"\nvpc = \"{target_vpc}\"\ntarget_account = \"target\"\n"
        ));
    }
    let config = Config::from_toml_str(&text, None).unwrap();
    let limit = |_: &str, client: AwsEc2| -> Arc<dyn Ec2> { Arc::new(Limited::new(client, &config.rate_limit)) };
    let ec2 = aws::connect(&config, &options, &limit).await;
    let first = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(first.converged, "{:#?} (moto log: {})", first.passes, moto.log.display());

    let mirrors = target
        .describe_security_groups(&GroupFilter { tag_keys: vec![OWNERSHIP_TAG.to_owned()], ..GroupFilter::default() })
        .await
        .unwrap();
    let mirrors: Vec<_> = mirrors.into_iter().filter(|g| g.vpc_id.as_ref() == Some(&target_vpc)).collect();
    assert_eq!(mirrors.len(), 3, "{mirrors:#?}");
    assert!(mirrors.iter().all(|g| g.owner_id == TARGET_ACCOUNT), "{mirrors:#?}");
    let by_name = |name: &str| mirrors.iter().find(|g| g.name == format!("xacct-{name}")).unwrap();
    let referenced: BTreeSet<GroupId> = by_name("web")
        .ingress
        .iter()
        .filter_map(|g| match &g.key.peer {
            Peer::Group { group, .. } => Some(group.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(by_name("web").ingress.len(), 3, "{:#?}", by_name("web"));
    assert_eq!(referenced, BTreeSet::from([by_name("app").id.clone(), by_name("db").id.clone()]));

    let second = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(second.converged && second.passes.len() == 1, "{:#?}", second.passes);
}

/// moto seeds each region's AWS-managed lists (`OwnerId` `AWS`, without
/// `MaxEntries`): the adapter's describe by name and owner — observe's one
/// call in a target region — finds the target region's S3 list, and only it.
#[tokio::test]
async fn the_target_regions_aws_managed_list_is_found_by_name_and_owner_in_another_account() {
    use classiclink_mirror::ec2::PrefixListFilter;
    let Some(moto) = moto() else { return };
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         [accounts.target]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::{TARGET_ACCOUNT}:role/classiclink-mirror\"\n",
        url = moto.url
    );
    let options = AwsOptions { credentials: Some(test_credentials()), ..AwsOptions::default() };
    let bare = Config::from_toml_str(&text, None).unwrap();
    let target = AwsEc2::for_account(&bare.aws, bare.accounts.get("target"), options).await;
    let by_name = |name: &str| PrefixListFilter {
        names: vec![name.to_owned()],
        owner_ids: vec!["AWS".to_owned()],
        ..PrefixListFilter::default()
    };
    let found = ok(moto, target.describe_prefix_lists(&by_name("com.amazonaws.eu-west-1.s3")).await);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].owner_id.as_str(), found[0].name.as_str()), ("AWS", "com.amazonaws.eu-west-1.s3"));
    assert!(found[0].known_max_entries().is_none(), "moto gives no MaxEntries: unknown, not malformed");
    let other = ok(moto, target.describe_prefix_lists(&by_name("com.amazonaws.us-east-1.s3")).await);
    assert!(other.is_empty(), "another region's list is not there: {other:?}");
}
