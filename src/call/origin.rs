//! Who may speak for the callee in SIP: the next hop (the trunk, or the
//! callee itself when called directly) and the dialog's remote target.
//! Anyone else who learns the dialog's identifiers (Call-ID and tags are
//! not secrets: they cross every proxy and end up in logs) could otherwise
//! press keys by SIP INFO, hang up, or move the media with a re-INVITE.

use std::net::{IpAddr, SocketAddr};

/// The addresses SIP messages of one call are accepted from.
#[derive(Debug, Clone)]
pub struct Origins {
    next_hop: SocketAddr,
    remote_target: Option<SocketAddr>,
}

impl Origins {
    /// Before the answer only the next hop speaks for the callee.
    pub fn new(next_hop: SocketAddr) -> Self {
        Origins { next_hop: canonical(next_hop), remote_target: None }
    }

    /// The dialog's remote target (a Contact URI) was set or refreshed. A
    /// host name gives no address: resolving is the network layer's job, and
    /// such a peer reaches us through the next hop anyway.
    pub fn set_remote_target(&mut self, uri: &str) {
        self.remote_target = uri_address(uri).map(canonical);
    }

    /// Whether a message from `from` may be acted on: address and port.
    pub fn allows(&self, from: SocketAddr) -> bool {
        let from = canonical(from);
        from == self.next_hop || Some(from) == self.remote_target
    }
}

/// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// The address of a `sip:` or `sips:` URI whose host is an IP literal (port
/// 5060, or 5061 for `sips:`, when none is given).
fn uri_address(uri: &str) -> Option<SocketAddr> {
    let (scheme, rest) = uri.split_once(':')?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "sip" => 5060,
        "sips" => 5061,
        _ => return None,
    };
    // The user part may hold `;` (`sip:+1415;npdi@host`): the host follows the last `@`.
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = host_port.split([';', '?']).next()?;
    if let Ok(address) = host_port.parse::<SocketAddr>() {
        return Some(address);
    }
    let host = host_port.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host_port);
    host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_ip_literal_uris_only() {
        assert_eq!(uri_address("sip:phone@10.0.0.2:5070"), Some(addr("10.0.0.2:5070")));
        assert_eq!(uri_address("sip:10.0.0.2;transport=udp"), Some(addr("10.0.0.2:5060")));
        assert_eq!(uri_address("SIPS:bob@10.0.0.2"), Some(addr("10.0.0.2:5061")));
        assert_eq!(uri_address("sip:+1415;npdi@[2001:db8::1]:5080;user=phone"), Some(addr("[2001:db8::1]:5080")));
        assert_eq!(uri_address("sip:bob@[2001:db8::1]"), Some(addr("[2001:db8::1]:5060")));
        for uri in ["sip:bob@example.com", "tel:+14155550100", "sip:bob@10.0.0.2:99999", "sip:", "garbage"] {
            assert_eq!(uri_address(uri), None, "{uri}");
        }
    }

    #[test]
    fn allows_the_next_hop_and_the_remote_target_exactly() {
        let mut origins = Origins::new(addr("192.0.2.1:5060"));
        assert!(origins.allows(addr("192.0.2.1:5060")));
        assert!(origins.allows(addr("[::ffff:192.0.2.1]:5060")));
        assert!(!origins.allows(addr("192.0.2.1:5062")), "another port of the trunk's host");
        assert!(!origins.allows(addr("192.0.2.2:5060")));
        origins.set_remote_target("sip:phone@198.51.100.4:5070;transport=udp");
        assert!(origins.allows(addr("198.51.100.4:5070")));
        assert!(!origins.allows(addr("198.51.100.4:5060")));
        // A refresh to a name: only the next hop remains.
        origins.set_remote_target("sip:phone@phone.example.com");
        assert!(!origins.allows(addr("198.51.100.4:5070")));
        assert!(origins.allows(addr("192.0.2.1:5060")));
    }
}
