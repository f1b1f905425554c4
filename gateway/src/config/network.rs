//! A tiny CIDR type for `smtp.allowed_networks`, so no extra crate is needed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IP network: an address with a prefix length (`192.0.2.0/24`, `2001:db8::/32`).
/// A plain address is a single-host network (`/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNetwork {
    address: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// The network address (host bits are always zero).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 peers (`::ffff:192.0.2.1`, as
    /// dual-stack sockets report them) are matched as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask_v4(self.prefix_len);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = prefix_mask_v6(self.prefix_len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn prefix_mask_v4(len: u8) -> u32 {
    // checked_shl guards len == 0, where a 32-bit shift would overflow.
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn prefix_mask_v6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let address: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                // Only plain digits: u8::from_str would also accept "+8".
                .filter(|&n| n <= max && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?,
        };
        let network = IpNetwork {
            address: mask(address, prefix_len),
            prefix_len,
        };
        // Host bits set is almost always a typo for a different network; say which one.
        if network.address != address {
            return Err(format!(
                "`{s}` has host bits set; did you mean `{network}`?"
            ));
        }
        Ok(network)
    }
}

fn mask(address: IpAddr, len: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & prefix_mask_v4(len)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & prefix_mask_v6(len)).into()),
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl TryFrom<String> for IpNetwork {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IpNetwork> for String {
    fn from(n: IpNetwork) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parses_networks_and_plain_addresses() {
        let n: IpNetwork = "192.0.2.0/24".parse().expect("valid");
        assert_eq!(n.prefix_len(), 24);
        assert!(n.contains(ip("192.0.2.200")));
        assert!(!n.contains(ip("192.0.3.1")));
        assert!(n.contains(ip("::ffff:192.0.2.7")));

        let host: IpNetwork = "10.1.2.3".parse().expect("valid");
        assert_eq!(host.to_string(), "10.1.2.3/32");
        assert!(host.contains(ip("10.1.2.3")));
        assert!(!host.contains(ip("10.1.2.4")));

        let v6: IpNetwork = "2001:db8::/32".parse().expect("valid");
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("192.0.2.1")));

        let all: IpNetwork = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("203.0.113.9")));
        let all6: IpNetwork = "::/0".parse().expect("valid");
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn rejects_bad_networks() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/8/8",
        ] {
            assert!(
                bad.parse::<IpNetwork>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        let err = "10.0.0.1/8".parse::<IpNetwork>().expect_err("host bits");
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }
}
