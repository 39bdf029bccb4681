//! The media half of a call: prompts out as paced RTP, audio and
//! telephone-events in, digits found by RFC 4733 or by the in-band detector.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::dialplan::DtmfSource;
use crate::dsp::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent};
use crate::media::codec::{CodecError, Decoder, FRAME_SAMPLES, silence};
use crate::media::prompt::Prompt;
use crate::rtp::{EventReceiver, PayloadType, RtpReceiver, RtpSender, RtpStats, Ssrc};
use crate::sdp::{Direction, MediaDescription};

/// The telephone-event payload types pound offers (8 kHz and 48 kHz). Events
/// on them are accepted even when the answer names another type, because
/// some peers send on what was offered.
pub const OFFERED_EVENT_TYPES: [u8; 2] = [101, 110];

/// Prompts queued at most: the prompt, a wrong-key notice, the prompt again.
const MAX_QUEUED: usize = 4;

/// An RTP sender for the negotiated codec, started now, with SSRC, first
/// sequence number and first timestamp from the CSPRNG (RFC 3550 §5.1: random
/// starting points keep known-plaintext attacks on SRTP-less media harder and
/// tell restarted streams apart).
pub fn start_sender(description: &MediaDescription, now: Instant) -> RtpSender {
    let mut sender = RtpSender::new(
        Ssrc(rand::random()),
        PayloadType(description.payload_type),
        description.codec.clock_rate(),
        rand::random(),
        rand::random(),
    );
    sender.start(now);
    sender
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
    playing: Option<(Arc<Prompt>, usize)>,
    queue: VecDeque<Arc<Prompt>>,
    prompt_finished: bool,
    digits: VecDeque<(char, DtmfSource)>,
    decoded: [i16; FRAME_SAMPLES],
    packet: Vec<u8>,
    payload: Vec<u8>,
}

impl MediaSession {
    /// Starts sending to the answer's address now; `inband` enables the
    /// detector; `learning_packets` is how many packets must continue the
    /// callee's stream from a new address before it is heard there.
    pub fn new(
        now: Instant,
        description: MediaDescription,
        inband: bool,
        learning_packets: u16,
    ) -> Result<Self, CodecError> {
        let remote = SocketAddr::new(description.address, description.port);
        let sender = start_sender(&description, now);
        Ok(Self {
            remote,
            decoder: Decoder::new(description.codec)?,
            description,
            sender,
            // Anyone can reach our port: keys count only from the address
            // the answer named (or where its stream provably moved).
            receiver: RtpReceiver::new(Some(remote), learning_packets),
            events: EventReceiver::new(),
            detector: inband.then(|| DtmfDetector::new(&DtmfConfig::default())),
            playing: None,
            queue: VecDeque::new(),
            prompt_finished: false,
            digits: VecDeque::new(),
            decoded: [0; FRAME_SAMPLES],
            packet: Vec::with_capacity(1500),
            payload: Vec::with_capacity(1500),
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
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.receiver.handle_datagram(now, from, datagram);
        self.drain_received(now);
    }

    fn drain_received(&mut self, now: Instant) {
        let audio_type = self.description.payload_type;
        let event_type = self.description.telephone_event;
        while let Some(packet) = self.receiver.poll_packet() {
            let pt = packet.payload_type.0;
            if pt != audio_type && (Some(pt) == event_type || OFFERED_EVENT_TYPES.contains(&pt)) {
                if let Some(press) = self.events.handle(now, packet.timestamp, packet.marker, packet.payload) {
                    self.digits.push_back((press.digit, DtmfSource::Rfc4733));
                }
            } else if pt == audio_type
                && let Some(detector) = self.detector.as_mut()
                && let Ok(n) = self.decoder.decode(packet.payload, &mut self.decoded)
            {
                let digits = &mut self.digits;
                detector.process(&self.decoded[..n], |event| {
                    if let DtmfEvent::On { digit, .. } = event {
                        digits.push_back((digit, DtmfSource::Inband));
                    }
                });
            }
        }
    }

    /// The next key found in the media.
    pub fn poll_digit(&mut self) -> Option<(char, DtmfSource)> {
        self.digits.pop_front()
    }

    /// The next RTP packet that is due by `now`, and where it goes.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(&[u8], SocketAddr)> {
        if self.sender.next_due()? > now {
            return None;
        }
        if matches!(self.description.direction, Direction::SendOnly | Direction::Inactive) {
            // The peer holds the call and takes no media; the clock runs on.
            self.sender.skip_frame();
            return None;
        }
        // Prompts and silence are encoded once per process and shared by
        // every call; a call only copies the payload into its packet.
        let codec = self.description.codec;
        self.payload.clear();
        match self.playing.take() {
            Some((prompt, index)) => {
                if let Some(payload) = prompt.encoded(codec).and_then(|frames| frames.get(index)) {
                    self.payload.extend_from_slice(payload);
                }
                if index + 1 < prompt.frames().len() {
                    self.playing = Some((prompt, index + 1));
                } else {
                    self.playing = self.queue.pop_front().map(|p| (p, 0));
                    self.prompt_finished |= self.playing.is_none();
                }
            }
            None => self.payload.extend_from_slice(silence(codec).unwrap_or_default()),
        }
        if self.payload.is_empty() {
            // The codec could not encode: the slot passes without a packet.
            self.sender.skip_frame();
            return None;
        }
        self.sender.audio_frame(&self.payload, &mut self.packet);
        Some((&self.packet, self.remote))
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

    /// When the last RTP packet arrived.
    pub fn last_packet_at(&self) -> Option<Instant> {
        self.receiver.last_packet_at()
    }
}
