//! The classic libpcap file format, with each datagram wrapped in the IPv4
//! or IPv6 and UDP headers it would have had on the wire (link type
//! `LINKTYPE_RAW`), so that Wireshark and tcpdump read a capture as they read
//! their own. Writing and reading are both here; reading accepts what
//! writing produces in either byte order and with micro- or nanosecond
//! timestamps, and refuses everything else with a reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Nanosecond-resolution pcap: the machine's instants are finer than µs.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Raw IP: the packet starts with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
const GLOBAL_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const UDP: u8 = 17;
/// The largest UDP payload an IPv4 datagram carries; longer payloads are cut.
pub const MAX_PAYLOAD: usize = u16::MAX as usize - IPV4_HEADER - UDP_HEADER;
/// No record is larger than this (the snapshot length written in the header).
const SNAPLEN: u32 = 262_144;

/// One datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Nanoseconds since the Unix epoch.
    pub at_ns: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why a file is not a capture pound can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file (no pcap magic number)")]
    NotPcap,
    #[error("pcap link type {0} is not raw IP (101): not a capture pound wrote")]
    LinkType(u32),
    #[error("record {index} is cut short: the file ends inside it")]
    Truncated { index: usize },
    #[error("record {index} claims {length} bytes, more than the {SNAPLEN}-byte limit")]
    Oversized { index: usize, length: u32 },
    #[error("record {index} is not a whole IPv4 or IPv6 UDP datagram: {reason}")]
    Malformed { index: usize, reason: &'static str },
}

/// The file header that starts every capture.
pub fn global_header() -> [u8; GLOBAL_HEADER] {
    let mut header = [0u8; GLOBAL_HEADER];
    header[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    // Bytes 8..16: time zone and accuracy, both 0 as every writer leaves them.
    header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    header[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    header
}

/// One record: `payload` (cut at [`MAX_PAYLOAD`]) as a UDP datagram from
/// `from` to `to` at `at_ns`. An IPv4 address beside an IPv6 one is written
/// in its IPv4-mapped IPv6 form.
pub fn record(at_ns: u64, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let udp_length = UDP_HEADER + payload.len();
    let packet = match (from.ip(), to.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            let mut packet = Vec::with_capacity(IPV4_HEADER + udp_length);
            packet.extend_from_slice(&ipv4_header(source, destination, udp_length));
            packet.extend_from_slice(&udp_header(from.port(), to.port(), udp_length, 0));
            packet
        }
        (source, destination) => {
            let (source, destination) = (as_v6(source), as_v6(destination));
            let mut packet = Vec::with_capacity(IPV6_HEADER + udp_length);
            packet.extend_from_slice(&ipv6_header(source, destination, udp_length));
            // UDP over IPv6 must carry a checksum (RFC 8200 §8.1).
            let checksum = udp6_checksum(source, destination, from.port(), to.port(), payload);
            packet.extend_from_slice(&udp_header(from.port(), to.port(), udp_length, checksum));
            packet
        }
    };
    let length = (packet.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(RECORD_HEADER + length as usize);
    out.extend_from_slice(&((at_ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32).to_le_bytes());
    out.extend_from_slice(&((at_ns % 1_000_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&packet);
    out.extend_from_slice(payload);
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn ipv4_header(source: Ipv4Addr, destination: Ipv4Addr, udp_length: usize) -> [u8; IPV4_HEADER] {
    let mut header = [0u8; IPV4_HEADER];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&((IPV4_HEADER + udp_length) as u16).to_be_bytes());
    header[6] = 0x40; // Don't fragment: each record is one whole datagram.
    header[8] = 64;
    header[9] = UDP;
    header[12..16].copy_from_slice(&source.octets());
    header[16..20].copy_from_slice(&destination.octets());
    let checksum = !fold(sum_words(&header));
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn ipv6_header(source: Ipv6Addr, destination: Ipv6Addr, udp_length: usize) -> [u8; IPV6_HEADER] {
    let mut header = [0u8; IPV6_HEADER];
    header[0] = 0x60;
    header[4..6].copy_from_slice(&(udp_length as u16).to_be_bytes());
    header[6] = UDP;
    header[7] = 64;
    header[8..24].copy_from_slice(&source.octets());
    header[24..40].copy_from_slice(&destination.octets());
    header
}

fn udp_header(source: u16, destination: u16, length: usize, checksum: u16) -> [u8; UDP_HEADER] {
    let mut header = [0u8; UDP_HEADER];
    header[0..2].copy_from_slice(&source.to_be_bytes());
    header[2..4].copy_from_slice(&destination.to_be_bytes());
    header[4..6].copy_from_slice(&(length as u16).to_be_bytes());
    header[6..8].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn udp6_checksum(source: Ipv6Addr, destination: Ipv6Addr, from: u16, to: u16, payload: &[u8]) -> u16 {
    let length = (UDP_HEADER + payload.len()) as u32;
    let mut sum = sum_words(&source.octets()) + sum_words(&destination.octets());
    sum += u64::from(length) + u64::from(UDP);
    sum += u64::from(from) + u64::from(to) + u64::from(length);
    sum += sum_words(payload);
    match !fold(sum) {
        // An all-zero checksum means "none"; a computed zero is sent as all ones.
        0 => 0xffff,
        checksum => checksum,
    }
}

/// The one's-complement sum of big-endian 16-bit words, an odd byte padded.
fn sum_words(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut sum: u64 = chunks.by_ref().map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A whole capture file of `datagrams`, in order (as [`read`] gives them back).
pub fn file(datagrams: &[Datagram]) -> Vec<u8> {
    let mut file = global_header().to_vec();
    for d in datagrams {
        file.extend(record(d.at_ns, d.from, d.to, &d.payload));
    }
    file
}

/// Every datagram of a capture, in file order.
pub fn read(bytes: &[u8]) -> Result<Vec<Datagram>, PcapError> {
    let header = bytes.get(..GLOBAL_HEADER).ok_or(PcapError::NotPcap)?;
    let magic = [header[0], header[1], header[2], header[3]];
    let (little_endian, nanos) = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
        (MAGIC_NANOS, _) => (true, true),
        (MAGIC_MICROS, _) => (true, false),
        (_, MAGIC_NANOS) => (false, true),
        (_, MAGIC_MICROS) => (false, false),
        _ => return Err(PcapError::NotPcap),
    };
    let word = |at: &[u8]| {
        let four = [at[0], at[1], at[2], at[3]];
        if little_endian { u32::from_le_bytes(four) } else { u32::from_be_bytes(four) }
    };
    let link_type = word(&header[20..24]) & 0x0fff_ffff;
    if link_type != LINKTYPE_RAW {
        return Err(PcapError::LinkType(link_type));
    }
    let mut datagrams = Vec::new();
    let mut rest = &bytes[GLOBAL_HEADER..];
    while !rest.is_empty() {
        let index = datagrams.len();
        let record = rest.get(..RECORD_HEADER).ok_or(PcapError::Truncated { index })?;
        let (seconds, fraction, length) = (word(&record[0..4]), word(&record[4..8]), word(&record[8..12]));
        if length > SNAPLEN {
            return Err(PcapError::Oversized { index, length });
        }
        let packet = rest.get(RECORD_HEADER..RECORD_HEADER + length as usize).ok_or(PcapError::Truncated { index })?;
        let fraction_ns = if nanos { u64::from(fraction) } else { u64::from(fraction) * 1_000 };
        let at_ns = u64::from(seconds) * 1_000_000_000 + fraction_ns;
        let (from, to, payload) = udp_datagram(packet).map_err(|reason| PcapError::Malformed { index, reason })?;
        datagrams.push(Datagram { at_ns, from, to, payload: payload.to_vec() });
        rest = &rest[RECORD_HEADER + length as usize..];
    }
    Ok(datagrams)
}

/// The addresses and payload of one raw IP packet carrying a whole UDP datagram.
fn udp_datagram(packet: &[u8]) -> Result<(SocketAddr, SocketAddr, &[u8]), &'static str> {
    let version = packet.first().ok_or("empty record")? >> 4;
    let (source, destination, protocol, udp) = match version {
        4 => {
            let header_length = usize::from(packet[0] & 0x0f) * 4;
            if header_length < IPV4_HEADER || packet.len() < header_length {
                return Err("IPv4 header cut short");
            }
            if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
                return Err("an IPv4 fragment");
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let end = total.clamp(header_length, packet.len());
            let octets = |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
            (IpAddr::V4(octets(12)), IpAddr::V4(octets(16)), packet[9], &packet[header_length..end])
        }
        6 => {
            if packet.len() < IPV6_HEADER {
                return Err("IPv6 header cut short");
            }
            let octets = |at: usize| {
                let mut address = [0u8; 16];
                address.copy_from_slice(&packet[at..at + 16]);
                Ipv6Addr::from(address)
            };
            let end = (IPV6_HEADER + usize::from(u16::from_be_bytes([packet[4], packet[5]]))).min(packet.len());
            (IpAddr::V6(octets(8)), IpAddr::V6(octets(24)), packet[6], &packet[IPV6_HEADER..end])
        }
        _ => return Err("neither IPv4 nor IPv6"),
    };
    if protocol != UDP {
        return Err("not UDP");
    }
    if udp.len() < UDP_HEADER {
        return Err("UDP header cut short");
    }
    let length = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if length < UDP_HEADER || length > udp.len() {
        return Err("UDP length disagrees with the packet");
    }
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    let unmapped = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    Ok((
        SocketAddr::new(unmapped(source), port(0)),
        SocketAddr::new(unmapped(destination), port(2)),
        &udp[UDP_HEADER..length],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = global_header().to_vec();
        records.iter().for_each(|r| bytes.extend_from_slice(r));
        bytes
    }

    #[test]
    fn datagrams_read_back_as_written_over_ipv4_and_ipv6() {
        let v4: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let peer4: SocketAddr = "198.51.100.7:5080".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let written = [
            Datagram { at_ns: 1_767_225_600_123_456_789, from: v4, to: peer4, payload: b"INVITE".to_vec() },
            Datagram { at_ns: 1_767_225_600_200_000_001, from: v6, to: v4, payload: vec![0x80; 172] },
            Datagram { at_ns: 1_767_225_601_000_000_000, from: peer4, to: v4, payload: Vec::new() },
        ];
        assert_eq!(read(&super::file(&written)).unwrap(), written);
    }

    #[test]
    fn checksums_are_those_the_wire_would_carry() {
        let from: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let to: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let bytes = record(0, from, to, b"x");
        // A header whose checksum is right sums to all ones.
        assert_eq!(fold(sum_words(&bytes[RECORD_HEADER..RECORD_HEADER + IPV4_HEADER])), 0xffff);
        let from: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let to: SocketAddr = "[2001:db8::2]:5062".parse().unwrap();
        let bytes = record(0, from, to, b"abc");
        let udp = &bytes[RECORD_HEADER + IPV6_HEADER..];
        let (IpAddr::V6(s), IpAddr::V6(d)) = (from.ip(), to.ip()) else { unreachable!() };
        let pseudo = sum_words(&s.octets()) + sum_words(&d.octets()) + udp.len() as u64 + u64::from(UDP);
        assert_eq!(fold(pseudo + sum_words(udp)), 0xffff, "the UDP checksum verifies");
    }

    #[test]
    fn micro_second_and_big_endian_files_are_read() {
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let to: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let mut bytes = file(&[record(1_500_000_000_000_000_000, from, to, b"p")]);
        // Rewrite as a big-endian microsecond file.
        let mut big = Vec::new();
        big.extend_from_slice(&MAGIC_MICROS.to_be_bytes());
        big.extend_from_slice(&2u16.to_be_bytes());
        big.extend_from_slice(&4u16.to_be_bytes());
        big.extend_from_slice(&[0; 8]);
        big.extend_from_slice(&SNAPLEN.to_be_bytes());
        big.extend_from_slice(&LINKTYPE_RAW.to_be_bytes());
        let record = bytes.split_off(GLOBAL_HEADER);
        for (i, field) in record[..RECORD_HEADER].chunks(4).enumerate() {
            let value = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
            big.extend_from_slice(&if i == 1 { value / 1_000 } else { value }.to_be_bytes());
        }
        big.extend_from_slice(&record[RECORD_HEADER..]);
        let read = read(&big).unwrap();
        assert_eq!((read[0].at_ns, read[0].from, read[0].to), (1_500_000_000_000_000_000, from, to));
    }

    #[test]
    fn damaged_files_are_refused_with_a_reason() {
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let whole = file(&[record(0, from, from, b"payload")]);
        assert_eq!(read(b"GIF89a"), Err(PcapError::NotPcap));
        assert_eq!(read(&whole[..whole.len() - 1]), Err(PcapError::Truncated { index: 0 }));
        let mut ethernet = whole.clone();
        ethernet[20] = 1;
        assert_eq!(read(&ethernet), Err(PcapError::LinkType(1)));
        let mut tcp = whole.clone();
        tcp[RECORD_HEADER + GLOBAL_HEADER + 9] = 6;
        assert!(matches!(read(&tcp), Err(PcapError::Malformed { reason: "not UDP", .. })));
        let mut huge = whole;
        huge[GLOBAL_HEADER + 8..GLOBAL_HEADER + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&huge), Err(PcapError::Oversized { .. })));
    }
}
