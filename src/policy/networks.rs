//! Client networks: CIDR blocks, and which address is the client when trusted proxies sit in
//! front of the gateway.

use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0-{max}"))?,
        };
        let cidr = Self { network, prefix };
        // `10.1.2.3/8` is almost always a typo for `10.0.0.0/8` or `10.1.2.3/32`.
        if cidr.masked(network) != network {
            return Err(format!(
                "\"{s}\" has host bits set; did you mean {}/{prefix}?",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }
}

/// A request's `X-Forwarded-For`, read once: the client it names and the part of the chain
/// trusted proxies vouch for. Without trusted proxies, or when the peer is not one, the client
/// is the peer and nothing of the header is kept. When the peer is a trusted proxy, the chain
/// is read from the right (the entry the nearest proxy appended), skipping trusted proxies;
/// the first other address is the client. An entry that is not an address (empty, garbage, or
/// in a header value that is not text) stops the walk: nothing left of it can be trusted, so
/// the client is unknown (and network rules refuse), and only the entries right of it are kept.
#[derive(Debug)]
pub struct ForwardedChain<'h> {
    pub client: Option<IpAddr>,
    peer: IpAddr,
    /// The vouched-for entries, client first.
    vouched: Vec<&'h str>,
}

impl<'h> ForwardedChain<'h> {
    pub fn read(peer: IpAddr, headers: &'h http::HeaderMap, trusted: &[Cidr]) -> Self {
        let mut chain = Self {
            client: Some(peer),
            peer,
            vouched: Vec::new(),
        };
        if !trusted.iter().any(|c| c.contains(peer)) {
            return chain;
        }
        let mut entries: Vec<&str> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            match v.to_str() {
                Ok(s) => entries.extend(s.split(',').map(str::trim)),
                // Not text: an entry that is not an address, where the value stood.
                Err(_) => entries.push(""),
            }
        }
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.parse::<IpAddr>() else {
                chain.client = None;
                break;
            };
            chain.client = Some(ip);
            chain.vouched.push(entry);
            if !trusted.iter().any(|c| c.contains(ip)) {
                break;
            }
        }
        // Every hop trusted: the leftmost is the best we know (already `client`).
        chain.vouched.reverse();
        chain
    }

    /// The `X-Forwarded-For` value to send upstream: the vouched-for part of the received
    /// chain (from the client rightwards), then the peer. Entries a client wrote itself are
    /// dropped, so a backend reading the header never sees a forged address.
    pub fn header(&self) -> String {
        let mut out =
            String::with_capacity(self.vouched.iter().map(|e| e.len() + 2).sum::<usize>() + 15);
        for e in &self.vouched {
            out.push_str(e);
            out.push_str(", ");
        }
        push_ip(&mut out, self.peer);
        out
    }
}

/// Appends an address as text, exactly as `Display` writes it. An IPv4 address (nearly every
/// peer) is written digit by digit: through the formatting machinery it costs about twenty
/// times as much, twice per forwarded request (`X-Forwarded-For`, `X-Real-IP`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_what_they_should() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!cidr("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!cidr("::/0").contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        assert!(Cidr::from_str("10.0.0.0/33").unwrap_err().contains("0-32"));
        assert!(Cidr::from_str("10.1.2.3/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(Cidr::from_str("example.com").is_err());
        assert!(Cidr::from_str("10.0.0.0/x").is_err());
    }

    fn xff(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn client_ip(peer: Option<IpAddr>, h: &http::HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
        ForwardedChain::read(peer?, h, trusted).client
    }

    fn forwarded_for(peer: IpAddr, h: &http::HeaderMap, trusted: &[Cidr]) -> String {
        ForwardedChain::read(peer, h, trusted).header()
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_for_the_client_and_the_chain_alike() {
        let trusted = [cidr("10.0.0.0/8")];
        for bad in [
            "198.51.100.7, , 10.0.0.5",
            "198.51.100.7, unknown, 10.0.0.5",
        ] {
            let h = xff(&[bad]);
            assert_eq!(client_ip(Some(ip("10.0.0.2")), &h, &trusted), None, "{bad}");
            // Only what is right of the bad entry is vouched for.
            assert_eq!(
                forwarded_for(ip("10.0.0.2"), &h, &trusted),
                "10.0.0.5, 10.0.0.2"
            );
        }
        let mut h = xff(&["198.51.100.7"]);
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff10.0.0.5").unwrap(),
        );
        assert_eq!(client_ip(Some(ip("10.0.0.2")), &h, &trusted), None);
        assert_eq!(forwarded_for(ip("10.0.0.2"), &h, &trusted), "10.0.0.2");
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted = [cidr("10.0.0.0/8")];
        // A direct client cannot claim another address.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &xff(&["127.0.0.1"]), &trusted),
            Some(ip("203.0.113.9"))
        );
        // Behind a trusted proxy the rightmost untrusted entry is the client; what the
        // client itself wrote further left is ignored.
        assert_eq!(
            client_ip(
                Some(ip("10.0.0.2")),
                &xff(&["127.0.0.1, 198.51.100.7", "10.0.0.5"]),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        // No trusted proxies configured: the header means nothing.
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), &xff(&["198.51.100.7"]), &[]),
            Some(ip("10.0.0.2"))
        );
        // Garbage in the chain: unknown, not guessed.
        assert_eq!(
            client_ip(
                Some(ip("10.0.0.2")),
                &xff(&["198.51.100.7, unknown"]),
                &trusted
            ),
            None
        );
        // What goes upstream: only the vouched-for part of the chain, then the peer.
        assert_eq!(
            forwarded_for(
                ip("10.0.0.2"),
                &xff(&["127.0.0.1, 198.51.100.7", "10.0.0.5"]),
                &trusted
            ),
            "198.51.100.7, 10.0.0.5, 10.0.0.2"
        );
        assert_eq!(
            forwarded_for(ip("203.0.113.9"), &xff(&["127.0.0.1"]), &trusted),
            "203.0.113.9"
        );
        // Only trusted hops: the leftmost.
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), &xff(&["10.0.0.9"]), &trusted),
            Some(ip("10.0.0.9"))
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut samples: Vec<IpAddr> = [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255]
            .iter()
            .flat_map(|&a| [0u8, 7, 10, 100, 255].map(|b| IpAddr::from([a, b, 255 - a, b / 3])))
            .collect();
        samples.extend(["::1", "2001:db8::7", "::ffff:10.0.0.1", "fe80::1:2:3:4"].map(ip));
        for addr in samples {
            let mut out = String::from("x");
            push_ip(&mut out, addr);
            assert_eq!(out, format!("x{addr}"));
        }
    }
}
