//! The tokio layer: sockets, clocks and tasks around the socket-free machines.
//! One [`Endpoint`] per node carries all SIP; each machine runs in the one
//! [`driver`] loop: read a packet, hand it to the machine, send what it asks,
//! sleep until its next deadline. Nothing clever happens here.

mod call;
mod driver;
mod endpoint;
mod phone;
mod socket;
mod tls;
mod transport;
mod trunk;
mod wake;

pub use call::{CallSetup, run_call};
pub use endpoint::{Delivery, Endpoint, SipHandle};
pub use phone::{PhoneSetup, run_phone, run_phone_in};
pub use socket::{MemoryNetwork, Network, Observer};
pub use tls::{Tls, TlsFiles};
pub use transport::Incoming;
pub use trunk::run_trunk_watch;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Failures of the network layer itself (not of the call).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket could not be opened or used.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// A TLS file (CA, certificate, key) is missing or unusable, or TLS is
    /// asked for in a way that cannot work.
    #[error("TLS: {0}")]
    Tls(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Io { context, source }
}

/// Resolves `host:port` (a name, IPv4, or bracketed IPv6) to an address.
pub async fn resolve(host_port: &str) -> Result<SocketAddr, NetError> {
    tokio::net::lookup_host(host_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| NetError::Resolve(host_port.to_string()))
}

/// `bind`, or, when its IP is unspecified and of the other family than
/// `peer`, the unspecified address of `peer`'s family on the same port: an
/// IPv4 socket cannot reach an IPv6 peer.
pub fn bind_towards(bind: SocketAddr, peer: SocketAddr) -> SocketAddr {
    match bind.ip() {
        ip if ip.is_unspecified() && bind.is_ipv4() != peer.is_ipv4() => {
            let any: IpAddr = if peer.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            SocketAddr::new(any, bind.port())
        }
        _ => bind,
    }
}

/// The local address the system would use to reach `peer`, so Via, Contact
/// and SDP carry an address the peer can reach back.
pub fn local_ip_towards(peer: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_follows_the_peers_family() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(bind_towards(addr("0.0.0.0:0"), addr("[2001:db8::1]:5060")), addr("[::]:0"));
        assert_eq!(bind_towards(addr("[::]:5060"), addr("192.0.2.1:5060")), addr("0.0.0.0:5060"));
        assert_eq!(bind_towards(addr("0.0.0.0:5060"), addr("192.0.2.1:5060")), addr("0.0.0.0:5060"));
        // A given address is the operator's choice, right or wrong.
        assert_eq!(bind_towards(addr("127.0.0.1:0"), addr("[::1]:5060")), addr("127.0.0.1:0"));
    }
}
