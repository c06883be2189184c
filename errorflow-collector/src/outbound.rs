//! Outgoing HTTP: the one policy for every request the collector makes
//! (alert webhooks, model APIs, Kestra, and any later integration).
//!
//! Two kinds of destination, two clients:
//!
//! - **Webhooks** ([`webhook_client`]): URLs that dashboard users and token
//!   holders choose. Redirects are never followed (a 307 would re-send the
//!   POST, body and all, wherever the receiver points), no `Referer` is
//!   sent, no proxy from the environment is used, and every address the
//!   host name resolves to is checked *when the connection is made*, by the
//!   client's own DNS resolver ([`PolicyResolver`]): the address that is
//!   checked is the address that is connected to, so a name that resolves
//!   to a public address when the URL is saved and to `127.0.0.1` later
//!   (DNS rebinding) is still refused. URLs with a literal address (which
//!   the resolver never sees: `http://2130706433/`, `http://0x7f.1/`,
//!   `http://[::ffff:127.0.0.1]/`; the URL parser turns every such form into
//!   the address) are checked by [`check_url`] before each request and when
//!   the URL is saved.
//! - **Services** ([`service_client`]): model APIs, Kestra, GitHub — URLs
//!   that only the operator configures, so internal addresses are allowed.
//!   Redirects are followed only within the same origin (scheme, host and
//!   port), so that a key sent in a header of its own (Gemini's
//!   `x-goog-api-key`, Anthropic's `x-api-key`, which `reqwest` does not
//!   know to strip) never reaches another origin; no `Referer`.
//!
//! The addresses refused to webhooks ([`is_internal`]): loopback,
//! unspecified (`0.0.0.0/8`, `::`), private (RFC 1918), shared (CGNAT
//! `100.64.0.0/10`, where Alibaba's metadata service lives), link-local
//! (`169.254.0.0/16`, with the cloud metadata address `169.254.169.254`;
//! `fe80::/10`), unique-local (`fc00::/7`, with AWS's `fd00:ec2::254`),
//! site-local, multicast, broadcast and reserved ranges, and IPv6 forms
//! that embed an IPv4 address (mapped, compatible, NAT64) by the address
//! they embed. The operator lets chosen hosts or networks through with
//! `--allow-webhook-hosts` ([`AddressPolicy::parse`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use reqwest::Url;

/// The `User-Agent` of every outgoing request.
pub const USER_AGENT: &str = concat!("errorflow-collector/", env!("CARGO_PKG_VERSION"));

/// Redirects a service client follows at most (all within one origin).
const MAX_REDIRECTS: usize = 5;

/// Which internal destinations webhooks may reach after all: the host
/// names (exactly those, not their subdomains) and networks the operator
/// listed. Empty by default: every internal address is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AddressPolicy {
    /// Parses `--allow-webhook-hosts` entries: an address (`127.0.0.1`,
    /// `::1`), a network (`10.0.0.0/8`, `fd00::/8`) or a host name
    /// (`chat.internal`, which then may resolve to any address).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AddressPolicy, String> {
        let mut policy = AddressPolicy::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                policy.hosts.push(normalise_host(entry));
            } else {
                return Err(format!(
                    "{entry:?} is neither an address, a network (10.0.0.0/8) nor a host name"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether this host name was listed: every address it resolves to is allowed.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.hosts.contains(&host)
    }

    /// Whether a webhook may connect to `ip`: a public address, or one the
    /// operator listed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.nets.iter().any(|n| n.contains(&canonical(ip)))
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').filter(|l| !l.is_empty()).all(|label| {
            label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv6 address that embeds an IPv4 one (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (deprecated, but still routed by some stacks), other
    // than `::` and `::1` themselves.
    if s[..6] == [0; 6] && !matches!(u32::from(tail), 0 | 1) {
        return Some(tail);
    }
    // NAT64's well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

/// Whether `ip` belongs to the collector's own host or network, or is no
/// single host's address at all: never a webhook's destination by default.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_unspecified()
                || a == 0 // "this network", 0.0.0.0/8
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || v4.is_multicast()
                || v4.is_broadcast()
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        }
    }
}

/// Checks a webhook URL against the policy before any request: `http` or
/// `https`, and a host that is not an internal address written literally,
/// nor `localhost` (which resolves to loopback without asking DNS). A
/// host name is checked again, on each address it resolves to, when the
/// connection is made. The error says why without repeating the URL (it
/// may hold a secret).
pub fn check_url(url: &Url, policy: &AddressPolicy) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the webhook URL must be http or https, not {:?}",
            url.scheme()
        ));
    }
    let refused = |what: &str| {
        Err(format!(
            "the webhook URL points at {what}, which webhooks may not reach \
             (the operator can allow it with --allow-webhook-hosts)"
        ))
    };
    match url.host() {
        None => Err("the webhook URL has no host".into()),
        Some(url::Host::Ipv4(v4)) if !policy.allows_ip(IpAddr::V4(v4)) => {
            refused(&format!("the internal address {v4}"))
        }
        Some(url::Host::Ipv6(v6)) if !policy.allows_ip(IpAddr::V6(v6)) => {
            refused(&format!("the internal address {v6}"))
        }
        Some(url::Host::Domain(name)) => {
            let name = normalise_host(name);
            let local = name == "localhost" || name.ends_with(".localhost");
            if local && !policy.allows_host(&name) && !policy.allows_ip(Ipv4Addr::LOCALHOST.into())
            {
                return refused("localhost");
            }
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// The DNS resolver of the webhook client: resolves with the system's
/// resolver (off the async workers) and keeps only the addresses the
/// policy allows, so the connection can only go to one of those.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> PolicyResolver {
        PolicyResolver { policy }
    }
}

/// Why a webhook's host could not be connected to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)??
                    .collect();
            let allowed: Vec<SocketAddr> = if policy.allows_host(&host) {
                addrs
            } else {
                addrs
                    .into_iter()
                    .filter(|a| policy.allows_ip(a.ip()))
                    .collect()
            };
            if allowed.is_empty() {
                return Err(Box::new(Refused(format!(
                    "{host} resolves to no address webhooks may reach (internal addresses need \
                     --allow-webhook-hosts)"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client for webhooks: no redirects, no `Referer`, no proxy, and the
/// address policy at connect time (see the module documentation). Callers
/// also run [`check_url`] before each request, for literal addresses.
pub fn webhook_client(
    timeout: Duration,
    policy: Arc<AddressPolicy>,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .referer(false)
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver::new(policy)))
        .build()
}

/// A client builder for operator-configured services: redirects only
/// within one origin, no `Referer`. Callers add their timeouts and build.
pub fn service_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .referer(false)
        .redirect(same_origin_redirects())
}

/// Follows a redirect only to the origin of the request's first URL.
pub fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same || attempt.previous().len() > MAX_REDIRECTS {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        let strict = AddressPolicy::default();
        for u in [
            "http://127.0.0.1:5432/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::1]:22/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://10.0.0.5:8080/hook",
            "http://172.16.3.4/",
            "http://192.168.1.1/",
            "http://100.100.100.200/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[ff02::1]/",
            "http://localhost:8000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(check_url(&url(u), &strict).is_err(), "{u}");
        }
        for u in [
            "https://hooks.slack.com/services/T0/B0/x",
            "http://93.184.215.14/",
            "http://[2606:4700::1111]/",
            "http://8.8.8.8:8080/",
        ] {
            assert_eq!(check_url(&url(u), &strict), Ok(()), "{u}");
        }
    }

    #[test]
    fn the_operator_allows_addresses_networks_and_names() {
        let policy =
            AddressPolicy::parse(&["127.0.0.1", "10.0.0.0/8", "[::1]", "Chat.Internal."]).unwrap();
        assert_eq!(check_url(&url("http://127.0.0.1:9/"), &policy), Ok(()));
        assert_eq!(check_url(&url("http://2130706433/"), &policy), Ok(()));
        assert_eq!(
            check_url(&url("http://[::ffff:127.0.0.1]/"), &policy),
            Ok(())
        );
        assert_eq!(check_url(&url("http://localhost/"), &policy), Ok(()));
        assert_eq!(check_url(&url("http://10.9.8.7/"), &policy), Ok(()));
        assert_eq!(check_url(&url("http://[::1]/"), &policy), Ok(()));
        assert!(check_url(&url("http://192.168.0.1/"), &policy).is_err());
        assert!(check_url(&url("http://169.254.169.254/"), &policy).is_err());
        assert!(policy.allows_host("chat.internal"));
        assert!(!policy.allows_host("other.internal"));
        assert!(AddressPolicy::parse(&["not a host!"]).is_err());
    }

    /// A model API that redirects to another origin gets the key, but the
    /// other origin gets neither the key nor the prompt: the redirect is
    /// not followed. (reqwest strips `Authorization` on such a redirect,
    /// but not Gemini's `x-goog-api-key`.)
    #[tokio::test]
    async fn a_model_api_key_never_crosses_origins() {
        use crate::triage::digest::tests::{group, now, stats};
        use crate::triage::llm::{LlmAnalyst, LlmOptions, Protocol};
        use crate::triage::testing::{serve, Reply};
        use crate::triage::{digest, Analyst, Secret};
        let elsewhere = serve(vec![Reply::json(200, serde_json::json!({}))]).await;
        let to = format!("{}/v1beta/models/m:generateContent", elsewhere.base);
        let api = serve(vec![
            Reply::json(307, serde_json::json!({})).with_header("location", &to)
        ])
        .await;
        let mut options = LlmOptions::new(
            Protocol::Gemini,
            &api.base,
            "m",
            Some(Secret::new("sk-very-secret")),
        );
        options.max_retries = 0;
        let analyst = LlmAnalyst::new(options).unwrap();
        let digest = digest::build(&group(), &stats(1, &[2], &[]), &[], &[], now());
        assert!(analyst.analyse(&digest).await.is_err());
        let reqs = api.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].header("x-goog-api-key"), Some("sk-very-secret"));
        assert!(
            elsewhere.requests().is_empty(),
            "the key and the prompt went to another origin"
        );
    }

    /// Within the API's origin, a redirect is followed as before.
    #[tokio::test]
    async fn same_origin_redirects_are_followed() {
        use crate::triage::testing::{serve, Reply};
        let server = serve(vec![
            Reply::json(307, serde_json::json!({})).with_header("location", "/moved"),
            Reply::json(200, serde_json::json!({"ok": true})),
        ])
        .await;
        let client = service_client().build().unwrap();
        let r = client
            .post(format!("{}/first", server.base))
            .header("x-goog-api-key", "k")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].path, "/moved");
        assert_eq!(reqs[1].header("referer"), None);
    }

    #[test]
    fn the_reason_never_repeats_the_url() {
        let err = check_url(
            &url("http://127.0.0.1/hooks/secret-token"),
            &AddressPolicy::default(),
        )
        .unwrap_err();
        assert!(!err.contains("secret-token"), "{err}");
        assert!(err.contains("--allow-webhook-hosts"), "{err}");
    }
}
