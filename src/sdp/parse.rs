//! The SDP text parser: splits a body into its session and media sections.
//!
//! Only what pound uses is interpreted, and lazily where it can be: the line
//! structure, `v=`, `o=` and `m=` are checked up front; `c=` and `a=` values are
//! kept raw (with their line numbers, for errors) and parsed only for the audio
//! stream pound uses, so an odd video stream does not fail a call.

use std::net::IpAddr;

use super::{Direction, MAX_SDP_LEN, SdpError};
use crate::media::codec::Codec;

/// Highest RTP payload type (7 bits).
const MAX_PAYLOAD_TYPE: u8 = 127;

/// A `type=value` line: its 1-based number and its value.
pub(super) type Line<'a> = (usize, &'a str);

/// A parsed SDP body.
#[derive(Debug)]
pub(super) struct Session<'a> {
    /// The `o=` session id.
    pub session_id: u64,
    /// The session-level `c=` line, if any.
    pub connection: Option<Line<'a>>,
    /// The session-level `a=` lines.
    pub attributes: Vec<Line<'a>>,
    /// The media sections, in order.
    pub media: Vec<Media<'a>>,
}

/// One `m=` section.
#[derive(Debug)]
pub(super) struct Media<'a> {
    /// Line number of the `m=` line.
    pub line: usize,
    /// Media type: `audio`, `video`, …
    pub kind: &'a str,
    pub port: u16,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub proto: &'a str,
    /// The format list, raw: payload types for RTP, other tokens otherwise.
    pub formats: Vec<&'a str>,
    pub connection: Option<Line<'a>>,
    pub attributes: Vec<Line<'a>>,
}

/// An `a=rtpmap` value: encoding name, clock rate, and channels if given.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rtpmap<'a> {
    pub name: &'a str,
    pub rate: u32,
    pub channels: Option<u32>,
}

fn malformed(line: usize, reason: &'static str) -> SdpError {
    SdpError::Malformed { line, reason }
}

/// Splits `sdp` into sections, checking the line structure (LF or CRLF).
pub(super) fn parse(sdp: &str) -> Result<Session<'_>, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge { len: sdp.len() });
    }
    let mut lines = sdp.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end())).filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "v=0")) => {}
        Some((line, _)) => return Err(malformed(line, "SDP must start with v=0")),
        None => return Err(SdpError::Missing("v=")),
    }
    let mut session_id = None;
    let mut connection = None;
    let mut attributes = Vec::new();
    let mut media: Vec<Media<'_>> = Vec::new();
    for (line, text) in lines {
        let bytes = text.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(malformed(line, "not a type=value line"));
        }
        // The check above makes byte 2 a character boundary.
        let value = &text[2..];
        match (bytes[0], media.last_mut()) {
            (b'o', None) if session_id.is_none() => session_id = Some(parse_origin(line, value)?),
            (b'o', _) => return Err(malformed(line, "o= must appear once, before any m=")),
            (b'c', None) => {
                connection.get_or_insert((line, value));
            }
            (b'c', Some(m)) => {
                m.connection.get_or_insert((line, value));
            }
            (b'a', None) => attributes.push((line, value)),
            (b'a', Some(m)) => m.attributes.push((line, value)),
            (b'm', _) => media.push(parse_media(line, value)?),
            // s=, t=, b=, i=, k=, …: nothing pound needs.
            _ => {}
        }
    }
    let session_id = session_id.ok_or(SdpError::Missing("o="))?;
    Ok(Session { session_id, connection, attributes, media })
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
fn parse_origin(line: usize, value: &str) -> Result<u64, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    if fields.len() != 6 {
        return Err(malformed(line, "o= needs six fields"));
    }
    fields[1].parse().map_err(|_| malformed(line, "o= session id is not a 64-bit number"))
}

/// `m=<media> <port>[/<count>] <proto> <fmt> …`.
fn parse_media(line: usize, value: &str) -> Result<Media<'_>, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(malformed(line, "m= needs media, port, protocol and formats"));
    };
    let port = port.split_once('/').map_or(port, |(port, _count)| port);
    let port = port.parse().map_err(|_| malformed(line, "m= port is not a number from 0 to 65535"))?;
    let formats: Vec<&str> = fields.collect();
    if formats.is_empty() {
        return Err(malformed(line, "m= lists no formats"));
    }
    Ok(Media { line, kind, port, proto, formats, connection: None, attributes: Vec::new() })
}

/// `c=IN IP4 <address>` or `c=IN IP6 <address>`; a multicast `/ttl` suffix is dropped.
pub(super) fn parse_connection((line, value): Line<'_>) -> Result<IpAddr, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some("IN"), Some(family), Some(address), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(line, "c= must be IN IP4|IP6 <address>"));
    };
    let address = address.split_once('/').map_or(address, |(address, _)| address);
    let address: IpAddr = address.parse().map_err(|_| malformed(line, "c= address is not an IP address"))?;
    match (family, address) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(address),
        _ => Err(malformed(line, "c= address does not match its address type")),
    }
}

/// The direction attribute among `attributes`, if there is one.
pub(super) fn direction(attributes: &[Line<'_>]) -> Option<Direction> {
    attributes.iter().find_map(|(_, value)| match *value {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// The payload types of an RTP media section, in order, without repeats.
pub(super) fn payload_types(media: &Media<'_>) -> Result<Vec<u8>, SdpError> {
    let mut seen = 0u128;
    let mut types = Vec::with_capacity(media.formats.len());
    for format in &media.formats {
        let pt: u8 = format
            .parse()
            .ok()
            .filter(|pt| *pt <= MAX_PAYLOAD_TYPE)
            .ok_or_else(|| malformed(media.line, "m= format is not an RTP payload type"))?;
        if seen & (1 << pt) == 0 {
            seen |= 1 << pt;
            types.push(pt);
        }
    }
    Ok(types)
}

/// The `a=rtpmap` lines of a media section, indexed by payload type; the first
/// line for a payload type wins.
pub(super) fn rtpmaps<'a>(media: &Media<'a>) -> Result<Vec<Option<Rtpmap<'a>>>, SdpError> {
    let mut table = vec![None; MAX_PAYLOAD_TYPE as usize + 1];
    for &(line, value) in &media.attributes {
        let Some(map) = value.strip_prefix("rtpmap:") else { continue };
        let bad = || malformed(line, "a=rtpmap must be <payload type> <name>/<rate>[/<channels>]");
        let (pt, encoding) = map.split_once(' ').ok_or_else(bad)?;
        let pt: u8 = pt.parse().ok().filter(|pt| *pt <= MAX_PAYLOAD_TYPE).ok_or_else(bad)?;
        let mut parts = encoding.trim().split('/');
        let name = parts.next().filter(|name| !name.is_empty()).ok_or_else(bad)?;
        let rate = parts.next().and_then(|rate| rate.parse().ok()).filter(|rate| *rate > 0).ok_or_else(bad)?;
        let channels = parts.next().map(|channels| channels.parse().map_err(|_| bad())).transpose()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        table[pt as usize].get_or_insert(Rtpmap { name, rate, channels });
    }
    Ok(table)
}

/// The codec a payload type stands for: by its rtpmap, or by the static
/// assignments of RFC 3551 when it has none.
pub(super) fn codec(pt: u8, rtpmap: Option<&Rtpmap<'_>>) -> Option<Codec> {
    let Some(map) = rtpmap else {
        return [Codec::Pcmu, Codec::Pcma].into_iter().find(|c| c.static_payload_type() == Some(pt));
    };
    let codec = [Codec::Pcmu, Codec::Pcma, Codec::Opus]
        .into_iter()
        .find(|c| map.name.eq_ignore_ascii_case(c.encoding_name()) && map.rate == c.clock_rate())?;
    // G.711 is mono. Opus is always announced as /2 (RFC 7587) but decodes to
    // mono whatever the sender does; accept a missing or /1 count too.
    let channels_ok = match codec {
        Codec::Pcmu | Codec::Pcma => matches!(map.channels, None | Some(1)),
        Codec::Opus => matches!(map.channels, None | Some(1 | 2)),
    };
    channels_ok.then_some(codec)
}

/// The clock rate of a telephone-event (RFC 4733) rtpmap.
pub(super) fn telephone_event_rate(rtpmap: Option<&Rtpmap<'_>>) -> Option<u32> {
    rtpmap.filter(|map| map.name.eq_ignore_ascii_case("telephone-event")).map(|map| map.rate)
}
