//! Which addresses a tunnel never connects to, whatever the allow-list says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The class of an address the proxy refuses to connect to, or `None` for an address it may
/// use. Refused: IPv4 `0.0.0.0/8` (this network), `127.0.0.0/8` (loopback), `169.254.0.0/16`
/// (link-local: instance metadata at 169.254.169.254, ECS credentials at 169.254.170.2 and
/// 169.254.170.23), `10/8`, `172.16/12`, `192.168/16` (private: the VPC's databases and
/// services), `100.64/10` (shared address space), `192.0.0.0/24` (IETF protocol assignments),
/// `224/4` (multicast), `240/4` with the broadcast address (reserved); IPv6 `::` (unspecified),
/// `::1` (loopback), `fe80::/10` (link-local), `fec0::/10` (site-local), `fc00::/7` (unique
/// local, AWS's `fd00:ec2::254` among them), `ff00::/8` (multicast); IPv4-mapped and
/// IPv4-compatible addresses (`::ffff:a.b.c.d`, `::a.b.c.d`) and NAT64 `64:ff9b::/96` are
/// judged by the IPv4 address they carry.
///
/// Not refused: every public address, and `198.18.0.0/15` (benchmarking), which the egress tests
/// put on a private loopback to stand for "a public host".
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Some("this network"),
        (127, _, _) => Some("loopback"),
        (169, 254, _) => Some("link-local"),
        (10, _, _) => Some("private"),
        (172, 16..=31, _) => Some("private"),
        (192, 168, _) => Some("private"),
        (100, 64..=127, _) => Some("shared address space"),
        (192, 0, 0) => Some("IETF protocol assignments"),
        (224..=239, _, _) => Some("multicast"),
        (240..=255, _, _) => Some("reserved"),
        _ => None,
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4);
    }
    let first = ip.segments()[0];
    match first {
        0xfe80..=0xfebf => Some("link-local"),
        0xfec0..=0xfeff => Some("site-local"),
        0xfc00..=0xfdff => Some("unique local"),
        0xff00..=0xffff => Some("multicast"),
        _ => None,
    }
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible
/// (`::/96`, deprecated but still routed by some stacks) and NAT64 (`64:ff9b::/96`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        _ => None,
    }
}

/// The address as compared with the worker's own sockets: an IPv4-mapped IPv6 address as its
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `addr` is one of the worker's own sockets in `own`; an unspecified address there
/// (`0.0.0.0:P`, `[::]:P`, a socket listening on every interface) matches port `P` on every
/// address.
pub(super) fn is_own(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = canonical(addr.ip());
    own.iter()
        .any(|o| o.port() == addr.port() && (o.ip().is_unspecified() || canonical(o.ip()) == ip))
}

/// The address a tunnel uses: the first of `addrs` that is neither in a refused class nor one of
/// the worker's own sockets; else the first refused one with its class (`None` when `addrs` is
/// empty).
pub(super) fn pick(addrs: &[SocketAddr], own: &[SocketAddr]) -> Result<SocketAddr, Option<(IpAddr, &'static str)>> {
    let mut first_refused = None;
    for a in addrs {
        let class = refused_class(a.ip()).or_else(|| is_own(*a, own).then_some("the worker's own socket"));
        match class {
            None => return Ok(*a),
            Some(c) => {
                first_refused.get_or_insert((a.ip(), c));
            }
        }
    }
    Err(first_refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        refused_class(s.parse().expect("an address"))
    }

    #[test]
    fn internal_ipv4_classes_are_refused() {
        for (ip, want) in [
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "link-local"),
            ("169.254.170.2", "link-local"),
            ("169.254.170.23", "link-local"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space"),
            ("100.127.255.255", "shared address space"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_and_the_benchmarking_range_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "223.255.255.255",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_classes_and_embedded_ipv4_are_refused() {
        for (ip, want) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("::2", "this network"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
        for ip in [
            "2606:4700::6810:84e5",
            "2a00:1450:4001:80b::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_first_usable_address_is_picked_and_own_sockets_are_refused() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("a socket address");
        let own = [sa("203.0.113.7:9100"), sa("0.0.0.0:9200")];
        assert_eq!(
            pick(&[sa("127.0.0.1:443"), sa("1.1.1.1:443")], &own),
            Ok(sa("1.1.1.1:443"))
        );
        assert_eq!(
            pick(&[sa("203.0.113.7:9100")], &own),
            Err(Some(("203.0.113.7".parse().expect("ip"), "the worker's own socket")))
        );
        assert_eq!(
            pick(&[sa("[::ffff:203.0.113.7]:9100")], &own).map_err(|e| e.map(|e| e.1)),
            Err(Some("the worker's own socket"))
        );
        assert!(
            pick(&[sa("198.51.100.1:9200")], &own).is_err(),
            "an unspecified own socket matches its port everywhere"
        );
        assert_eq!(pick(&[sa("203.0.113.7:443")], &own), Ok(sa("203.0.113.7:443")));
        assert_eq!(
            pick(&[sa("10.0.0.1:443"), sa("[::1]:443")], &own),
            Err(Some(("10.0.0.1".parse().expect("ip"), "private")))
        );
        assert_eq!(pick(&[], &own), Err(None));
    }
}
