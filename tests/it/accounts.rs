//! Accounts and regions end to end: the emulator serving several accounts'
//! worlds and STS on one listener, the daemon's clients assuming roles
//! through `aws-config`'s `AssumeRoleProvider` (docs/migrating-vpc-to-vpc.md).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use classiclink_mirror::config::Config;
use classiclink_mirror::ec2::aws::{self, AwsEc2, AwsOptions};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{Ec2, GroupFilter, codes};
use classiclink_mirror::emulator::{Cloud, EmulatorOptions, Estate};
use classiclink_mirror::model::{GroupId, Peer, VpcId};
use classiclink_mirror::reconcile;
use tokio_util::sync::CancellationToken;

const SOURCE_ACCOUNT: &str = "111111111111";
const TARGET_ACCOUNT: &str = "222222222222";
const SOURCE_ROLE: &str = "arn:aws:iam::111111111111:role/classiclink-mirror-read";
const TARGET_ROLE: &str = "arn:aws:iam::222222222222:role/classiclink-mirror";

/// Account A (us-east-1) holds three VPC groups, web referencing app and db
/// (ingress, IPv6 included, and egress without EC2's default rule);
/// account B (eu-west-1) the target VPC. The daemon's own account (the
/// emulator's default, where the test's `test` key lands) may assume a role
/// in each; B's asks for an external id.
const ESTATE: &str = r#"
[[account]]
id = "111111111111"
access_keys = ["AKIASOURCE"]
[[account.role]]
name = "classiclink-mirror-read"
trusted_accounts = ["123456789012"]

[[account]]
id = "222222222222"
[[account.role]]
name = "classiclink-mirror"
trusted_accounts = ["123456789012"]
external_id = "migration-2026"

[[world]]
account = "111111111111"
region = "us-east-1"
[[world.vpc]]
name = "old"
id = "vpc-0a0a0a0a"
cidr = "172.20.0.0/16"
[[world.group]]
name = "web"
vpc = "old"
id = "sg-0e0e0e01"
[[world.group.rules]]
protocol = "tcp"
port = 443
cidr = "0.0.0.0/0"
[[world.group.rules]]
protocol = "tcp"
port = 8080
from_group = "app"
[[world.group.rules]]
protocol = "tcp"
port = 5432
from_group = "db"
description = "database clients"
[[world.group.rules]]
protocol = "tcp"
port = 443
cidr = "2001:db8::/32"
description = "v6 clients"
[[world.group.egress]]
protocol = "tcp"
port = 443
cidr = "10.0.0.0/8"
[[world.group.egress]]
protocol = "tcp"
port = 443
cidr = "2001:db8:1::/48"
[[world.group.egress]]
protocol = "tcp"
port = 5432
from_group = "db"
[[world.group]]
name = "app"
vpc = "old"
id = "sg-0e0e0e02"
[[world.group.rules]]
protocol = "tcp"
port = 9000
from_group = "web"
[[world.group]]
name = "db"
vpc = "old"
id = "sg-0e0e0e03"

[[world]]
account = "222222222222"
region = "eu-west-1"
[[world.vpc]]
name = "new"
id = "vpc-0b0b0b0b"
cidr = "10.20.0.0/16"
"#;

pub(crate) async fn serve(cloud: Cloud) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(classiclink_mirror::emulator::server::serve_cloud(cloud, listener, std::future::pending()));
    url
}

fn config(url: &str, target_extra: &str) -> Config {
    let mut text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         [accounts.source]\nregion = \"us-east-1\"\nrole_arn = \"{SOURCE_ROLE}\"\n\
         [accounts.target]\nregion = \"eu-west-1\"\nrole_arn = \"{TARGET_ROLE}\"\n{target_extra}\n"
    );
    for id in ["sg-0e0e0e01", "sg-0e0e0e02", "sg-0e0e0e03"] {
        text.push_str(&format!(
            "[[mirror]]\nsource_group = \"{id}\"\nvpc = \"vpc-0b0b0b0b\"\nsource_account = \"source\"\n\
             target_account = \"target\"\n"
        ));
    }
    Config::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{}", classiclink_mirror::config::render_errors(&e)))
}

pub(crate) fn options() -> AwsOptions {
    AwsOptions { credentials: Some(crate::common::test_credentials()), ..AwsOptions::default() }
}

pub(crate) async fn connect(config: &Config) -> std::sync::Arc<dyn Ec2> {
    let limit = |_: &str, client: AwsEc2| -> std::sync::Arc<dyn Ec2> {
        std::sync::Arc::new(Limited::new(client, &config.rate_limit))
    };
    aws::connect(config, &options(), &limit).await
}

#[tokio::test]
async fn a_vpc_group_of_account_a_is_mirrored_into_account_b_in_another_region_egress_ipv6_and_references_translated() {
    let estate = Estate::from_toml(ESTATE).unwrap();
    let cloud = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let url = serve(cloud.clone()).await;
    let config = config(&url, "external_id = \"migration-2026\"");
    let ec2 = connect(&config).await;

    let first = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(first.converged, "{:#?}", first.passes);

    let target = cloud.world(TARGET_ACCOUNT, "eu-west-1");
    let vpc = VpcId::try_new("vpc-0b0b0b0b").unwrap();
    let mirror = |name: &str| target.group_id(Some(&vpc), name).unwrap_or_else(|| panic!("no mirror {name}"));
    let (web, app, db) = (mirror("web"), mirror("app"), mirror("db"));
    let grants = target.peek_group(&web).unwrap().ingress;
    assert_eq!(grants.len(), 4, "{grants:#?}");
    assert!(grants.iter().any(|g| g.key.peer == Peer::Ipv6("2001:db8::/32".parse().unwrap())), "{grants:#?}");
    // Egress: the source's three rules, the reference translated to db's
    // mirror, EC2's default allow-all gone (the source lacks it).
    let egress: BTreeSet<Peer> = target.peek_group(&web).unwrap().egress.into_iter().map(|g| g.key.peer).collect();
    assert_eq!(
        egress,
        BTreeSet::from([
            Peer::Ipv4("10.0.0.0/8".parse().unwrap()),
            Peer::Ipv6("2001:db8:1::/48".parse().unwrap()),
            Peer::Group { group: db.clone(), owner: None },
        ]),
    );
    let referenced: BTreeSet<GroupId> = grants
        .iter()
        .filter_map(|g| match &g.key.peer {
            Peer::Group { group, owner: None } => Some(group.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(referenced, BTreeSet::from([app.clone(), db]), "references point at the mirrors in B");
    assert!(grants.iter().any(|g| g.description.as_deref() == Some("database clients")));
    assert_eq!(target.peek_group(&app).unwrap().ingress.len(), 1);
    assert_eq!(target.peek_group(&web).unwrap().owner_id, TARGET_ACCOUNT);
    // Nothing was written in the source account, nor in the daemon's own.
    let source = cloud.world(SOURCE_ACCOUNT, "us-east-1");
    assert_eq!(source.mutating_calls(), 0);
    assert_eq!(cloud.home().mutating_calls(), 0);
    assert!(source.counters().to_json().contains("DescribeSecurityGroups"));

    target.reset_counters();
    let second = reconcile::apply(ec2.as_ref(), &config, 5, &SystemTime::now, &CancellationToken::new()).await;
    assert!(second.converged && second.passes.len() == 1, "{:#?}", second.passes);
    assert_eq!(target.mutating_calls(), 0, "a converged target gets no writes");
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_fails_every_request_as_credentials_unavailable_until_restored() {
    let estate = Estate::from_toml(ESTATE).unwrap();
    let cloud = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let url = serve(cloud.clone()).await;
    let by_vpc = GroupFilter { vpc_ids: vec![VpcId::try_new("vpc-0b0b0b0b").unwrap()], ..GroupFilter::default() };

    // The wrong external id: AccessDenied from STS, so no credentials.
    let wrong = config(&url, "external_id = \"guess\"");
    let port = AwsEc2::for_account(&wrong.aws, wrong.accounts.get("target"), options()).await;
    let error = port.describe_security_groups(&by_vpc).await.unwrap_err();
    assert_eq!(error.code, codes::CREDENTIALS_UNAVAILABLE, "{error:?}");

    let right = config(&url, "external_id = \"migration-2026\"");
    let port = AwsEc2::for_account(&right.aws, right.accounts.get("target"), options()).await;
    let groups = port.describe_security_groups(&by_vpc).await.unwrap();
    assert!(groups.iter().all(|g| g.owner_id == TARGET_ACCOUNT) && !groups.is_empty(), "{groups:?}");

    // Revoked at runtime: the session already issued is refused too.
    let revoke =
        reqwest::Client::new().post(format!("{url}/_emulator/roles/revoke?arn={TARGET_ROLE}")).send().await.unwrap();
    assert_eq!(revoke.status().as_u16(), 204);
    let error = port.describe_security_groups(&by_vpc).await.unwrap_err();
    assert_eq!(error.code, codes::UNAUTHORIZED_OPERATION, "{error:?}");
    let fresh = AwsEc2::for_account(&right.aws, right.accounts.get("target"), options()).await;
    assert_eq!(fresh.describe_security_groups(&by_vpc).await.unwrap_err().code, codes::CREDENTIALS_UNAVAILABLE);

    let restore =
        reqwest::Client::new().post(format!("{url}/_emulator/roles/restore?arn={TARGET_ROLE}")).send().await.unwrap();
    assert_eq!(restore.status().as_u16(), 204);
    assert!(port.describe_security_groups(&by_vpc).await.is_ok());
    let unknown =
        reqwest::Client::new().post(format!("{url}/_emulator/roles/revoke?arn=arn:aws:iam::1:role/x")).send().await;
    assert_eq!(unknown.unwrap().status().as_u16(), 404);
}

/// A request signed by `access_key` for `region` and `service` (the
/// emulator checks no signature).
async fn signed(url: &str, access_key: &str, region: &str, service: &str, body: &str) -> (u16, String) {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/20261206/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00"
    );
    let response = reqwest::Client::new()
        .post(url)
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn sts_answers_get_caller_identity_and_assume_role_in_its_own_xml_and_errors() {
    let estate = Estate::from_toml(ESTATE).unwrap();
    let cloud = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let url = serve(cloud).await;
    let who = "Action=GetCallerIdentity&Version=2011-06-15";
    let (status, body) = signed(&url, "AKIASOURCE", "us-east-1", "sts", who).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Account>111111111111</Account>"), "{body}");
    assert!(body.contains("xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\""), "{body}");
    let (_, body) = signed(&url, "someone", "us-east-1", "sts", who).await;
    assert!(body.contains("<Account>123456789012</Account>"), "unknown keys are the default account: {body}");

    let assume = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=t1&DurationSeconds=900",
        SOURCE_ROLE.replace(':', "%3A").replace('/', "%2F")
    );
    let (status, body) = signed(&url, "someone", "us-east-1", "sts", &assume).await;
    assert_eq!(status, 200, "{body}");
    let key = body.split("<AccessKeyId>").nth(1).and_then(|s| s.split('<').next()).unwrap().to_owned();
    let (_, body) = signed(&url, &key, "eu-west-1", "sts", who).await;
    assert!(body.contains("<Account>111111111111</Account>"), "{body}");
    assert!(body.contains("assumed-role/classiclink-mirror-read/t1"), "{body}");

    // The source account itself is not trusted by its own role.
    let (status, body) = signed(&url, "AKIASOURCE", "us-east-1", "sts", &assume).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>") && body.contains("<ErrorResponse"), "{body}");

    // EC2 in the assumed account's other region is an empty world of that account.
    let (status, body) = signed(&url, &key, "eu-west-1", "ec2", "Action=DescribeVpcs&Version=2016-11-15").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("vpc-0a0a0a0a"), "{body}");
    let (_, body) = signed(&url, &key, "us-east-1", "ec2", "Action=DescribeVpcs&Version=2016-11-15").await;
    assert!(body.contains("vpc-0a0a0a0a"), "{body}");
}

#[test]
fn an_estate_world_naming_an_undeclared_account_or_a_taken_region_is_refused_with_its_place() {
    let text = "[[world]]\naccount = \"999999999999\"\nregion = \"eu-west-1\"\n\
                [[world]]\nregion = \"us-east-1\"\n\
                [[world]]\nregion = \"eu-west-1\"\n[[world.group]]\nname = \"x\"\nvpc = \"nowhere\"\n";
    let estate = Estate::from_toml(text).unwrap();
    let errors = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap_err().to_string();
    assert!(errors.contains("world[0].account: "), "{errors}");
    assert!(errors.contains("world[1].region: "), "{errors}");
    assert!(errors.contains("world[2].group[0].vpc: "), "{errors}");
}

#[tokio::test]
async fn the_vpc_accounts_demo_mirrors_across_accounts_survives_a_revoked_role_and_finishes() {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        crate::common::binary()
            .args([
                "demo",
                "--scenario",
                "vpc-accounts",
                "--listen",
                "127.0.0.1:0",
                "--interval",
                "1s",
                "--exit-when-done",
            ])
            .output(),
    )
    .await
    .expect("the demo finishes within 120 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for expected in
        ["created mirrors", "mirrored", "role is revoked", "could not observe", "role is restored", "demo finished"]
    {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
}

/// Counts the requests of the clients a connector made, by account, one
/// entry per client made.
#[derive(Default)]
struct MadeClients {
    made: parking_lot::Mutex<Vec<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)>>,
}

struct CountRequests(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl classiclink_mirror::ec2::limited::RequestObserver for CountRequests {
    fn record(&self, _: classiclink_mirror::ec2::Operation, _: &'static str, _: Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl MadeClients {
    fn limit<'a>(&'a self, config: &'a Config) -> impl Fn(&str, AwsEc2) -> std::sync::Arc<dyn Ec2> + Send + Sync + 'a {
        move |account: &str, client: AwsEc2| -> std::sync::Arc<dyn Ec2> {
            let requests = std::sync::Arc::default();
            self.made.lock().push((account.to_owned(), std::sync::Arc::clone(&requests)));
            std::sync::Arc::new(
                Limited::new(client, &config.rate_limit).with_observer(Box::new(CountRequests(requests))),
            )
        }
    }

    fn accounts(&self) -> Vec<String> {
        self.made.lock().iter().map(|(account, _)| account.clone()).collect()
    }

    fn requests(&self) -> Vec<u64> {
        self.made.lock().iter().map(|(_, n)| n.load(std::sync::atomic::Ordering::Relaxed)).collect()
    }
}

#[tokio::test]
async fn two_targets_sharing_a_source_account_each_had_its_own_client_and_so_twice_the_accounts_rate_budget() {
    let estate = Estate::from_toml(ESTATE).unwrap();
    let cloud = Cloud::from_estate(&estate, EmulatorOptions::default()).unwrap();
    let url = serve(cloud).await;
    // web mirrored into account B, app into the [aws] account: two target
    // loops, both reading their sources in account A.
    let text = |session: &str| {
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
             [accounts.source]\nregion = \"us-east-1\"\nrole_arn = \"{SOURCE_ROLE}\"\nsession_name = \"{session}\"\n\
             [accounts.target]\nregion = \"eu-west-1\"\nrole_arn = \"{TARGET_ROLE}\"\nexternal_id = \"migration-2026\"\n\
             [[mirror]]\nsource_group = \"sg-0e0e0e01\"\nvpc = \"vpc-0b0b0b0b\"\nsource_account = \"source\"\n\
             target_account = \"target\"\n\
             [[mirror]]\nsource_group = \"sg-0e0e0e02\"\nvpc = \"vpc-0c0c0c0c\"\nsource_account = \"source\"\n"
        )
    };
    let config = Config::from_toml_str(&text("classiclink-mirror"), None)
        .unwrap_or_else(|e| panic!("{}", classiclink_mirror::config::render_errors(&e)));
    let targets = config.targets();
    assert_eq!(targets.len(), 2, "{targets:?}");
    let clients = aws::SharedClients::default();
    let made = MadeClients::default();
    let limit = made.limit(&config);
    let mut ports = Vec::new();
    for target in &targets {
        ports.push(aws::connect_shared(&config.for_target(target), &options(), &clients, &limit).await);
    }
    let mut accounts = made.accounts();
    accounts.sort();
    assert_eq!(accounts, ["aws", "source", "target"], "one client per account, the source's shared");

    // Each loop describes its source: both requests spend the one client's
    // tokens (and retry quota), the source account's.
    for (port, id) in ports.iter().zip(["sg-0e0e0e02", "sg-0e0e0e01"]) {
        let filter = GroupFilter { group_ids: vec![GroupId::try_new(id).unwrap()], ..GroupFilter::default() };
        let page = port.security_groups_page(&filter, None).await.unwrap();
        assert_eq!(page.items.len(), 1);
    }
    let source = made.accounts().iter().position(|a| a == "source").unwrap();
    assert_eq!(made.requests()[source], 2, "{:?} {:?}", made.accounts(), made.requests());

    // A reload changing the source account's settings makes its client
    // again, once; the others stay.
    let reloaded = Config::from_toml_str(&text("after-reload"), None).unwrap();
    let limit = made.limit(&reloaded);
    for target in &targets {
        let _ = aws::connect_shared(&reloaded.for_target(target), &options(), &clients, &limit).await;
    }
    assert_eq!(made.accounts()[3..], ["source"], "{:?}", made.accounts());

    // A reload leaving no mirror in the target account forgets its client:
    // named again, it gets a new one.
    clients.retain(&std::collections::BTreeSet::from(["aws".to_owned(), "source".to_owned()]));
    let _ = aws::connect_shared(&reloaded.for_target(&targets[1]), &options(), &clients, &limit).await;
    assert_eq!(made.accounts()[4..], ["target"], "{:?}", made.accounts());
}
