//! EC2's XML answers: a tiny writer that escapes every text node, and the
//! shapes the actions answer with (security groups with their
//! `IpPermission`s, reservations of instances, ClassicLink links, VPCs,
//! instance state changes), spelled as `aws-sdk-ec2` reads them
//! (`protocol_serde/shape_*.rs`): lower-camel element names, lists as
//! `<xSet><item>…</item></xSet>`, absent optional fields left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{InstanceState, SecurityGroup};

use super::super::IpPermission;
use super::super::permissions::{CidrSource, GroupSource, PrefixListSource};

/// The namespace of every EC2 answer.
pub(crate) const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Appends `text` escaped for an XML text node or attribute. Characters
/// XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF) become
/// U+FFFD; a carriage return is written as a character reference so XML's
/// line-end normalisation cannot turn it into a newline.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    // Runs of characters that need nothing are copied whole: answers are
    // megabytes of ids, names and CIDRs that almost never need escaping.
    let mut clean_from = 0;
    for (at, c) in text.char_indices() {
        let replacement = match c {
            '<' => "&lt;",
            '>' => "&gt;",
            '&' => "&amp;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\r' => "&#13;",
            '\t' | '\n' => continue,
            c if u32::from(c) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => "\u{FFFD}",
            _ => continue,
        };
        out.push_str(&text[clean_from..at]);
        out.push_str(replacement);
        clean_from = at + c.len_utf8();
    }
    out.push_str(&text[clean_from..]);
}

/// Appends `n` in decimal without the formatting machinery (two numbers
/// per rule: ports).
fn push_integer(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// An XML fragment under construction. Element names are literals of this
/// module; every text goes through [`escape_into`].
#[derive(Debug, Default)]
pub(crate) struct Xml {
    out: String,
}

impl Xml {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn into_string(self) -> String {
        self.out
    }

    // Plain pushes, not `write!`: formatting machinery per element was
    // most of the time of a 10 MB page (docs/BENCHMARKS.md, figure 5).
    pub(crate) fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    pub(crate) fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`.
    pub(crate) fn text(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        escape_into(&mut self.out, text);
        self.close(tag)
    }

    /// `<tag>text</tag>` when there is a text.
    pub(crate) fn opt_text(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(text) = text {
            self.text(tag, text);
        }
        self
    }

    /// `<tag>n</tag>`.
    pub(crate) fn number(&mut self, tag: &str, n: i64) -> &mut Self {
        self.open(tag);
        push_integer(&mut self.out, n);
        self.close(tag)
    }

    /// `<tag>true|false</tag>`.
    pub(crate) fn boolean(&mut self, tag: &str, b: bool) -> &mut Self {
        self.open(tag);
        self.out.push_str(if b { "true" } else { "false" });
        self.close(tag)
    }

    /// `<tag><item>…</item>…</tag>`, or `<tag/>` for no items.
    pub(crate) fn list<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut item: impl FnMut(&mut Self, T),
    ) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            self.out.push('<');
            self.out.push_str(tag);
            self.out.push_str("/>");
            return;
        }
        self.open(tag);
        for one in items {
            self.open("item");
            item(self, one);
            self.close("item");
        }
        self.close(tag);
    }

    /// `<tagSet>` of key/value items.
    pub(crate) fn tags(&mut self, tags: &BTreeMap<String, String>) {
        self.list("tagSet", tags, |x, (key, value)| {
            x.text("key", key).text("value", value);
        });
    }
}

/// The document of a successful action.
pub(crate) fn response(action: &str, request_id: &str, inner: &str) -> String {
    let mut out = String::with_capacity(inner.len() + 256);
    let _ = write!(out, r#"<?xml version="1.0" encoding="UTF-8"?>{}<{action}Response xmlns="{NAMESPACE}">"#, '\n');
    out.push_str("<requestId>");
    escape_into(&mut out, request_id);
    out.push_str("</requestId>");
    out.push_str(inner);
    let _ = write!(out, "</{action}Response>");
    out
}

/// EC2's error document.
pub(crate) fn error(code: &str, message: &str, request_id: &str) -> String {
    let mut x = Xml::new();
    x.open("Response").open("Errors").open("Error").text("Code", code).text("Message", message);
    x.close("Error").close("Errors").text("RequestID", request_id).close("Response");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}", x.into_string())
}

/// EC2's numeric code of an instance state.
pub(crate) fn state_code(state: InstanceState) -> i64 {
    match state {
        InstanceState::Pending => 0,
        InstanceState::Running => 16,
        InstanceState::ShuttingDown => 32,
        InstanceState::Terminated => 48,
        InstanceState::Stopping => 64,
        InstanceState::Stopped => 80,
    }
}

/// `<tag><code/><name/></tag>`.
pub(crate) fn instance_state(x: &mut Xml, tag: &str, state: InstanceState) {
    x.open(tag).number("code", state_code(state)).text("name", state.as_ec2()).close(tag);
}

fn cidr_source(x: &mut Xml, tag: &str, source: &CidrSource) {
    x.text(tag, &source.cidr).opt_text("description", source.description.as_deref());
}

fn prefix_list_source(x: &mut Xml, source: &PrefixListSource) {
    x.text("prefixListId", &source.prefix_list_id).opt_text("description", source.description.as_deref());
}

fn group_source(x: &mut Xml, source: &GroupSource) {
    x.opt_text("userId", source.user_id.as_deref())
        .opt_text("groupId", source.group_id.as_deref())
        .opt_text("groupName", source.group_name.as_deref())
        .opt_text("description", source.description.as_deref());
}

/// One `IpPermission` (the inside of its `<item>`).
pub(crate) fn ip_permission(x: &mut Xml, permission: &IpPermission) {
    x.text("ipProtocol", &permission.ip_protocol);
    if let Some(from) = permission.from_port {
        x.number("fromPort", i64::from(from));
    }
    if let Some(to) = permission.to_port {
        x.number("toPort", i64::from(to));
    }
    x.list("groups", &permission.user_id_group_pairs, group_source);
    x.list("ipRanges", &permission.ip_ranges, |x, s| cidr_source(x, "cidrIp", s));
    x.list("ipv6Ranges", &permission.ipv6_ranges, |x, s| cidr_source(x, "cidrIpv6", s));
    x.list("prefixListIds", &permission.prefix_list_ids, prefix_list_source);
}

/// One security group (the inside of its `<item>`). In an EC2-Classic
/// group, `group_name` names the same-account groups its rules reference,
/// as EC2-Classic answered (VPC groups answer ids only).
pub(crate) fn security_group(x: &mut Xml, group: &SecurityGroup, group_name: &impl Fn(&str) -> Option<String>) {
    let mut permissions = IpPermission::group_grants(&group.ingress, &group.owner_id);
    if group.is_classic() {
        for pair in permissions.iter_mut().flat_map(|p| p.user_id_group_pairs.iter_mut()) {
            if pair.user_id.as_deref() == Some(group.owner_id.as_str()) {
                pair.group_name = pair.group_id.as_deref().and_then(group_name);
            }
        }
    }
    x.text("ownerId", &group.owner_id)
        .text("groupId", group.id.as_str())
        .text("groupName", &group.name)
        .text("groupDescription", &group.description)
        .opt_text("vpcId", group.vpc_id.as_ref().map(|v| v.as_str()));
    x.list("ipPermissions", &permissions, ip_permission);
    let egress = IpPermission::group_grants(&group.egress, &group.owner_id);
    x.list("ipPermissionsEgress", &egress, ip_permission);
    x.tags(&group.tags);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, text);
        out
    }

    #[test]
    fn markup_characters_are_escaped_and_controls_cannot_break_the_document() {
        assert_eq!(escaped(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escaped("line\r\nnext\ttab"), "line&#13;\nnext\ttab");
        assert_eq!(escaped("bell\u{7}nul\u{0}\u{FFFF}"), "bell\u{FFFD}nul\u{FFFD}\u{FFFD}");
        assert_eq!(escaped("caf\u{e9} \u{1F600}"), "caf\u{e9} \u{1F600}");
    }

    #[test]
    fn numbers_and_booleans_are_written_in_full() {
        let mut x = Xml::new();
        for n in [0, 7, -1, 65_535, i64::MIN, i64::MAX] {
            x.number("n", n);
        }
        x.boolean("b", true).boolean("b", false);
        assert_eq!(
            x.into_string(),
            "<n>0</n><n>7</n><n>-1</n><n>65535</n><n>-9223372036854775808</n><n>9223372036854775807</n>\
             <b>true</b><b>false</b>"
        );
    }

    #[test]
    fn escaping_keeps_the_clean_runs_around_each_replacement() {
        assert_eq!(escaped(""), "");
        assert_eq!(escaped("sg-0a1b2c3d"), "sg-0a1b2c3d");
        assert_eq!(escaped("<<x>>"), "&lt;&lt;x&gt;&gt;");
        assert_eq!(escaped("\u{e9}<\u{1F600}&\u{FFFE}"), "\u{e9}&lt;\u{1F600}&amp;\u{FFFD}");
    }

    #[test]
    fn empty_lists_are_empty_elements_and_items_are_wrapped() {
        let mut x = Xml::new();
        x.list("groupSet", Vec::<&str>::new(), |x, g| {
            x.text("groupId", g);
        });
        x.list("instancesSet", ["i-1", "i-2"], |x, i| {
            x.text("instanceId", i);
        });
        assert_eq!(
            x.into_string(),
            "<groupSet/><instancesSet><item><instanceId>i-1</instanceId></item>\
             <item><instanceId>i-2</instanceId></item></instancesSet>"
        );
    }

    #[test]
    fn error_documents_have_ec2s_shape() {
        assert_eq!(
            error("InvalidGroup.NotFound", "The security group 'sg-1' does not exist <&>", "r-1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidGroup.NotFound</Code>\
             <Message>The security group &apos;sg-1&apos; does not exist &lt;&amp;&gt;</Message></Error></Errors>\
             <RequestID>r-1</RequestID></Response>"
        );
    }

    #[test]
    fn answers_are_in_the_ec2_namespace_with_a_request_id() {
        let doc = response("DescribeVpcs", "r-9", "<vpcSet/>");
        assert!(doc.ends_with(
            "<DescribeVpcsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>r-9</requestId><vpcSet/></DescribeVpcsResponse>"
        ));
    }
}
