//! Which peers a TCP endpoint talks to: the `allow` list of an `[[equipment]]` or
//! `[[simulator]]` (addresses and CIDR blocks, IPv4 and IPv6), and the bounded-rate log of the
//! connections it refuses.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::link::{RepeatedWarning, with_repeats};

/// One entry of an allow list: an address and how many leading bits of it must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` is in this block. An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, how a
    /// dual-stack listener reports IPv4 peers) is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit value.
fn masked(value: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        value >> (width - prefix)
    }
}

impl FromStr for Net {
    type Err = String;

    /// `10.1.2.3`, `10.0.0.0/8`, `::1`, `fd00::/8`. Host bits after the prefix are allowed
    /// (`127.0.0.1/8` is `127.0.0.0/8`). Names are not: the list is checked without DNS.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("'{text}' is not an IP address or CIDR block (e.g. 10.1.2.3, 10.0.0.0/8, fd00::/8; host names are not accepted)")
        })?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "'{text}': the prefix length must be a number from 0 to {width}"
                    ));
                }
            },
        };
        Ok(Net { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == width {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// The peers an endpoint accepts connections from and connects to. The default lets every
/// peer in; a list lets in only the addresses in one of its blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Option<Vec<Net>>,
}

impl Allowlist {
    /// Every peer.
    pub fn everyone() -> Self {
        Allowlist { nets: None }
    }

    /// Only the peers in `nets` (none at all when it is empty).
    pub fn only(nets: Vec<Net>) -> Self {
        Allowlist { nets: Some(nets) }
    }

    /// Parses each entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<Vec<Net>, _>>()
            .map(Allowlist::only)
    }

    /// Whether a list restricts the peers at all.
    pub fn is_restricted(&self) -> bool {
        self.nets.is_some()
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        match &self.nets {
            None => true,
            Some(nets) => nets.iter().any(|n| n.contains(ip)),
        }
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nets {
            None => f.write_str("any address"),
            Some(nets) => {
                f.write_str("[")?;
                for (i, n) in nets.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Most addresses whose refusals are counted separately; past that the oldest quiet ones are
/// forgotten, so a scan of many addresses cannot grow this without bound.
const MAX_TRACKED: usize = 1024;

/// Refused peers, logged at most once per address per period with a count of the others.
pub struct Refusals {
    every: Duration,
    by_peer: HashMap<IpAddr, RepeatedWarning>,
}

impl Refusals {
    pub fn new(every: Duration) -> Self {
        Refusals {
            every,
            by_peer: HashMap::new(),
        }
    }

    /// Records that `text` happened for `ip` at `now`; returns the line to log, if any.
    pub fn note(&mut self, ip: IpAddr, text: &str, now: Instant) -> Option<String> {
        let ip = ip.to_canonical();
        if self.by_peer.len() >= MAX_TRACKED && !self.by_peer.contains_key(&ip) {
            let every = self.every;
            self.by_peer.retain(|_, w| !w.quiet_since(now, every));
            if self.by_peer.len() >= MAX_TRACKED {
                self.by_peer.clear();
            }
        }
        let every = self.every;
        self.by_peer
            .entry(ip)
            .or_insert_with(|| RepeatedWarning::new(every))
            .note(text, now)
            .map(|held_back| with_repeats(text, held_back))
    }
}

/// The text logged for a peer the allow list refuses.
pub fn refused_text(ip: IpAddr, allow: &Allowlist) -> String {
    format!(
        "connection from {} refused: not in the allow list {allow}",
        ip.to_canonical()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_blocks() {
        let a = Allowlist::parse(&["10.1.2.3", "127.0.0.1/8", "fd00::/8", "::1"]).unwrap();
        assert!(a.permits(ip("10.1.2.3")));
        assert!(!a.permits(ip("10.1.2.4")));
        assert!(a.permits(ip("127.200.0.1")));
        assert!(a.permits(ip("::ffff:127.0.0.1")));
        assert!(a.permits(ip("fdab::1")));
        assert!(a.permits(ip("::1")));
        assert!(!a.permits(ip("::2")));
        assert!(!a.permits(ip("128.0.0.1")));
        let all = Allowlist::parse(&["0.0.0.0/0"]).unwrap();
        assert!(all.permits(ip("1.2.3.4")));
        assert!(!all.permits(ip("::2")));
        assert!(Allowlist::everyone().permits(ip("::2")));
        assert!(!Allowlist::only(vec![]).permits(ip("127.0.0.1")));
        assert_eq!(a.to_string(), "[10.1.2.3, 127.0.0.1/8, fd00::/8, ::1]");
    }

    #[test]
    fn bad_entries() {
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "10.0.0.0/8/8",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Net>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_address() {
        let t0 = Instant::now();
        let mut r = Refusals::new(Duration::from_secs(60));
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(r.note(a, "refused a", t0).is_some());
        assert!(r.note(b, "refused b", t0).is_some());
        for i in 1..=3 {
            assert!(
                r.note(a, "refused a", t0 + Duration::from_secs(i))
                    .is_none()
            );
            assert!(
                r.note(b, "refused b", t0 + Duration::from_secs(i))
                    .is_none()
            );
        }
        let line = r
            .note(a, "refused a", t0 + Duration::from_secs(61))
            .unwrap();
        assert!(line.contains("3 more"), "{line}");
    }
}
