//! `[accounts.NAME]` and the `source_account`/`target_account` of a
//! `[[mirror]]` (docs/configuration.md, "Accounts"): the accounts and
//! regions a daemon reaches besides the `[aws]` one, each by its own role.
//! The keys are declared in `config/sections.rs`; here are their readers,
//! the reading of the named tables, and the rules across them and the
//! mirrors.

use std::collections::BTreeMap;

use toml::Spanned;

use super::check::{Checker, KeyPath, RawValue};
use super::error::ErrorKind;
use super::sections::{AccountConfig, MirrorConfig, PartialAccount, RawAccount, RawMirror};

/// The name the `[aws]` account has where an account is named (error
/// messages); no `[accounts.NAME]` may take it.
pub const AWS_ACCOUNT: &str = "aws";

/// Default of `accounts.NAME.session_name`.
pub const DEFAULT_SESSION_NAME: &str = "classiclink-mirror";

/// Longest account name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 32;

/// Longest `external_id` STS accepts.
const MAX_EXTERNAL_ID_LEN: usize = 1224;

impl AccountConfig {
    /// An account in `region` on the default chain.
    #[must_use]
    pub fn in_region(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            role_arn: None,
            external_id: None,
            session_name: DEFAULT_SESSION_NAME.to_owned(),
            endpoint_url: None,
        }
    }
}

/// Whether `name` can name an account: 1 to [`MAX_ACCOUNT_NAME_LEN`] of
/// lower-case letters, digits, `_` and `-`, starting with a letter or digit.
fn check_account_name(name: &str) -> Result<(), String> {
    if name == AWS_ACCOUNT {
        return Err(format!("{name:?} is the name of the [aws] account; choose another"));
    }
    let good = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if good {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an account name (1 to {MAX_ACCOUNT_NAME_LEN} of a-z, 0-9, _ and -, starting with a letter or digit)"
        ))
    }
}

/// Whether `arn` is an IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && !name.ends_with('/')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-/".contains(&b))
        })
}

/// The characters STS allows in `RoleSessionName` and `ExternalId`
/// (`[\w+=,.@-]`, and `:/` in an external id).
fn sts_text(text: &str, extra: &[u8]) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b) || extra.contains(&b))
}

fn checked(
    cx: &mut Checker<'_>,
    at: KeyPath<'_>,
    raw: &RawValue,
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<String> {
    let text = cx.string(at, raw)?;
    match check(text) {
        Ok(()) => Some(text.to_owned()),
        Err(why) => {
            cx.invalid(at, raw, why);
            None
        }
    }
}

/// `accounts.NAME.role_arn`.
pub(super) fn role_arn(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    checked(cx, at, raw, |arn| {
        if is_role_arn(arn) {
            Ok(())
        } else {
            Err(format!("{arn:?} is not an IAM role ARN (like \"arn:aws:iam::123456789012:role/classiclink-mirror\")"))
        }
    })
}

/// `accounts.NAME.external_id`.
pub(super) fn external_id(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    checked(cx, at, raw, |id| {
        if (2..=MAX_EXTERNAL_ID_LEN).contains(&id.len()) && sts_text(id, b":/") {
            Ok(())
        } else {
            Err(format!("{id:?} is not an external id (2 to {MAX_EXTERNAL_ID_LEN} of letters, digits and +=,.@:/-_)"))
        }
    })
}

/// `accounts.NAME.session_name`.
pub(super) fn session_name(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    checked(cx, at, raw, |name| {
        if (2..=64).contains(&name.len()) && sts_text(name, b"") {
            Ok(())
        } else {
            Err(format!("{name:?} is not a session name (2 to 64 of letters, digits and +=,.@-_)"))
        }
    })
}

/// `mirror[i].source_account` and `target_account`: a name; whether an
/// `[accounts.NAME]` has it is [`mirror_rules`]' question.
pub(super) fn account_name(cx: &mut Checker<'_>, at: KeyPath<'_>, raw: &RawValue) -> Option<String> {
    cx.string(at, raw).map(str::to_owned)
}

/// Reads every `[accounts.NAME]`: its name, its keys, and that an external
/// id comes with a role. Returns them when every one could be read.
pub(super) fn accounts(
    cx: &mut Checker<'_>,
    raw: &BTreeMap<String, Spanned<RawAccount>>,
) -> Option<BTreeMap<String, AccountConfig>> {
    let mut accounts = BTreeMap::new();
    let mut complete = true;
    for (name, entry) in raw {
        let prefix = format!("accounts.{}", super::raw::key_segment(name));
        if let Err(why) = check_account_name(name) {
            cx.push(ErrorKind::InvalidValue, &prefix, Some(entry.span()), why);
            complete = false;
            continue;
        }
        let account = PartialAccount::read(cx, entry.get_ref(), &prefix, Some(entry.span()));
        if let (None, Some(value)) = (&entry.get_ref().role_arn, &entry.get_ref().external_id) {
            let message = "is set without role_arn: an external id is sent only when assuming a role".to_owned();
            cx.push(ErrorKind::InvalidValue, KeyPath::new(&prefix, "external_id"), Some(value.span()), message);
            complete = false;
        }
        match account.complete() {
            Some(account) => {
                accounts.insert(name.clone(), account);
            }
            None => complete = false,
        }
    }
    complete.then_some(accounts)
}

/// The rules across the mirrors and the accounts: a mirror's accounts are
/// names of `[accounts]`; a source in another account than its target is
/// named by id. (Mirrors may target several accounts: one loop each,
/// `config/targets.rs`.) `mirrors` are the entries of `raw`, all
/// read.
pub(super) fn mirror_rules(
    cx: &mut Checker<'_>,
    raw: &[Spanned<RawMirror>],
    mirrors: &[MirrorConfig],
    accounts: &BTreeMap<String, Spanned<RawAccount>>,
) {
    let known: Vec<&str> = accounts.keys().map(String::as_str).collect();
    let known = if known.is_empty() {
        "there is no [accounts.NAME] section".to_owned()
    } else {
        format!("known accounts: {}", known.join(", "))
    };
    for (i, (entry, mirror)) in raw.iter().zip(mirrors).enumerate() {
        let prefix = format!("mirror[{i}]");
        let m = entry.get_ref();
        let mut usable = true;
        for (key, name, value) in [
            ("source_account", &mirror.source_account, &m.source_account),
            ("target_account", &mirror.target_account, &m.target_account),
        ] {
            if let (Some(name), Some(value)) = (name, value)
                && !accounts.contains_key(name)
            {
                let message = format!("{name:?} is not an account of [accounts] ({known})");
                cx.invalid(KeyPath::new(&prefix, key), value, message);
                usable = false;
            }
        }
        if !usable {
            continue;
        }
        // A group name is unique among Classic groups of one account only:
        // a source elsewhere is named by its id.
        if let (super::SourceRef::Name(group), Some(value)) = (&mirror.source, &m.source)
            && mirror.source_account != mirror.target_account
        {
            let message = format!(
                "{group:?} is a group name, but the source is in another account than the target: name it by its id (sg-…)"
            );
            cx.invalid(KeyPath::new(&prefix, "source_group"), value, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_recognised() {
        assert!(is_role_arn("arn:aws:iam::123456789012:role/classiclink-mirror"));
        assert!(is_role_arn("arn:aws-cn:iam::123456789012:role/path/to/mirror"));
        assert!(!is_role_arn("arn:aws:iam::12345678901:role/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/x"));
        assert!(!is_role_arn("arn:aws:sts::123456789012:role/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!is_role_arn("nonsense"));
    }

    #[test]
    fn account_names_are_short_lower_case_words() {
        assert!(check_account_name("prod-eu").is_ok());
        assert!(check_account_name("b2").is_ok());
        assert!(check_account_name("aws").is_err());
        assert!(check_account_name("Prod").is_err());
        assert!(check_account_name("-x").is_err());
        assert!(check_account_name("").is_err());
        assert!(check_account_name(&"a".repeat(33)).is_err());
    }
}
