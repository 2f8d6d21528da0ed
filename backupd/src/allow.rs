//! `allow_from`: the addresses and networks a peer may connect from, checked when a
//! connection is accepted (before the greeting, before it takes a connection slot).
//!
//! std parses the addresses; a `/prefix` match is a mask over the address's bits, so no
//! crate is needed for it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address (`192.0.2.7`, `::1`) or a network in CIDR notation (`192.0.2.0/24`,
/// `2001:db8::/32`). Bits of the address past the prefix are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an IP address or network (192.0.2.7, 192.0.2.0/24, 2001:db8::/32), found {found:?}: {why}")]
pub struct IpNetError {
    /// The text as given.
    pub found: String,
    /// What is wrong with it.
    pub why: String,
}

impl IpNet {
    /// The network of `addr` with `prefix` bits; `None` when the prefix is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    /// The address as written.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4 peer that reached an IPv6 socket shows as
    /// `::ffff:a.b.c.d`; it is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr.to_canonical(), ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(net.into(), 128, self.prefix) == masked(ip.into(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The first `prefix` bits of an address of `bits` bits, as an integer.
fn masked(addr: u128, bits: u32, prefix: u8) -> u128 {
    match bits - u32::from(prefix) {
        shift if shift >= 128 => 0,
        shift => addr >> shift,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The loopback networks, `127.0.0.0/8` and `::1`: the default when backupd listens on a
/// loopback address.
pub fn loopback() -> Vec<IpNet> {
    vec![
        IpNet {
            addr: IpAddr::from([127, 0, 0, 0]),
            prefix: 8,
        },
        IpNet {
            addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// Whether any of `nets` contains `ip`.
pub fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let err = |why: String| IpNetError {
            found: s.to_string(),
            why,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|e| err(format!("{e}")))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            // Digits only: u8's parser would also take "+8".
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| err(format!("the prefix must be 0 to {max}")))?,
            Some(_) => return Err(err(format!("the prefix must be a number, 0 to {max}"))),
        };
        Ok(IpNet { addr, prefix })
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_by_bits() {
        let n = net("192.0.2.0/24");
        assert!(n.contains(ip("192.0.2.0")) && n.contains(ip("192.0.2.255")));
        assert!(!n.contains(ip("192.0.3.1")) && !n.contains(ip("192.0.1.255")));
        // Host bits past the prefix are ignored, as in `ip route`.
        assert!(net("10.1.2.3/8").contains(ip("10.200.0.1")));
        assert!(net("172.16.0.0/12").contains(ip("172.31.255.255")));
        assert!(!net("172.16.0.0/12").contains(ip("172.32.0.0")));
        let one = net("198.51.100.7");
        assert_eq!(one.prefix(), 32);
        assert!(one.contains(ip("198.51.100.7")) && !one.contains(ip("198.51.100.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")), "no family crossing");
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("::1").contains(ip("::1")) && !net("::1").contains(ip("::2")));
        assert!(
            net("fe80::/10").contains(ip("febf::1")) && !net("fe80::/10").contains(ip("fec0::"))
        );
    }

    #[test]
    fn ipv4_peers_on_an_ipv6_socket_match_ipv4_networks() {
        assert!(net("192.0.2.0/24").contains(ip("::ffff:192.0.2.9")));
        assert!(allowed(&loopback(), ip("::ffff:127.0.0.1")));
        assert!(allowed(&loopback(), ip("127.3.4.5")));
        assert!(allowed(&loopback(), ip("::1")));
        assert!(!allowed(&loopback(), ip("192.0.2.1")));
        assert!(!allowed(&[], ip("127.0.0.1")));
    }

    #[test]
    fn parse_errors_say_what_was_expected_and_found() {
        for (text, why) in [
            ("192.0.2.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("192.0.2.0/", "a number"),
            ("192.0.2.0/+8", "a number"),
            ("192.0.2.0/x", "a number"),
            ("example.com", "invalid IP address"),
            ("", "invalid IP address"),
        ] {
            let e = text.parse::<IpNet>().unwrap_err().to_string();
            assert!(
                e.starts_with("expected an IP address or network")
                    && e.contains(&format!("{text:?}"))
                    && e.contains(why),
                "{text}: {e}"
            );
        }
        assert_eq!(net("192.0.2.0/24").to_string(), "192.0.2.0/24");
        assert_eq!(net("::1").to_string(), "::1");
        assert_eq!(net("::1/128").to_string(), "::1");
    }
}
