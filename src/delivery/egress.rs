//! Which addresses a callback may reach. Checked after DNS resolution, on the very addresses the
//! connection then uses, so a rebinding DNS server cannot slip a private address past the check.

use crate::domain::{CallbackUrl, Invalid};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The operator's rule for outbound callbacks.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// `--allow-private-network`: every address may be called.
    pub allow_private_network: bool,
    /// `allowed_networks`: non-public networks that may be called all the same.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Fixed answers for host names, consulted before DNS (tests use it to make a name resolve
    /// to a private address without touching `/etc/hosts`).
    pub resolve_overrides: Vec<(String, IpAddr)>,
}

impl EgressPolicy {
    /// Whether a callback may connect to this address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow_private_network || is_public(ip) {
            return true;
        }
        let ip = canonical(ip);
        self.allowed_networks.iter().any(|net| net.contains(&ip))
    }

    /// The save-time check of a URL: a host that is a literal non-public address (in any
    /// spelling the URL parser accepts: decimal, octal, IPv4-mapped IPv6…) or `localhost` is
    /// refused unless the operator allowed it. Names that resolve to private addresses are
    /// caught when the callback is sent.
    pub fn check_url(&self, url: &CallbackUrl) -> Result<(), Invalid> {
        let parsed = url.to_url();
        let refused = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => (!self.allows(IpAddr::V4(ip))).then(|| ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (!self.allows(IpAddr::V6(ip))).then(|| ip.to_string()),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let local = name == "localhost" || name.ends_with(".localhost");
                (local && !self.allows(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))).then_some(name)
            }
            None => None,
        };
        match refused {
            Some(host) => Err(Invalid::new(format!(
                "{host} is a private address; Herald refuses private targets unless the operator starts it with --allow-private-network or lists the network in allowed_networks"
            ))),
            None => Ok(()),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an address is publicly routable. Everything else (loopback, private, link-local,
/// CGNAT, multicast, documentation and reserved ranges, and the IPv6 forms that embed such an
/// IPv4 address) is refused by default.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let private = a == 0                                   // "this network", 0.0.0.0
        || a == 10                                         // RFC 1918
        || a == 127                                        // loopback
        || (a == 100 && (64..128).contains(&b))            // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254)                          // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))             // RFC 1918
        || (a == 192 && b == 0 && c == 0)                  // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                  // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                // 6to4 relay anycast
        || (a == 192 && b == 168)                          // RFC 1918
        || (a == 198 && (18..20).contains(&b))             // benchmarking
        || (a == 198 && b == 51 && c == 100)               // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !private
}

/// The IPv4 address in two segments of an IPv6 address.
fn v4_of(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // The forms that carry an IPv4 address reach it (through a translator or a tunnel): judge
    // the embedded address as if it were the one called.
    let last = v4_of(seg[6], seg[7]);
    // IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d (RFC 6145).
    if seg[..4] == [0, 0, 0, 0]
        && ((seg[4] == 0 && (seg[5] == 0xffff || seg[5] == 0)) || (seg[4] == 0xffff && seg[5] == 0))
    {
        if seg[4] == 0 && seg[5] == 0 && seg[6] == 0 && seg[7] <= 1 {
            return false; // :: and ::1
        }
        return is_public_v4(last);
    }
    // NAT64's well-known prefix 64:ff9b::/96 (RFC 6052).
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return is_public_v4(last);
    }
    // Local-use NAT64 64:ff9b:1::/48 (RFC 8215) is never globally reachable, whatever it embeds.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return false;
    }
    // 6to4 2002:a.b.c.d::/48 (RFC 3056).
    if seg[0] == 0x2002 {
        return is_public_v4(v4_of(seg[1], seg[2]));
    }
    // Teredo 2001:0::/32 (RFC 4380): the server's address, and the client's with its bits
    // inverted.
    if seg[0] == 0x2001 && seg[1] == 0 {
        return is_public_v4(v4_of(seg[2], seg[3])) && is_public_v4(v4_of(!seg[6], !seg[7]));
    }
    let private = (seg[0] & 0xfe00) == 0xfc00     // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80            // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0            // site-local (deprecated) fec0::/10
        || (seg[0] & 0xff00) == 0xff00            // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]; // discard-only 100::/64
    !private
}

/// The callback was refused because its host resolves only to addresses the policy forbids.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused to call {host}: it resolves to {addr}, which is not a public address (start Herald with --allow-private-network to allow private targets)"
)]
pub struct PrivateAddressRefused {
    pub host: String,
    pub addr: IpAddr,
}

/// DNS resolution failed.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}: {reason}")]
pub struct DnsFailed {
    pub host: String,
    pub reason: String,
}

/// A resolver for reqwest that drops forbidden addresses before any connection is tried.
pub(crate) struct GuardedResolver {
    pub policy: Arc<EgressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let overridden: Vec<SocketAddr> = policy
                .resolve_overrides
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(&host))
                .map(|(_, ip)| SocketAddr::new(*ip, 0))
                .collect();
            let found: Vec<SocketAddr> = if overridden.is_empty() {
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| DnsFailed {
                        host: host.clone(),
                        reason: e.to_string(),
                    })?
                    .collect()
            } else {
                overridden
            };
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(first)) => Err(PrivateAddressRefused {
                    host,
                    addr: first.ip(),
                }
                .into()),
                (true, None) => Err(DnsFailed {
                    host,
                    reason: "no addresses".to_owned(),
                }
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().unwrap())
    }

    #[test]
    fn private_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            // IPv6 forms that carry a private IPv4 address.
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
            "2001:0:7f00:1::",
            "2001:0:808:808::80ff:fffe",
        ] {
            assert!(!public(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "::ffff:0:808:808",
            "2002:808:808::1",
            "2001:0:808:808::f7f7:f7f7",
        ] {
            assert!(public(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn policy_can_allow_everything_or_some_networks() {
        let all = EgressPolicy {
            allow_private_network: true,
            ..Default::default()
        };
        assert!(all.allows("127.0.0.1".parse().unwrap()));
        assert!(!EgressPolicy::default().allows("127.0.0.1".parse().unwrap()));
        let some = EgressPolicy {
            allowed_networks: vec!["10.20.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        assert!(some.allows("10.20.3.4".parse().unwrap()));
        assert!(some.allows("::ffff:10.20.3.4".parse().unwrap()));
        assert!(!some.allows("10.21.0.1".parse().unwrap()));
    }

    #[test]
    fn literal_private_hosts_are_refused_at_save_time_in_every_spelling() {
        let policy = EgressPolicy::default();
        for text in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[2001:0:7f00:1::]/",
            "http://[::1]:8080/",
            "http://localhost:9000/",
            "http://api.localhost/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
        ] {
            let err = policy
                .check_url(&CallbackUrl::parse(text).unwrap())
                .unwrap_err();
            assert!(err.0.contains("--allow-private-network"), "{text}: {err}");
        }
        for text in [
            "https://example.com/",
            "http://8.8.8.8/",
            "http://internal.example/",
        ] {
            assert!(
                policy.check_url(&CallbackUrl::parse(text).unwrap()).is_ok(),
                "{text}"
            );
        }
        let open = EgressPolicy {
            allow_private_network: true,
            ..Default::default()
        };
        assert!(
            open.check_url(&CallbackUrl::parse("http://127.0.0.1/").unwrap())
                .is_ok()
        );
    }
}
