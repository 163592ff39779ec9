//! Who the client is behind a reverse proxy: `X-Forwarded-For`, believed only from proxies the
//! operator named (`--trusted-proxy`). Without that, anyone could claim any address and walk
//! around the per-address login budgets; with a proxy and no trust, every client would share
//! the proxy's one address and one budget.

use ipnet::IpNet;
use std::net::IpAddr;

/// The client's address: the connection's peer, unless the peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` (read from the right, the end each proxy appends to)
/// that is not itself a trusted proxy. A header that cannot be read gives the peer.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&canonical(peer)) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut nearest = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage from a client: nothing beyond it can be believed.
            return nearest;
        };
        let ip = canonical(ip);
        if !is_trusted(&ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// IPv4 addresses mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports them)
/// are judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let peer = ip("203.0.113.9");
        assert_eq!(client_address(peer, Some("1.2.3.4"), &[]), peer);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(peer, Some("1.2.3.4"), &trusted),
            peer,
            "peer is not a proxy"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let proxy = ip("127.0.0.1");
        assert_eq!(
            client_address(proxy, Some("198.51.100.7"), &trusted),
            ip("198.51.100.7")
        );
        // A client that sends its own header cannot pick its address: the proxy appended the
        // real one on the right.
        assert_eq!(
            client_address(proxy, Some("6.6.6.6, 198.51.100.7"), &trusted),
            ip("198.51.100.7")
        );
        // Two proxies of ours in a row.
        assert_eq!(
            client_address(proxy, Some("198.51.100.7, 10.1.2.3"), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(client_address(proxy, None, &trusted), proxy);
        assert_eq!(
            client_address(proxy, Some("garbage, 10.1.2.3"), &trusted),
            ip("10.1.2.3"),
            "nothing past an unreadable hop is believed"
        );
        assert_eq!(
            client_address(
                ip("::ffff:127.0.0.1"),
                Some("[::1]:9, 2001:db8::5"),
                &trusted
            ),
            ip("2001:db8::5")
        );
    }
}
