//! Writes RTP packets as a classic pcap file (Ethernet, IPv4, UDP), the form
//! sipp's `play_pcap_audio` replays: it rewrites addresses, ports and the UDP
//! checksum, and sends the RTP as stored.

use std::path::Path;

use pound::dsp::g711::ulaw_encode;
use pound::rtp::{PayloadType, RtpPacket, Ssrc};

/// PCMU RTP packets of 20 ms carrying `samples` (8 kHz), written to `path`.
pub fn write_pcmu_capture(path: &Path, samples: &[i16]) -> std::io::Result<()> {
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&0i32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&65535u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    let mut rtp = Vec::new();
    for (i, frame) in samples.chunks(160).enumerate() {
        let payload: Vec<u8> = frame.iter().map(|&s| ulaw_encode(s)).collect();
        let packet = RtpPacket {
            payload_type: PayloadType(0),
            marker: i == 0,
            sequence: 1000 + i as u16,
            timestamp: 160 * i as u32,
            ssrc: Ssrc(0x504f554e),
            payload: &payload,
        };
        packet.write(&mut rtp);
        let frame = ethernet_ipv4_udp(&rtp);
        // Start at 1 s: sipp sends a capture that starts at 0 with its first
        // two packets back to back.
        let micros = 1_000_000u64 + 20_000 * i as u64;
        file.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        file.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
    }
    std::fs::write(path, file)
}

fn ethernet_ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let checksum = !ip.chunks(2).fold(0u32, |sum, w| {
        let sum = sum + u16::from_be_bytes([w[0], w[1]]) as u32;
        (sum & 0xffff) + (sum >> 16)
    }) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&6000u16.to_be_bytes());
    frame.extend_from_slice(&6002u16.to_be_bytes());
    frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}
