//! Which upstream addresses the proxy may connect to. Without `[proxy]
//! allow_private_networks`, only globally reachable unicast addresses: anything else
//! (loopback, private ranges, CGNAT, link-local, unique-local, multicast, documentation,
//! and IPv4 addresses carried in IPv6 forms) would let anyone holding a mailbox id use the
//! gateway to reach its own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a globally reachable unicast address (the IANA special-purpose
/// registries, conservatively: a range that is not plainly global is refused).
pub fn is_global(ip: IpAddr) -> bool {
    // `::ffff:a.b.c.d` is judged (and connected to) as the IPv4 address it is.
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !special
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_global_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return is_global_v4(embedded(s[1], s[2]));
    }
    // Only 2000::/3 is global unicast: this leaves out ::, ::1, IPv4-compatible,
    // 64:ff9b:1::/48, 100::/64, ULA fc00::/7, link-local fe80::/10, multicast ff00::/8.
    let global_unicast = s[0] & 0xe000 == 0x2000;
    // 2001::/23 (IETF protocol assignments, Teredo) and 2001:db8::/32, 3fff::/20
    // (documentation).
    let special = match s[0] {
        0x2001 => s[1] < 0x0200 || s[1] == 0x0db8,
        0x3fff => s[1] < 0x1000,
        _ => false,
    };
    global_unicast && !special
}

/// Whether a host that is not an IP literal is a numeric spelling of one (`127.1`,
/// `2130706433`, `0x7f.1`, `0177.0.0.1`): the system resolver reads those as addresses.
/// No real host name ends in a numeric label (top-level domains are never numeric).
pub fn is_numeric_spelling(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(ip: &str) -> bool {
        is_global(ip.parse().unwrap())
    }

    #[test]
    fn non_global_addresses_are_recognised() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ];
        for ip in refused {
            assert!(!global(ip), "{ip} must be refused");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.0.3.1",
            "193.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700::1111",
            "2a00:1450::1",
        ];
        for ip in allowed {
            assert!(global(ip), "{ip} is global");
        }
    }

    #[test]
    fn numeric_spellings_are_recognised() {
        for host in [
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0177.0.0.1",
            "10.0.0.1.",
            "example.0XFF",
        ] {
            assert!(is_numeric_spelling(host), "{host}");
        }
        for host in ["mail.example.com", "1.example.net", "mx1", "x0x7f"] {
            assert!(!is_numeric_spelling(host), "{host}");
        }
    }
}
