//! Parameter validation as EC2 does it: names, descriptions, tags, and the
//! canonical form of a grant. Shared by the `Ec2` port, the EC2-shaped
//! actions and the estate loader, so every entry point rejects the same input
//! with the same code.

use crate::model::{Grant, Peer, Ports, Protocol};

use super::codes;
use super::state::Fail;

/// EC2's maximum length of group names, group descriptions and rule descriptions.
pub const MAX_TEXT_LEN: usize = 255;
/// EC2's maximum tag key length.
pub const MAX_TAG_KEY_LEN: usize = 127;
/// EC2's maximum tag value length.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// EC2's maximum number of tags on one resource.
pub const MAX_TAGS: usize = 50;

/// Characters EC2 allows in VPC group names and descriptions besides ASCII
/// letters, digits and spaces.
const VPC_GROUP_PUNCTUATION: &str = "._-:/()#,@[]+=&;{}!$*";
/// Characters EC2 allows in rule descriptions besides letters, digits, spaces.
const RULE_PUNCTUATION: &str = "._-:/()#,@[]+=;{}!$*";

fn vpc_charset(text: &str, punctuation: &str) -> bool {
    text.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || punctuation.contains(c))
}

fn check_text(what: &str, text: &str, classic: bool, punctuation: &str) -> Result<(), Fail> {
    if text.is_empty() {
        return Err(Fail::new(codes::INVALID_PARAMETER_VALUE, format!("{what} must not be empty")));
    }
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("{what} is longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    let ok = if classic { text.is_ascii() } else { vpc_charset(text, punctuation) };
    if !ok {
        let allowed =
            if classic { "ASCII characters".to_owned() } else { format!("a-z, A-Z, 0-9, spaces, and {punctuation}") };
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Invalid {what} {text:?}: only {allowed} are allowed"),
        ));
    }
    Ok(())
}

/// `GroupName`: 1–255 characters (VPC character set, ASCII for Classic), not
/// starting with `sg-`; `default` is reserved.
pub(crate) fn check_group_name(name: &str, classic: bool) -> Result<(), Fail> {
    check_text("group name", name, classic, VPC_GROUP_PUNCTUATION)?;
    if name.to_ascii_lowercase().starts_with("sg-") {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Invalid group name {name:?}: group names may not start with 'sg-'"),
        ));
    }
    if name == "default" {
        return Err(Fail::new(
            codes::GROUP_RESERVED,
            "The security group 'default' is reserved and cannot be created".to_owned(),
        ));
    }
    Ok(())
}

/// `GroupDescription`: 1–255 characters (VPC character set, ASCII for Classic).
pub(crate) fn check_group_description(description: &str, classic: bool) -> Result<(), Fail> {
    check_text("group description", description, classic, VPC_GROUP_PUNCTUATION)
}

/// A rule description: up to 255 characters of the rule character set.
pub(crate) fn check_rule_description(description: &str) -> Result<(), Fail> {
    check_text("rule description", description, false, RULE_PUNCTUATION)
}

/// A tag: key 1–127 characters not starting with `aws:`, value up to 256.
pub(crate) fn check_tag(key: &str, value: &str) -> Result<(), Fail> {
    if key.is_empty() || key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Tag key {key:?} must be 1 to {MAX_TAG_KEY_LEN} characters"),
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Tag key {key:?}: keys starting with 'aws:' are reserved for internal use"),
        ));
    }
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Tag value for key {key:?} is longer than {MAX_TAG_VALUE_LEN} characters"),
        ));
    }
    Ok(())
}

fn bad_ports(protocol: Protocol, ports: &Ports) -> Fail {
    let (from, to) = ports.as_ec2();
    Fail::new(
        codes::INVALID_PARAMETER_VALUE,
        format!(
            "Invalid port range (FromPort {}, ToPort {}) for IP protocol {}",
            crate::model::port_text(from),
            crate::model::port_text(to),
            protocol.as_ec2()
        ),
    )
}

/// Brings a grant handed in through the port into the canonical form EC2
/// stores, or rejects it like EC2 rejects the equivalent permission:
/// inconsistent protocol/ports, IPv6 or prefix lists on a Classic group, a
/// bad description. A group peer owned by `own_account` loses its owner.
pub(crate) fn canonical_grant(grant: &Grant, own_account: &str, classic: bool) -> Result<Grant, Fail> {
    let protocol = match grant.key.protocol {
        Protocol::Number(6) => Protocol::Tcp,
        Protocol::Number(17) => Protocol::Udp,
        Protocol::Number(1) => Protocol::Icmp,
        Protocol::Number(58) => Protocol::Icmpv6,
        other => other,
    };
    let ports = match (protocol, grant.key.ports) {
        (Protocol::Tcp | Protocol::Udp, Ports::Range { from, to }) if from <= to => Ports::Range { from, to },
        (Protocol::Icmp | Protocol::Icmpv6, Ports::Icmp { icmp_type, code })
            if (-1..=255).contains(&icmp_type) && (-1..=255).contains(&code) =>
        {
            if icmp_type == -1 {
                Ports::Icmp { icmp_type: -1, code: -1 }
            } else {
                Ports::Icmp { icmp_type, code }
            }
        }
        (Protocol::All | Protocol::Number(_), _) => Ports::None,
        (_, ports) => return Err(bad_ports(protocol, &ports)),
    };
    let peer = match &grant.key.peer {
        Peer::Ipv4(net) => Peer::Ipv4(net.trunc()),
        Peer::Ipv6(net) if !classic => Peer::Ipv6(net.trunc()),
        Peer::PrefixList(id) if !classic => Peer::PrefixList(id.clone()),
        Peer::Ipv6(_) | Peer::PrefixList(_) => {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                "EC2-Classic security groups accept only IPv4 CIDRs and security groups as sources".to_owned(),
            ));
        }
        Peer::Group { group, owner } => {
            Peer::Group { group: group.clone(), owner: owner.clone().filter(|o| !o.is_empty() && o != own_account) }
        }
    };
    if let Some(description) = &grant.description {
        check_rule_description(description)?;
    }
    Ok(Grant::new(protocol, ports, peer, grant.description.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupId;

    fn fails_with(result: Result<(), Fail>, code: &str) {
        assert_eq!(result.expect_err("must fail").code, code);
    }

    #[test]
    fn group_names_starting_with_sg_are_rejected() {
        fails_with(check_group_name("sg-web", false), codes::INVALID_PARAMETER_VALUE);
        fails_with(check_group_name("SG-web", true), codes::INVALID_PARAMETER_VALUE);
        assert!(check_group_name("web-sg", false).is_ok());
    }

    #[test]
    fn the_name_default_is_reserved() {
        fails_with(check_group_name("default", false), codes::GROUP_RESERVED);
    }

    #[test]
    fn vpc_descriptions_use_the_vpc_character_set_and_classic_ones_ascii() {
        fails_with(check_group_description("café", false), codes::INVALID_PARAMETER_VALUE);
        fails_with(check_group_description("a|b", false), codes::INVALID_PARAMETER_VALUE);
        assert!(check_group_description("a|b", true).is_ok());
        fails_with(check_group_description("café", true), codes::INVALID_PARAMETER_VALUE);
        assert!(check_group_description("Web tier (prod) #1: 443/tcp & more", false).is_ok());
        fails_with(check_group_description(&"x".repeat(256), false), codes::INVALID_PARAMETER_VALUE);
        fails_with(check_group_description("", false), codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn rule_descriptions_may_not_contain_ampersands() {
        fails_with(check_rule_description("a & b"), codes::INVALID_PARAMETER_VALUE);
        assert!(check_rule_description("office (HQ)").is_ok());
    }

    #[test]
    fn tag_keys_starting_with_aws_are_reserved() {
        fails_with(check_tag("aws:cloudformation", "x"), codes::INVALID_PARAMETER_VALUE);
        fails_with(check_tag("", "x"), codes::INVALID_PARAMETER_VALUE);
        assert!(check_tag("Name", "").is_ok());
    }

    #[test]
    fn inconsistent_ports_are_rejected_and_numbers_become_names() {
        let peer = Peer::Ipv4("10.1.2.3/8".parse().unwrap());
        let bad = Grant::new(Protocol::Tcp, Ports::Range { from: 443, to: 80 }, peer.clone(), None);
        assert_eq!(canonical_grant(&bad, "1", false).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        let none = Grant::new(Protocol::Tcp, Ports::None, peer.clone(), None);
        assert!(canonical_grant(&none, "1", false).is_err());
        let numbered = Grant::new(Protocol::Number(6), Ports::Range { from: 22, to: 22 }, peer, None);
        let canonical = canonical_grant(&numbered, "1", false).unwrap();
        assert_eq!(canonical.key.protocol, Protocol::Tcp);
        assert_eq!(canonical.key.peer, Peer::Ipv4("10.0.0.0/8".parse().unwrap()));
    }

    #[test]
    fn own_account_owner_is_dropped_from_group_peers() {
        let g = GroupId::try_new("sg-1").unwrap();
        let grant = Grant::new(
            Protocol::All,
            Ports::None,
            Peer::Group { group: g.clone(), owner: Some("123456789012".into()) },
            None,
        );
        let canonical = canonical_grant(&grant, "123456789012", true).unwrap();
        assert_eq!(canonical.key.peer, Peer::Group { group: g, owner: None });
    }

    #[test]
    fn classic_groups_reject_ipv6_sources() {
        let grant = Grant::new(Protocol::All, Ports::None, Peer::Ipv6("2001:db8::/32".parse().unwrap()), None);
        assert!(canonical_grant(&grant, "1", true).is_err());
        assert!(canonical_grant(&grant, "1", false).is_ok());
    }
}
