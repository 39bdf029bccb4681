//! The media half of a call: prompts out as paced RTP, audio and
//! telephone-events in, digits found by RFC 4733 or by the in-band detector.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::listening::{Heard, Listener};
use crate::dsp::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent, KeyMeasurement};
use crate::dsp::tone::SAMPLE_RATE;
use crate::dsp::voicemail::VoicemailConfig;
use crate::evidence::{InbandEvidence, KeyEvidence, Rfc4733Evidence};
use crate::media::codec::{CodecError, Decoder, FRAME_SAMPLES, silence};
use crate::media::prompt::Prompt;
use crate::rtp::{EventReceiver, PayloadType, RtpReceiver, RtpSender, RtpStats, Ssrc};
use crate::sdp::{Direction, MediaDescription, SrtpKeys};
use crate::srtp::{MAX_TRAILER_LEN, SrtpContext, Suite};
use crate::vocab::{DtmfSource, Transmit};

/// The telephone-event payload types pound offers (8 kHz and 48 kHz). Events
/// on them are accepted even when the answer names another type, because
/// some peers send on what was offered.
pub const OFFERED_EVENT_TYPES: [u8; 2] = [101, 110];

/// Prompts queued at most: the prompt, a wrong-key notice, the prompt again.
const MAX_QUEUED: usize = 4;

/// A key found in the media.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaKey {
    pub digit: char,
    pub source: DtmfSource,
    /// From the start of the key's tone to its detection: measured by the
    /// in-band detector, or the RFC 4733 event's duration at its first
    /// packet (`None` when the event's clock rate is unknown).
    pub latency: Option<Duration>,
    pub detail: KeyDetail,
}

/// What the path that carried a key says about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDetail {
    Inband(KeyMeasurement),
    Rfc4733 { payload_type: u8, volume: u8 },
    Info { content_type: &'static str },
}

impl KeyDetail {
    /// The record of a key accepted `at_ms` after the answer, shown as `digit`.
    pub fn evidence(self, digit: char, source: DtmfSource, at_ms: u64) -> KeyEvidence {
        let mut evidence = KeyEvidence {
            digit: digit.to_string(),
            source,
            at_ms,
            duration_ms: None,
            inband: None,
            rfc4733: None,
            content_type: None,
        };
        match self {
            KeyDetail::Inband(m) => {
                let measured = InbandEvidence {
                    level_dbm0: m.level_dbm0(),
                    level_low_dbm0: m.low_dbm0,
                    level_high_dbm0: m.high_dbm0,
                    twist_db: m.twist_db(),
                    freq_error_low_pct: m.low_error_pct,
                    freq_error_high_pct: m.high_error_pct,
                    tone_share: m.share,
                    margin_db: m.margin_db,
                };
                evidence.inband = Some(measured.rounded());
            }
            KeyDetail::Rfc4733 { payload_type, volume } => {
                evidence.rfc4733 = Some(Rfc4733Evidence { payload_type, volume, end_received: false });
            }
            KeyDetail::Info { content_type } => evidence.content_type = Some(content_type.to_string()),
        }
        evidence
    }
}

/// A key found earlier has ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyEnd {
    pub source: DtmfSource,
    /// How long it sounded: in-band from the tone's start to the detector's
    /// decision that it stopped (20 to 50 ms after the tone did), RFC
    /// 4733 the end packet's duration (`None` when the clock rate is unknown).
    pub duration: Option<Duration>,
}

/// The clock rate of events on `payload_type`: the answer's, else the rate
/// pound offered that type at.
fn event_clock_rate(description: &MediaDescription, payload_type: u8) -> Option<u32> {
    match payload_type {
        pt if Some(pt) == description.telephone_event => description.telephone_event_rate,
        101 => Some(8000),
        110 => Some(48_000),
        _ => None,
    }
}

/// `units` of a `rate` Hz clock as a duration.
fn clock_duration(units: u64, rate: u32) -> Option<Duration> {
    (rate > 0).then(|| Duration::from_secs_f64(units as f64 / f64::from(rate)))
}

/// An RTP sender for the negotiated codec, started now, with SSRC, first
/// sequence number and first timestamp from the caller's CSPRNG (RFC 3550
/// §5.1: random starting points keep known-plaintext attacks on SRTP-less
/// media harder and tell restarted streams apart).
pub fn start_sender(description: &MediaDescription, now: Instant, rng: &mut impl Rng) -> RtpSender {
    let mut sender = RtpSender::new(
        Ssrc(rng.next_u32()),
        PayloadType(description.payload_type),
        description.codec.clock_rate(),
        rng.next_u32() as u16,
        rng.next_u32(),
    );
    sender.start(now);
    sender
}

/// Largest datagram handled without growing a buffer: an Ethernet MTU.
const DATAGRAM: usize = 1500;

/// SRTP for both directions of a call.
pub struct SrtpSession {
    outbound: SrtpContext,
    inbound: SrtpContext,
    /// The peer's key `inbound` was made from: a re-INVITE may change it.
    remote: SrtpKeys,
    /// Where a received packet is checked and decrypted: the datagram is
    /// the driver's, and SRTP works in place.
    clear: Vec<u8>,
    /// Packets that failed authentication, repeated an index or were not
    /// RTP at all: dropped before anything reads them.
    rejected: u64,
}

impl SrtpSession {
    pub fn new(keys: &SrtpKeys) -> SrtpSession {
        SrtpSession {
            outbound: SrtpContext::new(&keys.local),
            inbound: SrtpContext::new(&keys.remote),
            remote: keys.clone(),
            clear: Vec::with_capacity(DATAGRAM + MAX_TRAILER_LEN),
            rejected: 0,
        }
    }

    pub fn suite(&self) -> Suite {
        self.outbound.suite()
    }

    /// The RTP packet inside `datagram`, or `None` (counted) when it is not
    /// authentic or not new.
    pub fn unprotect(&mut self, datagram: &[u8]) -> Option<&[u8]> {
        self.clear.clear();
        self.clear.extend_from_slice(datagram);
        match self.inbound.unprotect(&mut self.clear) {
            Ok(len) => Some(&self.clear[..len]),
            Err(_) => {
                self.rejected += 1;
                None
            }
        }
    }

    /// Encrypts `packet` in place and appends its tag; `false` if it could
    /// not be (the packet must not leave).
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> bool {
        self.outbound.protect(packet).is_ok()
    }

    /// A re-INVITE's answer keeps pound's key; the peer may bring a new one.
    pub fn update(&mut self, keys: &SrtpKeys) {
        if keys.remote != self.remote.remote {
            self.inbound = SrtpContext::new(&keys.remote);
            self.remote.remote = keys.remote.clone();
        }
    }

    /// Packets dropped by SRTP so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

/// RTP for one call.
pub struct MediaSession {
    remote: SocketAddr,
    description: MediaDescription,
    sender: RtpSender,
    decoder: Decoder,
    receiver: RtpReceiver,
    events: EventReceiver,
    detector: Option<DtmfDetector>,
    listener: Listener,
    playing: Option<(Arc<Prompt>, usize)>,
    queue: VecDeque<Arc<Prompt>>,
    prompt_finished: bool,
    digits: VecDeque<MediaKey>,
    key_ends: VecDeque<KeyEnd>,
    /// Where the in-band key that is on began, in samples.
    inband_start: Option<u64>,
    decoded: [i16; FRAME_SAMPLES],
    packet: Vec<u8>,
    /// `None`: plain RTP.
    srtp: Option<SrtpSession>,
}

impl MediaSession {
    /// Starts sending to the answer's address now; `inband` enables the
    /// detector; `learning_packets` is how many packets must continue the
    /// callee's stream from a new address before it is heard there;
    /// `voicemail` the voicemail detection's thresholds (SIT is always listened for).
    pub fn new(
        now: Instant,
        description: MediaDescription,
        inband: bool,
        learning_packets: u16,
        voicemail: Option<VoicemailConfig>,
        rng: &mut impl Rng,
    ) -> Result<Self, CodecError> {
        let remote = SocketAddr::new(description.address, description.port);
        let sender = start_sender(&description, now, rng);
        let srtp = description.srtp.as_ref().map(SrtpSession::new);
        Ok(Self {
            srtp,
            remote,
            decoder: Decoder::new(description.codec)?,
            description,
            sender,
            // Anyone can reach our port: keys count only from the address
            // the answer named (or where its stream provably moved).
            receiver: RtpReceiver::new(Some(remote), learning_packets),
            events: EventReceiver::new(),
            detector: inband.then(|| DtmfDetector::new(&DtmfConfig::default())),
            listener: Listener::new(voicemail),
            playing: None,
            queue: VecDeque::new(),
            prompt_finished: false,
            digits: VecDeque::new(),
            key_ends: VecDeque::new(),
            inband_start: None,
            decoded: [0; FRAME_SAMPLES],
            packet: Vec::with_capacity(DATAGRAM + MAX_TRAILER_LEN),
        })
    }

    /// The negotiated media.
    pub fn description(&self) -> &MediaDescription {
        &self.description
    }

    /// A re-INVITE or UPDATE moved the peer's media (hold, resume, new address).
    pub fn update_remote(&mut self, description: MediaDescription) {
        let remote = SocketAddr::new(description.address, description.port);
        if !description.address.is_unspecified() {
            // Media moved (or stays): the new SDP says where it comes from.
            self.receiver.set_remote(remote);
        }
        self.remote = remote;
        self.description.address = description.address;
        self.description.port = description.port;
        self.description.direction = description.direction;
        if let (Some(srtp), Some(keys)) = (self.srtp.as_mut(), description.srtp.as_ref()) {
            srtp.update(keys);
        }
    }

    /// Queues a prompt after whatever is playing.
    pub fn play(&mut self, prompt: Arc<Prompt>) {
        if self.playing.is_none() {
            self.playing = Some((prompt, 0));
        } else if self.queue.len() < MAX_QUEUED {
            self.queue.push_back(prompt);
        }
    }

    /// Stops all playback at once (barge-in).
    pub fn stop(&mut self) {
        self.playing = None;
        self.queue.clear();
    }

    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Whether the queue of prompts ran out since the last call.
    pub fn take_prompt_finished(&mut self) -> bool {
        std::mem::take(&mut self.prompt_finished)
    }

    /// A datagram from the RTP socket.
    /// Under SRTP only authentic, new packets get as far as the receiver:
    /// the others are dropped and counted ([`MediaSession::srtp_rejected`]).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let packet = match self.srtp.as_mut() {
            Some(srtp) => match srtp.unprotect(datagram) {
                Some(packet) => packet,
                None => return,
            },
            None => datagram,
        };
        self.receiver.handle_datagram(now, from, packet);
        self.drain_received(now);
    }

    fn drain_received(&mut self, now: Instant) {
        let audio_type = self.description.payload_type;
        let event_type = self.description.telephone_event;
        while let Some(packet) = self.receiver.poll_packet() {
            let pt = packet.payload_type.0;
            if pt != audio_type && (Some(pt) == event_type || OFFERED_EVENT_TYPES.contains(&pt)) {
                let rate = event_clock_rate(&self.description, pt);
                if let Some(press) = self.events.handle(now, packet.timestamp, packet.marker, packet.payload) {
                    let latency = rate.and_then(|rate| clock_duration(u64::from(press.duration), rate));
                    let detail = KeyDetail::Rfc4733 { payload_type: pt, volume: press.volume };
                    self.digits.push_back(MediaKey {
                        digit: press.digit,
                        source: DtmfSource::Rfc4733,
                        latency,
                        detail,
                    });
                }
                if let Some(end) = self.events.take_end() {
                    let duration = rate.and_then(|rate| clock_duration(u64::from(end.duration), rate));
                    self.key_ends.push_back(KeyEnd { source: DtmfSource::Rfc4733, duration });
                }
            } else if pt == audio_type
                && let Ok(n) = self.decoder.decode(packet.payload, &mut self.decoded)
            {
                let samples = &self.decoded[..n];
                if let Some(detector) = self.detector.as_mut() {
                    let (digits, key_ends, inband_start) =
                        (&mut self.digits, &mut self.key_ends, &mut self.inband_start);
                    detector.process(samples, |event| match event {
                        DtmfEvent::On { digit, sample, tone_start, measurement } => {
                            let latency = clock_duration(sample.saturating_sub(tone_start), SAMPLE_RATE);
                            *inband_start = Some(tone_start);
                            let detail = KeyDetail::Inband(measurement);
                            digits.push_back(MediaKey { digit, source: DtmfSource::Inband, latency, detail });
                        }
                        DtmfEvent::Off { sample, .. } => {
                            let duration = inband_start
                                .take()
                                .and_then(|start| clock_duration(sample.saturating_sub(start), SAMPLE_RATE));
                            key_ends.push_back(KeyEnd { source: DtmfSource::Inband, duration });
                        }
                    });
                }
                self.listener.process(samples);
            }
        }
    }

    /// The next key found in the media.
    pub fn poll_digit(&mut self) -> Option<MediaKey> {
        self.digits.pop_front()
    }

    /// The next end of a key found earlier.
    pub fn poll_key_end(&mut self) -> Option<KeyEnd> {
        self.key_ends.pop_front()
    }

    /// A network announcement or a voicemail box recognised in the callee's audio.
    pub fn poll_heard(&mut self) -> Option<Heard> {
        self.listener.take_heard()
    }

    /// The callee pressed a key (by any path): no voicemail box.
    pub fn key_pressed(&mut self) {
        self.listener.key_pressed();
    }

    /// The next RTP packet that is due by `now`, and where it goes.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<&[u8]>> {
        if self.sender.next_due()? > now {
            return None;
        }
        if matches!(self.description.direction, Direction::SendOnly | Direction::Inactive) {
            // The peer holds the call and takes no media; the clock runs on.
            self.sender.skip_frame();
            return None;
        }
        // Prompts and silence are encoded once per process and shared by
        // every call; a call copies the payload straight into its packet.
        let codec = self.description.codec;
        let payload = match &self.playing {
            Some((prompt, index)) => prompt.encoded(codec).and_then(|frames| frames.get(*index)).map(Vec::as_slice),
            None => silence(codec),
        }
        .unwrap_or_default();
        let encoded = !payload.is_empty();
        if encoded {
            self.sender.audio_frame(payload, &mut self.packet);
        } else {
            // The codec could not encode: the slot passes without a packet.
            self.sender.skip_frame();
        }
        if let Some((prompt, index)) = self.playing.take() {
            if index + 1 < prompt.frames().len() {
                self.playing = Some((prompt, index + 1));
            } else {
                self.playing = self.queue.pop_front().map(|p| (p, 0));
                self.prompt_finished |= self.playing.is_none();
            }
        }
        if !encoded {
            return None;
        }
        if let Some(srtp) = self.srtp.as_mut()
            && !srtp.protect(&mut self.packet)
        {
            return None;
        }
        Some(Transmit { destination: self.remote, contents: &self.packet })
    }

    /// When the receiving side needs [`MediaSession::handle_timeout`]; the sender's clock aside.
    pub fn receive_timeout(&self) -> Option<Instant> {
        [self.receiver.poll_timeout(), self.events.poll_timeout()].into_iter().flatten().min()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.sender.next_due(), self.receiver.poll_timeout(), self.events.poll_timeout()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.receiver.handle_timeout(now);
        self.events.handle_timeout(now);
        self.drain_received(now);
    }

    /// What the receiver counted: packets, losses, duplicates, foreign sources.
    pub fn rtp_stats(&self) -> RtpStats {
        self.receiver.stats()
    }

    /// The SRTP suite in use; `None` for plain RTP.
    pub fn srtp_suite(&self) -> Option<Suite> {
        self.srtp.as_ref().map(SrtpSession::suite)
    }

    /// Packets SRTP dropped: not authentic, replayed, or not RTP.
    pub fn srtp_rejected(&self) -> u64 {
        self.srtp.as_ref().map_or(0, SrtpSession::rejected)
    }

    /// When the last RTP packet arrived.
    pub fn last_packet_at(&self) -> Option<Instant> {
        self.receiver.last_packet_at()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dsp::g711::ulaw_encode;
    use crate::dsp::tone::ToneGenerator;
    use crate::media::codec::Codec;

    const PHONE: &str = "127.0.0.1:40000";

    fn session(now: Instant) -> MediaSession {
        let phone: SocketAddr = PHONE.parse().unwrap();
        let description = MediaDescription {
            address: phone.ip(),
            port: phone.port(),
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            telephone_event_rate: Some(8000),
            direction: Direction::SendRecv,
            srtp: None,
        };
        MediaSession::new(
            now,
            description,
            true,
            0,
            None,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1),
        )
        .unwrap()
    }

    /// Sends `audio` (8 kHz) from the phone in 20 ms PCMU packets, one per
    /// 20 ms of `now`, starting at `t0`, and collects the keys.
    fn play(media: &mut MediaSession, t0: Instant, audio: &[i16]) -> Vec<MediaKey> {
        let mut sender = RtpSender::new(Ssrc(7), PayloadType(0), 8000, 100, 1000);
        let (mut packet, mut keys) = (Vec::new(), Vec::new());
        for (n, frame) in audio.chunks(FRAME_SAMPLES).enumerate() {
            let payload: Vec<u8> = frame.iter().map(|&s| ulaw_encode(s)).collect();
            sender.audio_frame(&payload, &mut packet);
            let now = t0 + Duration::from_millis(20 * n as u64);
            media.handle_datagram(now, PHONE.parse().unwrap(), &packet);
            keys.extend(std::iter::from_fn(|| media.poll_digit()));
        }
        keys
    }

    #[test]
    fn inband_latency_is_from_the_tone_start_not_from_the_answer() {
        let t0 = Instant::now();
        let mut media = session(t0);
        // Three seconds of listening to the prompt, then a 100 ms key.
        let mut audio = vec![0i16; 3 * 8000];
        let mut tone = vec![0i16; 800];
        ToneGenerator::dtmf('#', -10.0).unwrap().fill(&mut tone);
        audio.extend(tone);
        audio.extend(vec![0i16; 800]);
        let keys = play(&mut media, t0, &audio);
        assert_eq!(keys.len(), 1, "{keys:?}");
        let MediaKey { digit, source, latency, .. } = keys[0];
        assert_eq!((digit, source), ('#', DtmfSource::Inband));
        let latency = latency.expect("the detector knows when the tone began");
        assert!(
            (Duration::from_millis(28)..=Duration::from_millis(40)).contains(&latency),
            "tone start to decision, not 3 s from the answer: {latency:?}"
        );
    }

    #[test]
    fn rfc4733_latency_is_the_duration_at_the_first_packet() {
        let t0 = Instant::now();
        let mut media = session(t0);
        let mut sender = RtpSender::new(Ssrc(7), PayloadType(0), 8000, 100, 1000);
        let mut packet = Vec::new();
        // The start packet was lost: the first one seen says 60 ms had passed.
        let [high, low] = 480u16.to_be_bytes();
        sender.event_packet(PayloadType(101), 1000, false, &[11, 0x0a, high, low], &mut packet);
        media.handle_datagram(t0, PHONE.parse().unwrap(), &packet);
        let key = media.poll_digit().expect("a key");
        assert_eq!((key.digit, key.source), ('#', DtmfSource::Rfc4733));
        assert_eq!(key.latency, Some(Duration::from_millis(60)));
    }
}
