//! The `aws-sdk-ec2` adapter against canned EC2 answers over HTTP: what moto
//! cannot show — EC2-Classic groups (no `vpcId`), multi-page
//! `DescribeSecurityGroups` and `DescribeClassicLinkInstances`, malformed
//! pages and EC2 error documents — written as EC2's Query API returns them.
//! A few dozen lines of HTTP/1.1 on 127.0.0.1:0; no network, no moto.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use classiclink_mirror::ec2::aws::{AwsEc2, MALFORMED_RESPONSE};
use classiclink_mirror::ec2::{Ec2, ErrorKind, GroupFilter, LinkFilter};
use classiclink_mirror::model::{Grant, GroupId, InstanceId, Peer, Ports, Protocol, VpcId, canonical_ipv4};

/// One decoded request: its form parameters.
type Params = BTreeMap<String, String>;
/// Status and body for a request.
type Answer = (u16, String);

/// A fake EC2 endpoint: answers each request with `answer` and keeps every
/// request's parameters.
struct Canned {
    url: String,
    requests: Arc<Mutex<Vec<Params>>>,
}

impl Canned {
    async fn start(answer: impl Fn(&Params) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<dyn Fn(&Params) -> Answer + Send + Sync> = Arc::new(answer);
        let log = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&answer), Arc::clone(&log)));
            }
        });
        Self { url, requests }
    }

    async fn client(&self) -> AwsEc2 {
        crate::common::local_port(&self.url).await
    }

    fn requests(&self) -> Vec<Params> {
        self.requests.lock().expect("requests").clone()
    }
}

/// Serves HTTP/1.1 requests on one (kept-alive) connection.
async fn serve(
    mut socket: TcpStream,
    answer: Arc<dyn Fn(&Params) -> Answer + Send + Sync>,
    log: Arc<Mutex<Vec<Params>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0_u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0_u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let params = parse_form(&String::from_utf8_lossy(&body));
        let (status, text) = answer(&params);
        log.lock().expect("log").push(params);
        let response = format!(
            "HTTP/1.1 {status} Canned\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn parse_form(body: &str) -> Params {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(byte) =
                    bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params.get(key).map(String::as_str)
}

fn ok_xml(action: &str, inner: &str) -> Answer {
    (
        200,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId>{inner}</{action}Response>"#
        ),
    )
}

fn error_xml(status: u16, code: &str) -> Answer {
    (
        status,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>canned {code}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"#
        ),
    )
}

/// An EC2-Classic group as EC2 described one: no `vpcId`, a rule from the
/// ELB's Classic group (another account) and one from a group of its own.
const CLASSIC_WEB: &str = r#"<item>
  <ownerId>111122223333</ownerId><groupId>sg-0a1</groupId><groupName>web</groupName>
  <groupDescription>Web tier</groupDescription>
  <ipPermissions>
    <item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort>
      <groups>
        <item><userId>amazon-elb</userId><groupId>sg-843f59ed</groupId><groupName>amazon-elb-sg</groupName></item>
        <item><userId>111122223333</userId><groupId>sg-0a2</groupId><groupName>app</groupName><description>app</description></item>
      </groups>
      <ipRanges><item><cidrIp>203.0.113.7/24</cidrIp><description>office</description></item></ipRanges>
      <ipv6Ranges/><prefixListIds/>
    </item>
  </ipPermissions>
  <ipPermissionsEgress/>
  <tagSet><item><key>classiclinkmirror:linkToVPC</key><value>vpc-9f2</value></item></tagSet>
</item>"#;

const VPC_MIRROR: &str = r#"<item>
  <ownerId>111122223333</ownerId><groupId>sg-77c</groupId><groupName>web</groupName>
  <groupDescription>Web tier</groupDescription><vpcId>vpc-9f2</vpcId>
  <ipPermissions/><ipPermissionsEgress/>
  <tagSet><item><key>classiclinkmirror:mirroredFromClassicSecurityGroupId</key><value>sg-0a1</value></item></tagSet>
</item>"#;

const NO_GROUP_ID: &str = r#"<item><ownerId>111122223333</ownerId><groupName>broken</groupName></item>"#;

fn groups_page(items: &[&str], next: Option<&str>) -> Answer {
    let next = next.map(|t| format!("<nextToken>{t}</nextToken>")).unwrap_or_default();
    ok_xml("DescribeSecurityGroups", &format!("<securityGroupInfo>{}</securityGroupInfo>{next}", items.concat()))
}

fn sg(id: &str) -> GroupId {
    GroupId::try_new(id).unwrap()
}

#[tokio::test]
async fn classic_groups_are_read_across_pages_with_filters_and_page_size() {
    let ec2 = Canned::start(|p| match param(p, "NextToken") {
        None => groups_page(&[CLASSIC_WEB], Some("page-2")),
        Some("page-2") => groups_page(&[VPC_MIRROR], None),
        Some(other) => panic!("unexpected token {other}"),
    })
    .await;
    let filter = GroupFilter { group_names: vec!["web".into()], ..GroupFilter::default() };
    let groups = ec2.client().await.describe_security_groups(&filter).await.expect("describe");

    assert_eq!(groups.len(), 2);
    let web = &groups[0];
    assert!(web.is_classic());
    assert_eq!(
        (web.name.as_str(), web.description.as_str(), web.owner_id.as_str()),
        ("web", "Web tier", "111122223333")
    );
    assert_eq!(web.tags.get("classiclinkmirror:linkToVPC").map(String::as_str), Some("vpc-9f2"));
    let http =
        |peer, d: Option<&str>| Grant::new(Protocol::Tcp, Ports::Range { from: 80, to: 80 }, peer, d.map(Into::into));
    assert_eq!(
        web.ingress,
        vec![
            http(Peer::Ipv4(canonical_ipv4("203.0.113.0/24").unwrap()), Some("office")),
            http(Peer::Group { group: sg("sg-843f59ed"), owner: Some("amazon-elb".into()) }, None),
            http(Peer::Group { group: sg("sg-0a2"), owner: None }, Some("app")),
        ]
    );
    let mirror = &groups[1];
    assert_eq!(mirror.vpc_id, Some(VpcId::try_new("vpc-9f2").unwrap()));
    assert_eq!(mirror.mirrored_from(), Some(sg("sg-0a1")));

    let requests = ec2.requests();
    assert_eq!(requests.len(), 2, "one request per page");
    for (request, token) in requests.iter().zip([None, Some("page-2")]) {
        assert_eq!(param(request, "Action"), Some("DescribeSecurityGroups"));
        assert_eq!(param(request, "MaxResults"), Some("1000"));
        assert_eq!(param(request, "NextToken"), token);
        assert_eq!(param(request, "Filter.1.Name"), Some("group-name"));
        assert_eq!(param(request, "Filter.1.Value.1"), Some("web"));
        assert_eq!(param(request, "Filter.2.Name"), None);
    }
}

#[tokio::test]
async fn classic_link_instances_are_read_across_pages() {
    let link = |instance: &str, groups: &[&str]| {
        let groups: String = groups.iter().map(|g| format!("<item><groupId>{g}</groupId></item>")).collect();
        format!(
            "<item><instanceId>{instance}</instanceId><vpcId>vpc-9f2</vpcId><groupSet>{groups}</groupSet><tagSet/></item>"
        )
    };
    let first = link("i-0b3", &["sg-77c", "sg-77d"]);
    let second = link("i-0b4", &["sg-77c"]);
    let ec2 = Canned::start(move |p| {
        let (item, next) = match param(p, "NextToken") {
            None => (&first, "<nextToken>t2</nextToken>"),
            Some(_) => (&second, ""),
        };
        ok_xml("DescribeClassicLinkInstances", &format!("<instancesSet>{item}</instancesSet>{next}"))
    })
    .await;
    let filter = LinkFilter { vpc_ids: vec![VpcId::try_new("vpc-9f2").unwrap()], ..LinkFilter::default() };
    let links = ec2.client().await.describe_classic_link_instances(&filter).await.expect("describe links");
    let got: Vec<(InstanceId, usize)> = links.iter().map(|l| (l.instance_id.clone(), l.groups.len())).collect();
    assert_eq!(got, vec![(InstanceId::try_new("i-0b3").unwrap(), 2), (InstanceId::try_new("i-0b4").unwrap(), 1)]);
    let requests = ec2.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(param(&requests[1], "NextToken"), Some("t2"));
    assert_eq!(param(&requests[0], "Filter.1.Name"), Some("vpc-id"));
}

#[tokio::test]
async fn a_malformed_page_fails_the_whole_describe_and_names_the_field() {
    let ec2 = Canned::start(|p| match param(p, "NextToken") {
        None => groups_page(&[CLASSIC_WEB], Some("page-2")),
        Some(_) => groups_page(&[NO_GROUP_ID], None),
    })
    .await;
    let error = ec2.client().await.describe_security_groups(&GroupFilter::default()).await.expect_err("malformed");
    assert_eq!((error.code.as_str(), error.kind), (MALFORMED_RESPONSE, ErrorKind::Fatal));
    assert!(error.message.contains("SecurityGroups[].GroupId: missing"), "{error}");
}

#[tokio::test]
async fn ec2_error_documents_classify_by_code_and_bare_5xx_as_transient() {
    let ec2 = Canned::start(|p| match param(p, "GroupId") {
        Some("sg-1") => error_xml(503, "RequestLimitExceeded"),
        Some("sg-2") => error_xml(400, "InvalidGroup.NotFound"),
        Some("sg-3") => error_xml(400, "DependencyViolation"),
        Some("sg-4") => (503, "<html><body>Service Unavailable</body></html>".into()),
        _ => (200, "<not-ec2/>".into()),
    })
    .await;
    let client = ec2.client().await;
    let cases = [
        ("sg-1", "RequestLimitExceeded", ErrorKind::Throttled),
        ("sg-2", "InvalidGroup.NotFound", ErrorKind::NotFound),
        ("sg-3", "DependencyViolation", ErrorKind::Dependency),
        ("sg-4", "HttpStatus503", ErrorKind::Transient),
    ];
    for (group, code, kind) in cases {
        let error = client.delete_security_group(&sg(group)).await.expect_err(code);
        assert_eq!((error.code.as_str(), error.kind), (code, kind), "{error}");
    }
    let error = client.describe_security_groups(&GroupFilter::default()).await.expect_err("not EC2's XML");
    assert_eq!((error.code.as_str(), error.kind), (MALFORMED_RESPONSE, ErrorKind::Fatal), "{error}");
    assert_eq!(ec2.requests().len(), 5, "exactly one attempt each: the SDK does not retry");
}
