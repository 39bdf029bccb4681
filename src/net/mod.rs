//! The tokio layer: sockets, clocks and tasks around the socket-free machines.
//! Read a packet, hand it to the machine, send what it asks, sleep until its
//! next deadline. Nothing clever happens here.

mod call;
mod phone;
mod transport;
mod trunk;

pub use call::{CallSetup, NetError, resolve, run_call};
pub use phone::{PhoneSetup, run_phone};
pub use transport::{Incoming, SipSocket};
pub use trunk::run_trunk_watch;

use std::net::{IpAddr, SocketAddr};

/// The local address the system would use to reach `peer`, so Via, Contact
/// and SDP carry an address the peer can reach back.
pub fn local_ip_towards(peer: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}
