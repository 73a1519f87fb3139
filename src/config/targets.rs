//! The targets of a configuration: the accounts (each with its region and
//! credentials) the mirrors are written into. The daemon runs one reconcile
//! loop per target (docs/architecture.md, "Many targets"); here are the
//! pure parts of that split — which targets there are, which mirrors each
//! gets, the one that discovery and events serve, and each target's state
//! file — and the rule that two targets are never the same account and
//! region (their loops would take each other's mirrors for orphans).

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::accounts::AWS_ACCOUNT;
use super::check::{Checker, KeyPath};
use super::error::ErrorKind;
use super::sections::RawMirror;
use super::{Config, MirrorConfig};

/// One target of a configuration: the `[aws]` account, or an
/// `[accounts.NAME]` some `[[mirror]] target_account` names. The `[aws]`
/// one sorts first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The `[aws]` account (a mirror without `target_account`).
    Aws,
    /// The `[accounts.NAME]` of this name.
    Named(String),
}

impl Target {
    /// The target of a mirror.
    #[must_use]
    pub fn of(mirror: &MirrorConfig) -> Self {
        mirror.target_account.clone().map_or(Self::Aws, Self::Named)
    }

    /// The account's configured name (`aws` for the `[aws]` one): the
    /// `account` label of the per-target metrics, bounded by the file.
    #[must_use]
    pub fn label(&self) -> &str {
        match self {
            Self::Aws => AWS_ACCOUNT,
            Self::Named(name) => name,
        }
    }

    /// The `[accounts]` name, `None` for the `[aws]` account.
    #[must_use]
    pub fn account(&self) -> Option<&str> {
        match self {
            Self::Aws => None,
            Self::Named(name) => Some(name),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The state file of the `[aws]` target, and of the only target of a
/// daemon that has one (the name every earlier version used).
pub const STATE_FILE_NAME: &str = "state.json";

impl Config {
    /// The distinct targets of the mirrors, the `[aws]` account first, then
    /// by name; a file whose mirrors name no target account (none at all
    /// included) has the one target `[aws]`.
    #[must_use]
    pub fn targets(&self) -> Vec<Target> {
        let targets: BTreeSet<Target> = self.mirrors.iter().map(Target::of).collect();
        if targets.is_empty() { vec![Target::Aws] } else { targets.into_iter().collect() }
    }

    /// The names (`aws` for `[aws]`) of the accounts the target loops
    /// make EC2 clients for: every target, and every source account of a
    /// mirror (named apart from its target only when it differs).
    #[must_use]
    pub fn client_accounts(&self) -> BTreeSet<String> {
        let mut accounts: BTreeSet<String> = self.targets().iter().map(|t| t.label().to_owned()).collect();
        for mirror in &self.mirrors {
            accounts.insert(mirror.source_account.as_deref().unwrap_or(AWS_ACCOUNT).to_owned());
        }
        accounts
    }

    /// The target discovery and events serve: the `[aws]` account when it
    /// is a target, else the only target; `None` when the mirrors target
    /// several named accounts and none is `[aws]` (discovery and events are
    /// then off).
    #[must_use]
    pub fn primary_target(&self) -> Option<Target> {
        let targets = self.targets();
        if targets.contains(&Target::Aws) || targets.len() == 1 { targets.into_iter().next() } else { None }
    }

    /// The part of this configuration one target's loop runs: the mirrors
    /// that target it and, unless it is the [primary](Self::primary_target)
    /// target, no discovery and no events. Everything else (limits, safety,
    /// the accounts its sources live in) is shared.
    #[must_use]
    pub fn for_target(&self, target: &Target) -> Config {
        let mut part = self.clone();
        part.mirrors.retain(|mirror| Target::of(mirror) == *target);
        if self.primary_target().as_ref() != Some(target) {
            part.discovery.tag_key = None;
            part.events.queue_url = None;
        }
        part
    }

    /// The region of a target's EC2 client.
    #[must_use]
    pub fn target_region(&self, target: &Target) -> &str {
        match target.account().and_then(|name| self.accounts.get(name)) {
            Some(account) => &account.region,
            None => &self.aws.region,
        }
    }

    /// The file name of a target's state file in `daemon.state_dir`:
    /// [`STATE_FILE_NAME`] for the `[aws]` target (the name every earlier
    /// version used), `state-NAME.json` for a named one (account names are
    /// file-name safe: `a-z`, `0-9`, `_`, `-`). A target's file keeps its
    /// name whatever other targets come and go.
    #[must_use]
    pub fn state_file_name(&self, target: &Target) -> String {
        match target {
            Target::Aws => STATE_FILE_NAME.to_owned(),
            Target::Named(name) => format!("state-{name}.json"),
        }
    }

    /// The target that takes over a [`STATE_FILE_NAME`] its own file is
    /// missing at start: the only target, when it is a named one — a
    /// daemon of an earlier version wrote its memory under that name.
    /// (When `[aws]` is a target, the file is its own.)
    #[must_use]
    pub fn legacy_state_file_owner(&self) -> Option<Target> {
        match self.targets().as_slice() {
            [target @ Target::Named(_)] => Some(target.clone()),
            _ => None,
        }
    }

    /// Who a target is to EC2: the account of its role (`None`: the
    /// default chain's), its region and its endpoint. Two targets alike
    /// here are one estate.
    fn target_identity(&self, target: &Target) -> (Option<&str>, &str, Option<&str>) {
        let account = target.account().and_then(|name| self.accounts.get(name));
        let role_account = account.and_then(|a| a.role_arn.as_deref()).and_then(|arn| arn.split(':').nth(4));
        let endpoint = account.and_then(|a| a.endpoint_url.as_deref()).or(self.aws.endpoint_url.as_deref());
        (role_account, self.target_region(target), endpoint)
    }
}

/// Two targets may not be one account and region (same role account, or
/// both on the default chain, same region, same endpoint): each target's
/// loop owns every mirror of its estate, so each would take the other's
/// mirrors for orphans. Reported at the first mirror of the second target.
pub(super) fn distinct_targets(cx: &mut Checker<'_>, raw: &[Spanned<RawMirror>], config: &Config) {
    if raw.len() != config.mirrors.len() {
        return; // an entry could not be read: its error is reported already
    }
    let mut seen: BTreeMap<(Option<&str>, &str, Option<&str>), Target> = BTreeMap::new();
    for target in config.targets() {
        let identity = config.target_identity(&target);
        let Some(first) = seen.get(&identity) else {
            seen.insert(identity, target);
            continue;
        };
        let Some(i) = config.mirrors.iter().position(|m| Target::of(m) == target) else { continue };
        let (account, region, _) = identity;
        let who =
            account.map_or_else(|| "the default credential chain's account".to_owned(), |a| format!("account {a}"));
        let message = format!(
            "targets {who} in {region} through {target}, as {first} does: two targets may not be one account and \
             region (each would take the other's mirrors for orphans); name one [accounts] entry for both"
        );
        let entry = &raw[i];
        let span = entry.get_ref().target_account.as_ref().map_or_else(|| entry.span(), Spanned::span);
        cx.push(ErrorKind::InvalidValue, KeyPath::new(&format!("mirror[{i}]"), "target_account"), Some(span), message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[aws]\nregion = \"us-east-1\"\n\
             [accounts.b]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::222222222222:role/m\"\n\
             [accounts.c]\nregion = \"us-west-2\"\nrole_arn = \"arn:aws:iam::333333333333:role/m\"\n{extra}"
        );
        Config::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{}", crate::config::render_errors(&e)))
    }

    fn mirror(source: &str, target: Option<&str>) -> String {
        let target = target.map(|t| format!("target_account = \"{t}\"\n")).unwrap_or_default();
        format!("[[mirror]]\nsource_group = \"{source}\"\nvpc = \"vpc-01\"\n{target}")
    }

    fn sources(config: &Config) -> Vec<String> {
        config.mirrors.iter().map(|m| m.source.to_string()).collect()
    }

    #[test]
    fn a_file_without_target_accounts_has_the_one_aws_target_which_keeps_everything() {
        let config = config(&mirror("sg-01", None));
        assert_eq!(config.targets(), vec![Target::Aws]);
        assert_eq!(config.primary_target(), Some(Target::Aws));
        assert_eq!(config.for_target(&Target::Aws), config);
        let empty = crate::config::Config::with_region("us-east-1");
        assert_eq!(empty.targets(), vec![Target::Aws]);
    }

    #[test]
    fn mirrors_of_several_targets_are_split_by_target_and_discovery_and_events_stay_with_aws() {
        let text =
            [mirror("sg-01", Some("c")), mirror("sg-02", None), mirror("sg-03", Some("b")), mirror("sg-04", Some("c"))]
                .concat();
        let config = config(&format!("[events]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n{text}"));
        let b = Target::Named("b".into());
        let c = Target::Named("c".into());
        assert_eq!(config.targets(), vec![Target::Aws, b.clone(), c.clone()]);
        assert_eq!(config.primary_target(), Some(Target::Aws));
        let aws = config.for_target(&Target::Aws);
        assert_eq!(sources(&aws), ["sg-02"]);
        assert!(aws.discovery.tag_key.is_some() && aws.events.queue_url.is_some());
        let part = config.for_target(&c);
        assert_eq!(sources(&part), ["sg-01", "sg-04"]);
        assert_eq!((part.discovery.tag_key.as_ref(), part.events.queue_url.as_ref()), (None, None));
        assert_eq!(part.target_account(), Some("c"));
        assert_eq!(sources(&config.for_target(&b)), ["sg-03"]);
        assert_eq!(config.target_region(&b), "eu-west-1");
        assert_eq!(config.target_region(&Target::Aws), "us-east-1");
        // Every mirror is in exactly one part.
        let total: usize = config.targets().iter().map(|t| config.for_target(t).mirrors.len()).sum();
        assert_eq!(total, config.mirrors.len());
    }

    #[test]
    fn the_only_named_target_is_primary_but_several_named_targets_have_none() {
        let one = config(&[mirror("sg-01", Some("b")), mirror("sg-02", Some("b"))].concat());
        assert_eq!(one.primary_target(), Some(Target::Named("b".into())));
        assert_eq!(one.for_target(&Target::Named("b".into())), one);
        let two = config(&[mirror("sg-01", Some("b")), mirror("sg-02", Some("c"))].concat());
        assert_eq!(two.primary_target(), None);
        assert!(two.for_target(&Target::Named("b".into())).discovery.tag_key.is_none());
    }

    #[test]
    fn state_files_are_per_target_and_the_aws_one_keeps_the_old_name() {
        let aws = config(&mirror("sg-01", None));
        assert_eq!(aws.state_file_name(&Target::Aws), "state.json");
        assert_eq!(aws.legacy_state_file_owner(), None, "state.json is the [aws] target's own");
        let many = config(&[mirror("sg-01", Some("b")), mirror("sg-02", None), mirror("sg-03", Some("c"))].concat());
        assert_eq!(many.state_file_name(&Target::Aws), "state.json");
        assert_eq!(many.state_file_name(&Target::Named("b".into())), "state-b.json");
        assert_eq!(many.state_file_name(&Target::Named("c".into())), "state-c.json");
        let names: BTreeSet<String> = many.targets().iter().map(|t| many.state_file_name(t)).collect();
        assert_eq!(names.len(), 3, "one file per target");
        assert_eq!(many.legacy_state_file_owner(), None);
        let two = config(&[mirror("sg-01", Some("b")), mirror("sg-02", Some("c"))].concat());
        assert_eq!(two.legacy_state_file_owner(), None, "whose it was cannot be told");
    }

    #[test]
    fn a_single_named_target_takes_over_the_state_file_an_earlier_version_wrote() {
        let single = config(&mirror("sg-01", Some("b")));
        assert_eq!(single.state_file_name(&Target::Named("b".into())), "state-b.json");
        assert_eq!(single.legacy_state_file_owner(), Some(Target::Named("b".into())));
    }

    #[test]
    fn two_targets_that_are_one_account_and_region_are_refused() {
        let text = "[aws]\nregion = \"us-east-1\"\n\
                    [accounts.twin]\nregion = \"us-east-1\"\n\
                    [accounts.b]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::222222222222:role/m\"\n\
                    [accounts.b2]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::222222222222:role/other\"\n\
                    [accounts.b3]\nregion = \"us-west-2\"\nrole_arn = \"arn:aws:iam::222222222222:role/m\"\n";
        let errors = |mirrors: &[String]| {
            Config::from_toml_str(&format!("{text}{}", mirrors.concat()), None)
                .err()
                .map(|e| crate::config::render_errors(&e))
        };
        let twin = errors(&[mirror("sg-01", None), mirror("sg-02", Some("twin"))]).expect("refused");
        assert!(twin.starts_with("mirror[1].target_account: targets the default credential chain's account in us-east-1 through twin, as aws does"), "{twin}");
        let b2 = errors(&[mirror("sg-01", Some("b")), mirror("sg-02", Some("b2"))]).expect("refused");
        assert!(
            b2.contains("mirror[1].target_account: targets account 222222222222 in eu-west-1 through b2, as b does"),
            "{b2}"
        );
        // One account in two regions is two targets.
        assert_eq!(errors(&[mirror("sg-01", Some("b")), mirror("sg-02", Some("b3")), mirror("sg-03", None)]), None);
    }
}
