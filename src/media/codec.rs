//! Audio codecs for RTP payloads: G.711 µ-law (PCMU), G.711 A-law (PCMA) and
//! Opus, all seen from pound's side as 20 ms frames of 8 kHz mono samples.
//!
//! Opus runs at 8 kHz on both ends (the codec resamples internally and codes
//! narrowband), so the rest of pound never sees another sample rate; only the
//! RTP clock differs (48 kHz for Opus, RFC 7587). Encoders and decoders keep
//! their buffers, so the per-packet path does not allocate.
//!
//! Opus is `opus-rs`, a pure-Rust port of libopus: building pound needs
//! nothing but Rust (no cmake, no C library), and it decodes libopus packets
//! as libopus does.

use crate::dsp::g711;

/// Samples in one 20 ms frame at pound's 8 kHz audio rate.
pub const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of silence encoded for `codec`, made once per process and
/// sent by every call between prompts; `None` when the encoder cannot be made.
pub fn silence(codec: Codec) -> Option<&'static [u8]> {
    static SILENCE: [std::sync::OnceLock<Option<Vec<u8>>>; 3] = [const { std::sync::OnceLock::new() }; 3];
    let slot = match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 1,
        Codec::Opus => 2,
    };
    SILENCE[slot]
        .get_or_init(|| {
            let mut payload = Vec::new();
            Encoder::new(codec).ok()?.encode(&[0; FRAME_SAMPLES], &mut payload).ok()?;
            Some(payload)
        })
        .as_deref()
}

/// pound's audio sample rate, in Hz.
const SAMPLE_RATE: u32 = 8000;

/// Opus bitrate for what pound sends. Set explicitly because opus-rs starts
/// at 32 kbit/s whatever the bandwidth; 24 kbit/s is generous for narrowband
/// speech and keeps in-band DTMF clean, and prompts are encoded once per
/// process, so the rate costs nothing per call.
const OPUS_BITRATE_BPS: i32 = 24_000;

/// The longest Opus packet is 120 ms (RFC 6716 §3.2.1): 960 samples at 8 kHz.
const OPUS_MAX_SAMPLES: usize = 960;

/// Largest Opus payload the encoder may produce for one 20 ms frame (RFC 6716 §3.2.1:
/// a frame never exceeds 1275 bytes).
const OPUS_MAX_PAYLOAD: usize = 1275;

/// An RTP audio codec pound can send and receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus (RFC 7587), dynamic payload type, 48 kHz RTP clock.
    Opus,
}

impl Codec {
    /// The encoding name as written in an SDP `a=rtpmap` line.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The codec an SDP encoding name names (case-insensitive, RFC 4566).
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::Opus].into_iter().find(|c| name.eq_ignore_ascii_case(c.encoding_name()))
    }

    /// The RTP clock rate in Hz (for Opus always 48000, whatever the audio bandwidth).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The static RTP payload type (RFC 3551), if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    /// The RTP timestamp increment of one 20 ms frame.
    pub fn samples_per_frame(self) -> u32 {
        self.clock_rate() / 50
    }
}

/// What can go wrong while encoding or decoding audio.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The Opus codec refused to create a state or rejected a packet
    /// (corrupt, or an impossible frame layout).
    #[error("opus: {0}")]
    Opus(&'static str),
}

/// Turns 20 ms frames of 8 kHz audio into RTP payloads.
pub struct Encoder {
    inner: EncoderInner,
}

enum EncoderInner {
    Pcmu,
    Pcma,
    Opus(Box<opus_rs::OpusEncoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("codec", &self.codec()).finish()
    }
}

impl Encoder {
    /// An encoder for `codec`. Opus: 8 kHz mono, VOIP application, 20 ms
    /// frames, [`OPUS_BITRATE_BPS`].
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        let inner = match codec {
            Codec::Pcmu => EncoderInner::Pcmu,
            Codec::Pcma => EncoderInner::Pcma,
            Codec::Opus => EncoderInner::Opus(Box::new(opus_encoder()?)),
        };
        Ok(Self { inner })
    }

    /// The codec this encoder produces.
    pub fn codec(&self) -> Codec {
        match self.inner {
            EncoderInner::Pcmu => Codec::Pcmu,
            EncoderInner::Pcma => Codec::Pcma,
            EncoderInner::Opus(_) => Codec::Opus,
        }
    }

    /// Encodes one frame into `out`, which is cleared first. Reusing `out`
    /// across calls avoids any allocation after the first packet.
    pub fn encode(&mut self, frame: &[i16; FRAME_SAMPLES], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match &mut self.inner {
            EncoderInner::Pcmu => out.extend(frame.iter().map(|&s| g711::ulaw_encode(s))),
            EncoderInner::Pcma => out.extend(frame.iter().map(|&s| g711::alaw_encode(s))),
            EncoderInner::Opus(encoder) => {
                out.resize(OPUS_MAX_PAYLOAD, 0);
                // On error `out` is left cleared rather than holding stale bytes.
                let len = encoder
                    .encode_i16(frame, FRAME_SAMPLES, out)
                    .map_err(CodecError::Opus)
                    .inspect_err(|_| out.clear())?;
                out.truncate(len);
            }
        }
        Ok(())
    }
}

/// The encoder pound sends Opus with.
fn opus_encoder() -> Result<opus_rs::OpusEncoder, CodecError> {
    let mut encoder =
        opus_rs::OpusEncoder::new(SAMPLE_RATE as i32, 1, opus_rs::Application::Voip).map_err(CodecError::Opus)?;
    encoder.bitrate_bps = OPUS_BITRATE_BPS;
    Ok(encoder)
}

/// Turns RTP payloads back into 8 kHz audio, and conceals lost packets.
pub struct Decoder {
    inner: DecoderInner,
}

enum DecoderInner {
    Pcmu,
    Pcma,
    /// The scratch buffer holds a whole packet of up to 120 ms, so that longer
    /// packets decode (and keep the decoder state in step) instead of failing.
    Opus(Box<opus_rs::OpusDecoder>, Box<[f32; OPUS_MAX_SAMPLES]>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codec = match self.inner {
            DecoderInner::Pcmu => Codec::Pcmu,
            DecoderInner::Pcma => Codec::Pcma,
            DecoderInner::Opus(..) => Codec::Opus,
        };
        f.debug_struct("Decoder").field("codec", &codec).finish()
    }
}

impl Decoder {
    /// A decoder for `codec`. Opus: decoding to 8 kHz mono (stereo streams
    /// are mixed down by the codec).
    pub fn new(codec: Codec) -> Result<Self, CodecError> {
        let inner = match codec {
            Codec::Pcmu => DecoderInner::Pcmu,
            Codec::Pcma => DecoderInner::Pcma,
            Codec::Opus => DecoderInner::Opus(
                Box::new(opus_rs::OpusDecoder::new(SAMPLE_RATE as i32, 1).map_err(CodecError::Opus)?),
                Box::new([0.0; OPUS_MAX_SAMPLES]),
            ),
        };
        Ok(Self { inner })
    }

    /// Decodes one RTP payload into `out`; returns the number of 8 kHz samples
    /// written (the rest of `out` is untouched).
    ///
    /// pound works in 20 ms frames, so anything beyond the first 160 samples is
    /// dropped: G.711 decodes at most the first 160 bytes; an Opus packet longer
    /// than 20 ms is decoded whole (so the decoder's state stays right) and its
    /// first 160 samples are returned. An empty Opus payload counts as a lost
    /// packet and is concealed.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16; FRAME_SAMPLES]) -> Result<usize, CodecError> {
        match &mut self.inner {
            DecoderInner::Pcmu => Ok(decode_g711(payload, out, g711::ulaw_decode)),
            DecoderInner::Pcma => Ok(decode_g711(payload, out, g711::alaw_decode)),
            // An empty packet is a loss: conceal exactly one frame rather
            // than whatever length the scratch buffer would allow.
            DecoderInner::Opus(..) if payload.is_empty() => Ok(self.conceal(out)),
            DecoderInner::Opus(decoder, scratch) => {
                let decoded = decoder.decode(payload, OPUS_MAX_SAMPLES, &mut scratch[..]).map_err(CodecError::Opus)?;
                let n = decoded.min(FRAME_SAMPLES);
                to_pcm16(&scratch[..n], &mut out[..n]);
                Ok(n)
            }
        }
    }

    /// Fills `out` for one lost 20 ms frame and returns its length (160): Opus
    /// packet-loss concealment, silence for G.711.
    pub fn conceal(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> usize {
        match &mut self.inner {
            DecoderInner::Pcmu | DecoderInner::Pcma => out.fill(0),
            DecoderInner::Opus(decoder, scratch) => {
                // PLC of a 20 ms frame cannot fail on a valid decoder; should
                // the codec still refuse, silence is the right concealment.
                match decoder.decode(&[], FRAME_SAMPLES, &mut scratch[..FRAME_SAMPLES]) {
                    Ok(FRAME_SAMPLES) => to_pcm16(&scratch[..FRAME_SAMPLES], out),
                    _ => out.fill(0),
                }
            }
        }
        FRAME_SAMPLES
    }
}

/// Float samples (±1.0 full scale, the codec's convention) to 16-bit PCM,
/// saturating: a decoder may overshoot full scale slightly.
fn to_pcm16(samples: &[f32], out: &mut [i16]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
    }
}

fn decode_g711(payload: &[u8], out: &mut [i16; FRAME_SAMPLES], decode: fn(u8) -> i16) -> usize {
    let n = payload.len().min(FRAME_SAMPLES);
    for (o, &code) in out.iter_mut().zip(&payload[..n]) {
        *o = decode(code);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent};
    use crate::dsp::tone::{ToneGenerator, power_to_dbm0};

    #[test]
    fn codec_constants() {
        assert_eq!(
            [Codec::Pcmu, Codec::Pcma, Codec::Opus].map(|c| (
                c.encoding_name(),
                c.clock_rate(),
                c.static_payload_type(),
                c.samples_per_frame()
            )),
            [("PCMU", 8000, Some(0), 160), ("PCMA", 8000, Some(8), 160), ("opus", 48000, None, 960)]
        );
    }

    fn ramp() -> [i16; FRAME_SAMPLES] {
        std::array::from_fn(|i| (i as i32 * 409 - 32768).clamp(-32768, 32767) as i16)
    }

    #[test]
    fn g711_round_trips_match_the_reference() {
        let frame = ramp();
        type Pair = (Codec, fn(i16) -> u8, fn(u8) -> i16);
        let pairs: [Pair; 2] =
            [(Codec::Pcmu, g711::ulaw_encode, g711::ulaw_decode), (Codec::Pcma, g711::alaw_encode, g711::alaw_decode)];
        for (codec, encode, decode) in pairs {
            let mut encoder = Encoder::new(codec).unwrap();
            let mut decoder = Decoder::new(codec).unwrap();
            let mut payload = vec![0xAA; 7]; // stale contents must be cleared
            encoder.encode(&frame, &mut payload).unwrap();
            let expected: Vec<u8> = frame.iter().map(|&s| encode(s)).collect();
            assert_eq!(payload, expected, "{codec:?}");
            let mut out = [0; FRAME_SAMPLES];
            assert_eq!(decoder.decode(&payload, &mut out).unwrap(), FRAME_SAMPLES);
            assert!(out.iter().zip(&payload).all(|(&s, &c)| s == decode(c)), "{codec:?}");
        }
    }

    #[test]
    fn g711_decode_caps_at_one_frame_and_conceals_with_silence() {
        let mut decoder = Decoder::new(Codec::Pcmu).unwrap();
        let mut out = [7; FRAME_SAMPLES];
        assert_eq!(decoder.decode(&[0x00; 400], &mut out).unwrap(), FRAME_SAMPLES);
        assert!(out.iter().all(|&s| s == g711::ulaw_decode(0)));
        let mut out = [7; FRAME_SAMPLES];
        assert_eq!(decoder.decode(&[0xFF; 80], &mut out).unwrap(), 80);
        assert!(out[80..].iter().all(|&s| s == 7), "samples past the payload are untouched");
        assert_eq!(decoder.decode(&[], &mut out).unwrap(), 0);
        assert_eq!(decoder.conceal(&mut out), FRAME_SAMPLES);
        assert!(out.iter().all(|&s| s == 0));
    }

    /// Encodes `input` with Opus frame by frame and decodes it again.
    fn opus_round_trip(input: &[i16]) -> Vec<i16> {
        let mut encoder = Encoder::new(Codec::Opus).unwrap();
        let mut decoder = Decoder::new(Codec::Opus).unwrap();
        let mut payload = Vec::new();
        let mut output = Vec::new();
        for chunk in input.chunks_exact(FRAME_SAMPLES) {
            encoder.encode(chunk.try_into().unwrap(), &mut payload).unwrap();
            assert!(!payload.is_empty() && payload.len() <= OPUS_MAX_PAYLOAD);
            let mut frame = [0; FRAME_SAMPLES];
            assert_eq!(decoder.decode(&payload, &mut frame).unwrap(), FRAME_SAMPLES);
            output.extend_from_slice(&frame);
        }
        output
    }

    fn power(samples: &[i16]) -> f64 {
        samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64
    }

    /// Power of `samples` at `hz` (Goertzel), as a share of their total power.
    fn share_at(samples: &[i16], hz: f64) -> f64 {
        let w = std::f64::consts::TAU * hz / SAMPLE_RATE as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = x as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let tone_power = 2.0 * (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (samples.len() as f64).powi(2);
        tone_power / power(samples)
    }

    #[test]
    fn opus_keeps_a_tone_level_and_frequency() {
        let mut tone = vec![0; FRAME_SAMPLES * 50];
        ToneGenerator::new(&[(1000.0, -10.0)]).fill(&mut tone);
        let decoded = opus_round_trip(&tone);
        // Skip the codec's start-up (lookahead and the encoder settling).
        let steady = &decoded[FRAME_SAMPLES * 10..];
        let level = power_to_dbm0(power(steady));
        assert!((level + 10.0).abs() < 2.0, "decoded tone at {level:.1} dBm0, sent at -10");
        let share = share_at(steady, 1000.0);
        assert!(share > 0.9, "only {share:.2} of the decoded power is at 1 kHz");
    }

    #[test]
    fn inband_dtmf_survives_opus() {
        // The simulated phone may press keys in-band over Opus: the detector
        // must still hear them after libopus at pound's settings.
        let mut audio = vec![0; FRAME_SAMPLES * 25];
        ToneGenerator::dtmf('#', -10.0).unwrap().fill(&mut audio[FRAME_SAMPLES * 5..FRAME_SAMPLES * 15]);
        let decoded = opus_round_trip(&audio);
        let mut detector = DtmfDetector::new(&DtmfConfig::default());
        let mut digits = Vec::new();
        detector.process(&decoded, |event| {
            if let DtmfEvent::On { digit, .. } = event {
                digits.push(digit)
            }
        });
        assert_eq!(digits, ['#']);
    }

    #[test]
    fn opus_long_packets_empty_packets_and_plc() {
        let mut encoder = opus_encoder().unwrap();
        let mut tone = [0i16; FRAME_SAMPLES * 3];
        ToneGenerator::new(&[(440.0, -10.0)]).fill(&mut tone);
        let mut long_packet = [0u8; 4000];
        let len = encoder.encode_i16(&tone, tone.len(), &mut long_packet).unwrap(); // one 60 ms packet
        let mut decoder = Decoder::new(Codec::Opus).unwrap();
        let mut out = [0; FRAME_SAMPLES];
        assert_eq!(decoder.decode(&long_packet[..len], &mut out).unwrap(), FRAME_SAMPLES);
        let mut out = [1234; FRAME_SAMPLES];
        assert_eq!(decoder.conceal(&mut out), FRAME_SAMPLES);
        assert!(out.iter().any(|&s| s != 1234 && s != 0), "PLC continues the tone");
        assert_eq!(decoder.decode(&[], &mut out).unwrap(), FRAME_SAMPLES);
        // A fresh decoder conceals with silence-like output, and never fails.
        let mut fresh = Decoder::new(Codec::Opus).unwrap();
        assert_eq!(fresh.conceal(&mut out), FRAME_SAMPLES);
    }

    #[test]
    fn opus_garbage_is_an_error_or_audio_never_a_panic() {
        let mut decoder = Decoder::new(Codec::Opus).unwrap();
        let mut out = [0; FRAME_SAMPLES];
        // A TOC byte announcing code 3 (arbitrary frame count) and a count of
        // zero frames is invalid (RFC 6716 §3.2.5).
        assert!(matches!(decoder.decode(&[0x03, 0x00], &mut out), Err(CodecError::Opus(_))));
        let mut seed = 0x1234_5678u32;
        for len in 1..300 {
            let packet: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if let Ok(n) = decoder.decode(&packet, &mut out) {
                assert!(n <= FRAME_SAMPLES);
            }
        }
    }
}
