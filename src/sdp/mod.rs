//! SDP offer/answer (RFC 4566, RFC 3264) for pound's single audio stream:
//! building pound's offer, reading the answer, answering an offer (the
//! simulated phone, or pound facing a re-INVITE), and choosing the codec and
//! the telephone-event (RFC 4733) payload type.
//!
//! The parser is pound's own, small and strict where it matters: lines are
//! `x=value` (LF or CRLF), a body is at most [`MAX_SDP_LEN`] bytes, and nothing
//! in it can make pound panic or allocate without bound. Audio is plain RTP
//! (`RTP/AVP`), or SRTP (`RTP/SAVP`, or `RTP/AVP` with keys for best-effort
//! SRTP) with SDES keys in `a=crypto` ([`crypto`]).

pub mod crypto;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::media::codec::Codec;
use crate::srtp::MasterKey;
use crate::vocab::SrtpPolicy;
pub use crypto::{Crypto, offer_keys};
use parse::{Line, Media, Session};

/// Largest SDP body accepted, in bytes. Real offers and answers are well under
/// 2 KiB; the limit bounds the work an untrusted body can cause.
pub const MAX_SDP_LEN: usize = 16 * 1024;

/// The dynamic payload type pound offers Opus on.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The payload type pound offers telephone-event/8000 on.
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;
/// The payload type pound offers telephone-event/48000 on (with Opus).
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 110;

/// Plain RTP, and RTP with keys for best-effort SRTP.
const RTP_AVP: &str = "RTP/AVP";
/// SRTP (RFC 3711 §12).
const RTP_SAVP: &str = "RTP/SAVP";
/// Events pound announces for telephone-event: the 16 DTMF keys and flash.
const TELEPHONE_EVENTS: &str = "0-16";

/// A media direction attribute, always as written by the side whose SDP it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (also the default when no direction is given).
    SendRecv,
    /// `a=sendonly`: that side sends but will not receive (it holds the other).
    SendOnly,
    /// `a=recvonly`: that side receives but will not send.
    RecvOnly,
    /// `a=inactive`: no media either way (hold).
    Inactive,
}

impl Direction {
    /// The direction the other side answers with (RFC 3264 §6.1): sendonly ↔
    /// recvonly; sendrecv and inactive stay.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The same direction without receiving: what a side means when it gives
    /// 0.0.0.0 as its address (the RFC 2543 way of putting a call on hold).
    fn without_receiving(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

/// What can be wrong with an SDP body, or with an offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is larger than [`MAX_SDP_LEN`].
    #[error("SDP body of {len} bytes is larger than the {MAX_SDP_LEN} accepted")]
    TooLarge {
        /// The body's length in bytes.
        len: usize,
    },
    /// A line that pound reads breaks the SDP grammar.
    #[error("malformed SDP at line {line}: {reason}")]
    Malformed {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A line pound needs is absent (`v=`, `o=`, or a `c=` for the audio stream).
    #[error("SDP has no {0} line")]
    Missing(&'static str),
    /// There is no `m=audio` section at all.
    #[error("SDP has no audio stream")]
    NoAudio,
    /// Every audio stream has port 0: the answerer refused it, or the offerer disabled it.
    #[error("the audio stream was refused (port 0)")]
    Rejected,
    /// The audio stream uses a transport pound does not speak, or SRTP
    /// (`RTP/SAVP`) where SRTP is off.
    #[error("audio over {0} is not supported here")]
    UnsupportedTransport(String),
    /// SRTP is required (by pound's policy, or by `RTP/SAVP`) but no
    /// `a=crypto` line of the other side is one pound can use or offered.
    #[error("no usable SRTP key (a=crypto) was agreed")]
    NoCrypto,
    /// No payload type of the stream maps to a codec both sides accept.
    #[error("no audio codec in common")]
    NoCommonCodec,
}

/// pound's offer (the body of its INVITE).
#[derive(Clone, Debug)]
pub struct Offer {
    /// The `o=` session id.
    pub session_id: u64,
    /// The `o=` session version; increase it for every new offer in the dialog.
    pub session_version: u64,
    /// Where pound receives RTP.
    pub address: IpAddr,
    /// pound's RTP port.
    pub port: u16,
    /// pound's direction.
    pub direction: Direction,
    /// Codecs in order of preference; repeats are ignored.
    pub codecs: Vec<Codec>,
    /// `Mandatory`: RTP/SAVP with `crypto`; `Optional`: RTP/AVP with
    /// `crypto`; `Off`: RTP/AVP, no keys.
    pub srtp: SrtpPolicy,
    /// pound's keys, one line each ([`offer_keys`]); unused when SRTP is off.
    pub crypto: Vec<Crypto>,
}

impl Offer {
    /// The offer as SDP text, CRLF line endings. On the m-line: each codec
    /// (PCMU on 0, PCMA on 8, Opus on 111), then telephone-event/8000 on 101
    /// and, when Opus is offered, telephone-event/48000 on 110.
    pub fn to_sdp(&self) -> String {
        let mut codecs: Vec<Codec> = Vec::with_capacity(self.codecs.len());
        for &codec in &self.codecs {
            if !codecs.contains(&codec) {
                codecs.push(codec);
            }
        }
        let mut events = vec![(TELEPHONE_EVENT_PAYLOAD_TYPE, 8000)];
        if codecs.contains(&Codec::Opus) {
            events.push((TELEPHONE_EVENT_48K_PAYLOAD_TYPE, 48000));
        }
        let formats: Vec<(u8, Codec)> = codecs.iter().map(|&codec| (offered_payload_type(codec), codec)).collect();
        let mut sdp = String::with_capacity(512);
        write_session(&mut sdp, self.session_id, self.session_version, self.address);
        let (proto, crypto): (_, &[Crypto]) = match self.srtp {
            SrtpPolicy::Mandatory => (RTP_SAVP, &self.crypto),
            SrtpPolicy::Optional => (RTP_AVP, &self.crypto),
            SrtpPolicy::Off => (RTP_AVP, &[]),
        };
        write_audio(
            &mut sdp,
            Audio { port: self.port, proto, formats: &formats, events: &events, crypto },
            self.direction,
        );
        sdp
    }
}

/// The SRTP keys agreed for the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpKeys {
    /// pound's key: what it protects its packets with.
    pub local: MasterKey,
    /// The peer's key: what its packets are checked and decrypted with.
    pub remote: MasterKey,
}

/// The payload type pound offers a codec on.
fn offered_payload_type(codec: Codec) -> u8 {
    codec.static_payload_type().unwrap_or(OPUS_PAYLOAD_TYPE)
}

/// The audio stream agreed in an offer/answer exchange, seen from pound:
/// where to send, how to encode, and what the peer declared.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaDescription {
    /// The peer's RTP address (0.0.0.0 or :: when it is holding the call).
    pub address: IpAddr,
    /// The peer's RTP port.
    pub port: u16,
    /// The codec to send and to expect.
    pub codec: Codec,
    /// The payload type of `codec` in the peer's SDP.
    pub payload_type: u8,
    /// The telephone-event payload type, if the peer takes RFC 4733 events.
    pub telephone_event: Option<u8>,
    /// The RTP clock rate of `telephone_event`.
    pub telephone_event_rate: Option<u32>,
    /// The peer's direction as the peer declared it (media level, else session
    /// level, else sendrecv), with an unspecified address (0.0.0.0, the old way
    /// to hold) taken as "does not receive": `SendOnly` or `Inactive` from the
    /// peer mean it holds the call and pound must not send.
    pub direction: Direction,
    /// SRTP's keys when the stream is SRTP; `None`: plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// Reads the answer to `offer`.
///
/// The first `m=audio` section with a port other than 0 is used (`Rejected`
/// if every one has port 0). Its codec is the first payload type on the m-line
/// that maps to a codec `offer` offered, by rtpmap (encoding name and clock
/// rate) or by static type 0 or 8 without one. The telephone-event payload type
/// is one at the codec's clock rate (any number: answerers do not always keep
/// pound's 101), else one at another rate.
///
/// With SRTP offered, the answer's `a=crypto` line that repeats the tag and
/// suite of one of the offer's gives the keys; an answer without one is
/// plain RTP, which only `Optional` accepts, and only over RTP/AVP.
pub fn parse_answer(sdp: &str, offer: &Offer) -> Result<MediaDescription, SdpError> {
    let session = parse::parse(sdp)?;
    let audio =
        session.media.iter().find(|m| m.kind == "audio" && m.port != 0).ok_or_else(|| missing_audio(&session))?;
    let secure = audio.proto == RTP_SAVP;
    if !(audio.proto == RTP_AVP || secure && offer.srtp != SrtpPolicy::Off) {
        return Err(SdpError::UnsupportedTransport(audio.proto.to_string()));
    }
    let stream = read_stream(&session, audio)?;
    let srtp = match offer.srtp {
        SrtpPolicy::Off => None,
        policy => {
            let agreed = stream.crypto.iter().find_map(|answered| {
                let ours =
                    offer.crypto.iter().find(|c| c.tag == answered.tag && c.key.suite() == answered.key.suite())?;
                Some(SrtpKeys { local: ours.key.clone(), remote: answered.key.clone() })
            });
            if agreed.is_none() && (secure || policy == SrtpPolicy::Mandatory) {
                return Err(SdpError::NoCrypto);
            }
            agreed
        }
    };
    let (payload_type, codec) = stream
        .formats
        .iter()
        .find_map(|&(pt, codec)| codec.filter(|c| offer.codecs.contains(c)).map(|c| (pt, c)))
        .ok_or(SdpError::NoCommonCodec)?;
    let event = stream
        .telephone_events
        .iter()
        .find(|(_, rate)| *rate == codec.clock_rate())
        .or(stream.telephone_events.first())
        .copied();
    Ok(MediaDescription {
        address: stream.address,
        port: audio.port,
        codec,
        payload_type,
        telephone_event: event.map(|(pt, _)| pt),
        telephone_event_rate: event.map(|(_, rate)| rate),
        direction: stream.direction,
        srtp,
    })
}

/// Why a body has no usable audio stream: none at all, or only refused ones.
fn missing_audio(session: &Session<'_>) -> SdpError {
    if session.media.iter().any(|m| m.kind == "audio") { SdpError::Rejected } else { SdpError::NoAudio }
}

/// An offer received from a peer (the INVITE pound's simulated phone answers,
/// or a re-INVITE or UPDATE to pound).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteOffer {
    /// The offerer's RTP address (0.0.0.0 or :: when it holds the call).
    pub address: IpAddr,
    /// The offerer's RTP port.
    pub port: u16,
    /// Every payload type on the audio m-line, in the offer's order, with the
    /// codec it stands for if pound knows it.
    pub formats: Vec<(u8, Option<Codec>)>,
    /// The telephone-event payload types offered, with their clock rates.
    pub telephone_events: Vec<(u8, u32)>,
    /// The offerer's direction, as in [`MediaDescription::direction`].
    pub direction: Direction,
    /// The stream is RTP/SAVP: it must be answered with SRTP.
    pub secure: bool,
    /// The offer's usable `a=crypto` lines, in its order of preference.
    pub crypto: Vec<Crypto>,
    /// The `o=` session id.
    pub session_id: u64,
    /// The offer's other media sections (video, further or SRTP audio streams):
    /// the answer must list each of them, refused, in the same place (RFC 3264 §6).
    pub other_media: Vec<OtherMedia>,
}

/// A media section of an offer that pound does not use.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherMedia {
    /// Its position among the offer's m-lines, from 0.
    pub index: usize,
    /// Its media type (`video`, `audio`, …).
    pub media: String,
    /// Its transport protocol.
    pub proto: String,
    /// Its first format, repeated in the refusal.
    pub format: String,
}

/// Reads an offer. The audio stream used is the first `m=audio` section with a
/// port other than 0 over plain RTP, or over SRTP with a key pound can use;
/// every other section goes to [`RemoteOffer::other_media`].
pub fn parse_offer(sdp: &str) -> Result<RemoteOffer, SdpError> {
    let session = parse::parse(sdp)?;
    let usable = |m: &Media<'_>| match m.proto {
        RTP_AVP => true,
        RTP_SAVP => m.attributes.iter().any(|(_, value)| crypto::parse_crypto(value).is_some()),
        _ => false,
    };
    let chosen = session.media.iter().position(|m| m.kind == "audio" && m.port != 0 && usable(m));
    let Some(chosen) = chosen else {
        return Err(match session.media.iter().find(|m| m.kind == "audio" && m.port != 0) {
            Some(audio) => SdpError::UnsupportedTransport(audio.proto.to_string()),
            None => missing_audio(&session),
        });
    };
    let audio = &session.media[chosen];
    let stream = read_stream(&session, audio)?;
    let other_media = session
        .media
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != chosen)
        .map(|(index, m)| OtherMedia {
            index,
            media: m.kind.to_string(),
            proto: m.proto.to_string(),
            format: m.formats[0].to_string(),
        })
        .collect();
    Ok(RemoteOffer {
        address: stream.address,
        port: audio.port,
        formats: stream.formats,
        telephone_events: stream.telephone_events,
        direction: stream.direction,
        secure: audio.proto == RTP_SAVP,
        crypto: stream.crypto,
        session_id: session.session_id,
        other_media,
    })
}

/// Which of `offer`'s keys an answerer with `policy` takes: the first
/// usable one; `None` for plain RTP.
///
/// # Errors
///
/// [`SdpError::UnsupportedTransport`] for RTP/SAVP when SRTP is off, and
/// [`SdpError::NoCrypto`] when SRTP is required (RTP/SAVP, or `Mandatory`)
/// and no offered key is usable.
pub fn choose_crypto(offer: &RemoteOffer, policy: SrtpPolicy) -> Result<Option<&Crypto>, SdpError> {
    match policy {
        SrtpPolicy::Off if offer.secure => Err(SdpError::UnsupportedTransport(RTP_SAVP.to_string())),
        SrtpPolicy::Off => Ok(None),
        SrtpPolicy::Optional if !offer.secure => Ok(offer.crypto.first()),
        SrtpPolicy::Optional | SrtpPolicy::Mandatory => offer.crypto.first().map(Some).ok_or(SdpError::NoCrypto),
    }
}

/// Answers `offer` from `address`:`port`.
///
/// The codec is the first offered format whose codec is in `accept` (the
/// offer's order wins, as the offerer ranks them); the telephone-event payload
/// type is one offered at that codec's clock rate, if any. The answer keeps the
/// offer's payload type numbers and mirrors its direction (sendonly ↔
/// recvonly). Other media sections are refused with port 0. The returned
/// [`MediaDescription`] describes the offerer's side.
///
/// `srtp`: pound's key under the tag of the offered line it answers (see
/// [`choose_crypto`]); `None` answers plain RTP, which an RTP/SAVP offer
/// does not allow.
pub fn answer(
    offer: &RemoteOffer,
    address: IpAddr,
    port: u16,
    accept: &[Codec],
    session_id: u64,
    session_version: u64,
    srtp: Option<Crypto>,
) -> Result<(String, MediaDescription), SdpError> {
    let keys = match &srtp {
        Some(ours) => {
            let theirs = offer
                .crypto
                .iter()
                .find(|c| c.tag == ours.tag && c.key.suite() == ours.key.suite())
                .ok_or(SdpError::NoCrypto)?;
            Some(SrtpKeys { local: ours.key.clone(), remote: theirs.key.clone() })
        }
        None if offer.secure => return Err(SdpError::UnsupportedTransport(RTP_SAVP.to_string())),
        None => None,
    };
    let (payload_type, codec) = offer
        .formats
        .iter()
        .find_map(|&(pt, codec)| codec.filter(|c| accept.contains(c)).map(|c| (pt, c)))
        .ok_or(SdpError::NoCommonCodec)?;
    let event = offer.telephone_events.iter().find(|(_, rate)| *rate == codec.clock_rate()).copied();
    // The audio section sits in the one place no other section takes.
    let others = &offer.other_media;
    let audio_index = (0..others.len()).find(|i| !others.iter().any(|m| m.index == *i)).unwrap_or(others.len());
    let mut sdp = String::with_capacity(512);
    write_session(&mut sdp, session_id, session_version, address);
    for other in others.iter().filter(|m| m.index < audio_index) {
        write_refused(&mut sdp, other);
    }
    let proto = if offer.secure { RTP_SAVP } else { RTP_AVP };
    let formats = [(payload_type, codec)];
    let audio = Audio { port, proto, formats: &formats, events: event.as_slice(), crypto: srtp.as_slice() };
    write_audio(&mut sdp, audio, offer.direction.reversed());
    for other in others.iter().filter(|m| m.index > audio_index) {
        write_refused(&mut sdp, other);
    }
    let media = MediaDescription {
        address: offer.address,
        port: offer.port,
        codec,
        payload_type,
        telephone_event: event.map(|(pt, _)| pt),
        telephone_event_rate: event.map(|(_, rate)| rate),
        direction: offer.direction,
        srtp: keys,
    };
    Ok((sdp, media))
}

/// What pound reads from the audio section it uses.
struct Stream {
    address: IpAddr,
    formats: Vec<(u8, Option<Codec>)>,
    telephone_events: Vec<(u8, u32)>,
    direction: Direction,
    crypto: Vec<Crypto>,
}

fn read_stream(session: &Session<'_>, audio: &Media<'_>) -> Result<Stream, SdpError> {
    let connection: Line<'_> = audio.connection.or(session.connection).ok_or(SdpError::Missing("c="))?;
    let address = parse::parse_connection(connection)?;
    let rtpmaps = parse::rtpmaps(audio)?;
    let payload_types = parse::payload_types(audio)?;
    let formats = payload_types.iter().map(|&pt| (pt, parse::codec(pt, rtpmaps[pt as usize].as_ref()))).collect();
    let telephone_events = payload_types
        .iter()
        .filter_map(|&pt| parse::telephone_event_rate(rtpmaps[pt as usize].as_ref()).map(|rate| (pt, rate)))
        .collect();
    let mut direction = parse::direction(&audio.attributes)
        .or_else(|| parse::direction(&session.attributes))
        .unwrap_or(Direction::SendRecv);
    if address.is_unspecified() {
        direction = direction.without_receiving();
    }
    let crypto = audio.attributes.iter().filter_map(|(_, value)| crypto::parse_crypto(value)).collect();
    Ok(Stream { address, formats, telephone_events, direction, crypto })
}

/// Appends one line and its CRLF.
fn line(sdp: &mut String, args: fmt::Arguments<'_>) {
    // Formatting into a String cannot fail.
    let _ = sdp.write_fmt(args);
    sdp.push_str("\r\n");
}

fn write_session(sdp: &mut String, session_id: u64, session_version: u64, address: IpAddr) {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    line(sdp, format_args!("v=0"));
    line(sdp, format_args!("o=pound {session_id} {session_version} IN {family} {address}"));
    line(sdp, format_args!("s=pound"));
    line(sdp, format_args!("c=IN {family} {address}"));
    line(sdp, format_args!("t=0 0"));
}

/// What an `m=audio` section says.
struct Audio<'a> {
    port: u16,
    proto: &'a str,
    formats: &'a [(u8, Codec)],
    events: &'a [(u8, u32)],
    crypto: &'a [Crypto],
}

fn write_audio(sdp: &mut String, audio: Audio<'_>, direction: Direction) {
    let Audio { port, proto, formats, events, crypto } = audio;
    // As in `line`, writing to a String cannot fail.
    let _ = write!(sdp, "m=audio {port} {proto}");
    for pt in formats.iter().map(|(pt, _)| pt).chain(events.iter().map(|(pt, _)| pt)) {
        let _ = write!(sdp, " {pt}");
    }
    sdp.push_str("\r\n");
    for &(pt, codec) in formats {
        let (name, rate) = (codec.encoding_name(), codec.clock_rate());
        match codec {
            // RFC 7587: Opus is always announced as two channels. In-band FEC
            // is welcome: the decoder takes it.
            Codec::Opus => {
                line(sdp, format_args!("a=rtpmap:{pt} {name}/{rate}/2"));
                line(sdp, format_args!("a=fmtp:{pt} useinbandfec=1"));
            }
            Codec::Pcmu | Codec::Pcma => line(sdp, format_args!("a=rtpmap:{pt} {name}/{rate}")),
        }
    }
    for &(pt, rate) in events {
        line(sdp, format_args!("a=rtpmap:{pt} telephone-event/{rate}"));
        line(sdp, format_args!("a=fmtp:{pt} {TELEPHONE_EVENTS}"));
    }
    line(sdp, format_args!("a=ptime:20"));
    line(sdp, format_args!("a={}", direction.attribute()));
    for key in crypto {
        line(sdp, format_args!("a={}", key.to_attribute()));
    }
}

fn write_refused(sdp: &mut String, media: &OtherMedia) {
    line(sdp, format_args!("m={} 0 {} {}", media.media, media.proto, media.format));
}
