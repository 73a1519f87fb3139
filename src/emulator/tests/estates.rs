//! Estate files: the shipped fixture loads; bad estates name every problem's
//! place and load nothing.

use std::collections::BTreeSet;

use super::*;
use crate::ec2::{Ec2, GroupFilter, InstanceFilter, LinkFilter};
use crate::emulator::{Estate, EstateError, Faults};
use crate::model::{DEFAULT_DISCOVERY_TAG, InstanceId, InstanceState};

const SMALL: &str = include_str!("../../../tests/fixtures/estates/small.toml");

fn load(text: &str) -> Result<Emulator, Vec<String>> {
    let estate = Estate::from_toml(text).map_err(|e| vec![e.to_string()])?;
    Emulator::from_estate(&estate, EmulatorOptions::default())
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn group(id: &str) -> GroupId {
    GroupId::try_new(id).unwrap()
}

#[tokio::test]
async fn the_small_fixture_estate_loads_with_everything_in_place() {
    let emu = load(SMALL).expect("the fixture is valid");
    let target = VpcId::try_new("vpc-9f2e1d0c").unwrap();
    assert_eq!(emu.vpc_id("target"), Some(target.clone()));
    assert!(emu.peek_vpc(&target).unwrap().classic_link_enabled);
    assert!(!emu.peek_vpc(&emu.vpc_id("legacy").unwrap()).unwrap().classic_link_enabled);

    let web = emu.peek_group(&group("sg-0a1b2c3d")).unwrap();
    assert_eq!((web.name.as_str(), web.description.as_str(), web.vpc_id.clone()), ("web", "Web tier", None));
    assert_eq!(web.tags[DEFAULT_DISCOVERY_TAG], "vpc-9f2e1d0c");
    assert_eq!(web.ingress.len(), 3);
    let elb = Peer::Group { group: group("sg-843f59ed"), owner: Some("amazon-elb".into()) };
    assert!(web.ingress.iter().any(|g| g.key.peer == elb && g.description.as_deref() == Some("Classic ELB")));

    let app = emu.group_id(None, "app").unwrap();
    let app_group = emu.peek_group(&app).unwrap();
    assert!(app_group.ingress.contains(&tcp_from(7000, &app)), "self reference");
    assert_eq!(app_group.ingress.len(), 2);
    let db = emu.peek_group(&emu.group_id(None, "db").unwrap()).unwrap();
    assert_eq!(db.ingress, vec![tcp_from(5432, &app)]);
    let classic_default = emu.peek_group(&emu.default_group(None).unwrap()).unwrap();
    assert_eq!(classic_default.tags["note"], "do not use");
    let vpc_app = emu.group_id(Some(&target), "app").unwrap();
    assert_ne!(vpc_app, app, "same name, different network");

    let instances = emu.describe_instances(&InstanceFilter::default()).await.unwrap();
    assert_eq!(instances.len(), 6);
    let linked = InstanceId::try_new("i-0b3c4d5e").unwrap();
    let link = emu.peek_link(&linked).unwrap();
    assert_eq!((link.vpc_id, link.groups), (target.clone(), BTreeSet::from([vpc_app])));
    assert_eq!(instances.iter().filter(|i| i.state == InstanceState::Stopped).count(), 1);
    assert_eq!(instances.iter().filter(|i| i.vpc_id.is_some()).count(), 1);
    assert_eq!(emu.describe_classic_link_instances(&LinkFilter::default()).await.unwrap().len(), 1);
    let discovered = GroupFilter { tag_keys: vec![DEFAULT_DISCOVERY_TAG.into()], ..Default::default() };
    assert_eq!(emu.describe_security_groups(&discovered).await.unwrap().len(), 2);
    assert_eq!(emu.counters().total_requests(), 3, "loading is not counted, the describes are");
}

#[tokio::test]
async fn loading_ignores_faults_and_resources_are_visible_at_once() {
    let estate = Estate::from_toml(SMALL).unwrap();
    let options = EmulatorOptions {
        faults: Faults::none().with_consistency_window(std::time::Duration::from_secs(60)).with_error_rate(0.0),
        ..EmulatorOptions::default()
    };
    let emu = Emulator::from_estate(&estate, options).unwrap();
    // The Classic default, two VPC defaults, web, app, db and the VPC's app.
    assert_eq!(emu.describe_security_groups(&GroupFilter::default()).await.unwrap().len(), 7);
}

#[test]
fn a_bad_estate_reports_every_problem_with_its_place_and_loads_nothing() {
    let text = r#"
        [[vpc]]
        name = "target"
        classic_link = true

        [[group]]
        name = "web"
        [[group.rules]]
        protocol = "tcp"
        port = 80
        from_group = "app"
        [[group.rules]]
        protocol = "tcp"
        from_port = 90
        to_port = 80
        cidr = "0.0.0.0/0"
        [[group.rules]]
        protocol = "tcp"
        port = 22
        cidr = "10.0.0.0/33"
        [[group.rules]]
        protocol = "tcp"
        port = 22
        cidr = "10.0.0.0/8"
        foreign_group = "amazon-elb/sg-843f59ed"

        [[group]]
        name = "sg-bad"

        [[group]]
        name = "db"
        vpc = "nowhere"

        [[instance]]
        groups = ["ghost"]

        [[instance]]
        groups = ["web"]
        link = { vpc = "target", groups = ["web"] }
    "#;
    let errors = load(text).expect_err("the estate is bad");
    assert_eq!(
        errors,
        vec![
            r#"group[1]: InvalidParameterValue: Invalid group name "sg-bad": group names may not start with 'sg-'"#
                .to_owned(),
            r#"group[2].vpc: no VPC named "nowhere""#.to_owned(),
            r#"group[0].rules[0].from_group: no group named "app" among Classic groups"#.to_owned(),
            r#"group[0].rules[1]: invalid port range (FromPort 90, ToPort 80) for protocol tcp"#.to_owned(),
            r#"group[0].rules[2].cidr: "10.0.0.0/33" is not a CIDR block"#.to_owned(),
            "group[0].rules[3]: a rule needs exactly one of cidr, from_group, foreign_group, prefix_list".to_owned(),
            r#"instance[0].groups[0]: no group named "ghost" among Classic groups"#.to_owned(),
            r#"instance[1].link.groups[0]: no group named "web" in VPC "target""#.to_owned(),
        ]
    );
}

#[test]
fn references_to_a_group_that_failed_to_load_are_not_reported_twice() {
    let text = r#"
        [[group]]
        name = "web"
        description = "caf\u00e9 tier but ascii only"
        [[group]]
        name = "app"
        [[group.rules]]
        protocol = "tcp"
        port = 80
        from_group = "web"
    "#;
    // Classic descriptions are ASCII only; the rule referencing "web" stays quiet.
    let errors = load(text).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("group[0]: InvalidParameterValue"), "{errors:?}");
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors_naming_the_line() {
    let unknown = load("[[group]]\nname = \"web\"\ncolour = \"blue\"\n").unwrap_err();
    assert!(unknown[0].contains("colour"), "{unknown:?}");
    assert!(unknown[0].contains("line 3"), "{unknown:?}");
    let bad_state = load("[[instance]]\nstate = \"asleep\"\n").unwrap_err();
    assert!(bad_state[0].contains("asleep"), "{bad_state:?}");
    let bad_id = load("[[group]]\nname = \"web\"\nid = \"sg-XYZ\"\n").unwrap_err();
    assert!(bad_id[0].contains("is not a security group id"), "{bad_id:?}");
    let err = Estate::from_toml("[[vpc]]\n").unwrap_err();
    assert_eq!(err.kind(), "parse");
}

#[test]
fn explicit_ids_are_unique_and_counter_ids_avoid_them() {
    let twice = r#"
        [[group]]
        name = "web"
        id = "sg-00000002"
        [[group]]
        name = "app"
        id = "sg-00000002"
    "#;
    let errors = load(twice).unwrap_err();
    assert!(errors.iter().any(|e| e == "group[1].id: id sg-00000002 is used twice"), "{errors:?}");
    let taken = "[[group]]\nname = \"web\"\nid = \"sg-00000001\"\n";
    let errors = load(taken).unwrap_err();
    assert!(errors[0].contains("sg-00000001 is already in use"), "{errors:?}");

    let avoided = r#"
        [[group]]
        name = "web"
        [[group]]
        name = "app"
        id = "sg-00000002"
    "#;
    let emu = load(avoided).unwrap();
    assert_eq!(emu.group_id(None, "app").unwrap().as_str(), "sg-00000002");
    assert_eq!(emu.group_id(None, "web").unwrap().as_str(), "sg-00000003");
}

#[test]
fn quotas_and_link_rules_apply_to_estates() {
    let rules: String = (0..101)
        .map(|p| format!("[[group.rules]]\nprotocol = \"tcp\"\nport = {}\ncidr = \"10.0.0.0/8\"\n", 1000 + p))
        .collect();
    let errors = load(&format!("[[group]]\nname = \"web\"\n{rules}")).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("group[0].rules[100]: RulesPerSecurityGroupLimitExceeded"), "{errors:?}");

    let not_linkable = r#"
        [[vpc]]
        name = "target"
        [[group]]
        name = "web"
        vpc = "target"
        [[instance]]
        link = { vpc = "target", groups = ["web"] }
    "#;
    let errors = load(not_linkable).unwrap_err();
    assert!(errors[0].starts_with("instance[0].link: InvalidInstanceID.NotLinkable"), "{errors:?}");

    let duplicate_rule = r#"
        [[group]]
        name = "web"
        [[group.rules]]
        protocol = "tcp"
        port = 22
        cidr = "10.1.0.0/8"
        [[group.rules]]
        protocol = "6"
        port = 22
        cidr = "10.0.0.0/8"
    "#;
    let errors = load(duplicate_rule).unwrap_err();
    assert!(errors[0].starts_with("group[0].rules[1]: InvalidPermission.Duplicate"), "{errors:?}");
}

#[test]
fn the_default_group_entry_takes_only_rules_and_tags() {
    let errors = load("[[group]]\nname = \"default\"\ndescription = \"mine\"\n").unwrap_err();
    assert!(errors[0].contains("the default group exists already"), "{errors:?}");
    let emu = load(
        "[[vpc]]\nname = \"t\"\n[[group]]\nname = \"default\"\nvpc = \"t\"\n[[group.rules]]\nprotocol = \"tcp\"\nport = 22\ncidr = \"10.0.0.0/16\"\n",
    )
    .unwrap();
    let vpc = emu.vpc_id("t").unwrap();
    assert_eq!(emu.peek_group(&emu.default_group(Some(&vpc)).unwrap()).unwrap().ingress.len(), 2);
}

#[test]
fn estates_round_trip_through_toml() {
    let estate = Estate::from_toml(SMALL).unwrap();
    let again = Estate::from_toml(&estate.to_toml()).unwrap();
    assert_eq!(estate, again);
}

#[test]
fn reading_a_missing_file_is_a_read_error() {
    let err = Estate::read(std::path::Path::new("/nonexistent/estate.toml")).unwrap_err();
    assert!(matches!(err, EstateError::Read { .. }));
    assert_eq!(err.kind(), "read");
}

#[test]
fn the_shipped_demo_estate_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo-estate.toml");
    let estate = crate::emulator::Estate::read(&path).unwrap();
    let emu = crate::emulator::Emulator::from_estate(&estate, crate::emulator::EmulatorOptions::default()).unwrap();
    assert_eq!(emu.stats().instances, 20);
}

#[tokio::test]
async fn estate_egress_replaces_the_default_rule_and_is_refused_on_classic_groups() {
    let text = r#"
[[vpc]]
name = "v"

[[group]]
name = "api"
vpc = "v"
egress = [{ protocol = "tcp", port = 443, cidr = "2001:db8::/32" }, { protocol = "tcp", port = 5432, from_group = "db" }]

[[group]]
name = "db"
vpc = "v"

[[group]]
name = "closed"
vpc = "v"
egress = []
"#;
    let emu = load(text).expect("valid");
    let vpc = emu.vpc_id("v").unwrap();
    let api = emu.peek_group(&emu.group_id(Some(&vpc), "api").unwrap()).unwrap();
    let db = emu.group_id(Some(&vpc), "db").unwrap();
    assert_eq!(api.egress.len(), 2, "{:?}", api.egress);
    assert!(api.egress.contains(&tcp_from(5432, &db)));
    assert_eq!(emu.peek_group(&db).unwrap().egress.len(), 1, "EC2's default rule");
    assert!(emu.peek_group(&emu.group_id(Some(&vpc), "closed").unwrap()).unwrap().egress.is_empty());

    let errors = load("[[group]]\nname = \"old\"\negress = []\n").unwrap_err();
    assert!(errors.iter().any(|e| e.contains("group[0].egress")), "{errors:?}");
}
