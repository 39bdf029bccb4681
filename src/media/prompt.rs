//! Prompts: 8 kHz audio cut into 20 ms frames, ready to be encoded and sent
//! one frame per RTP packet.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::builtin;
use crate::media::codec::{Codec, Encoder, FRAME_SAMPLES};
use crate::media::wav::{RATE, WavError, WavReader};

/// The longest prompt [`Prompt::load`] accepts. Prompts are held in memory
/// whole (about 1 MiB per minute), so the limit bounds what a wrong or hostile
/// file can cost.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 60);

/// Duration of one frame, in milliseconds.
const FRAME_DURATION_MS: u64 = 20;

/// What can go wrong when loading a prompt.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The file could not be read, or is not an 8 kHz WAV file pound decodes.
    #[error("prompt: {0}")]
    Wav(#[from] WavError),
    /// The file holds more audio than [`MAX_DURATION`].
    #[error("prompt is {seconds} s long; at most {} s are accepted", MAX_DURATION.as_secs())]
    TooLong {
        /// The file's length, in whole seconds.
        seconds: u64,
    },
    /// The file holds no samples at all.
    #[error("prompt file holds no audio")]
    Empty,
    /// A `builtin:` prompt name that the binary does not hold.
    #[error("prompt: {0}")]
    UnknownBuiltin(String),
}

/// Audio to play to the callee, as 20 ms frames of 8 kHz samples.
#[derive(Clone, Debug)]
pub struct Prompt {
    frames: Vec<[i16; FRAME_SAMPLES]>,
    /// The frames encoded once per codec, shared by every call that plays the
    /// prompt: encoding Opus per call would cost tens of microseconds per packet.
    encoded: [OnceLock<Option<Vec<Vec<u8>>>>; 3],
}

impl PartialEq for Prompt {
    fn eq(&self, other: &Self) -> bool {
        self.frames == other.frames
    }
}

impl Eq for Prompt {}

impl Prompt {
    /// Loads an 8 kHz WAV file (16-bit PCM or G.711; channels mixed to mono),
    /// or the compiled-in prompt a `builtin:<lang>/<file>.wav` path names.
    /// Refuses files longer than [`MAX_DURATION`] before reading their samples,
    /// and files without any samples.
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        match path.to_str().and_then(builtin::prompt) {
            Some(bytes) => {
                let bytes = bytes.map_err(PromptError::UnknownBuiltin)?;
                Self::read(WavReader::new(std::io::Cursor::new(bytes), bytes.len() as u64)?)
            }
            None => Self::read(WavReader::open(path)?),
        }
    }

    fn read<R: std::io::Read + std::io::Seek>(mut reader: WavReader<R>) -> Result<Prompt, PromptError> {
        let samples = reader.remaining_samples();
        if samples > MAX_DURATION.as_secs() * u64::from(RATE) {
            return Err(PromptError::TooLong { seconds: samples / u64::from(RATE) });
        }
        if samples == 0 {
            return Err(PromptError::Empty);
        }
        Ok(Prompt::from_samples(&reader.read_to_end()?))
    }

    /// Cuts samples into frames, zero-padding the last one. No length limit:
    /// the caller already holds the samples.
    pub fn from_samples(samples: &[i16]) -> Prompt {
        let frames = samples
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut frame = [0; FRAME_SAMPLES];
                frame[..chunk.len()].copy_from_slice(chunk);
                frame
            })
            .collect();
        Prompt { frames, encoded: Default::default() }
    }

    /// The frames encoded for `codec` (one payload per frame), made on first
    /// use; `None` when the codec's encoder cannot be created.
    pub fn encoded(&self, codec: Codec) -> Option<&[Vec<u8>]> {
        let slot = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
            Codec::Opus => 2,
        };
        self.encoded[slot]
            .get_or_init(|| {
                let mut encoder = Encoder::new(codec).ok()?;
                let mut payload = Vec::new();
                self.frames
                    .iter()
                    .map(|frame| encoder.encode(frame, &mut payload).ok().map(|()| payload.clone()))
                    .collect()
            })
            .as_deref()
    }

    /// The frames, in playing order.
    pub fn frames(&self) -> &[[i16; FRAME_SAMPLES]] {
        &self.frames
    }

    /// How long the prompt plays: its frame count times 20 ms (so including
    /// the padding of the last frame).
    pub fn duration(&self) -> Duration {
        Duration::from_millis(FRAME_DURATION_MS * self.frames.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::dtmf::{DtmfConfig, DtmfDetector};
    use crate::dsp::tone::power_to_dbm0;
    use crate::media::wav::{Encoding, write_file};

    #[test]
    fn committed_prompts_load_as_telephone_speech() {
        let files =
            ["press-pound.wav", "confirmed.wav", "reported.wav", "wrong-key.wav", "enter-code.wav", "wrong-code.wav"];
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prompts");
        for name in crate::locale::LOCALES.iter().flat_map(|l| files.map(|f| format!("{l}/{f}"))) {
            let prompt = Prompt::load(&folder.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let duration = prompt.duration();
            // Mandarin from espeak-ng is slow: its longest sentence takes 8.5 s.
            assert!(
                (Duration::from_secs(1)..Duration::from_secs(10)).contains(&duration),
                "{name}: {duration:?} is no spoken sentence"
            );
            let samples = prompt.frames().as_flattened();
            assert_eq!(samples.len(), prompt.frames().len() * FRAME_SAMPLES);
            // Level over the speech, skipping the quiet padding at both ends.
            let loud: Vec<f64> = samples.iter().map(|&s| (s as f64).powi(2)).collect();
            let first = samples.iter().position(|&s| s.unsigned_abs() > 300).unwrap();
            let last = samples.iter().rposition(|&s| s.unsigned_abs() > 300).unwrap();
            let level = power_to_dbm0(loud[first..=last].iter().sum::<f64>() / (last - first + 1) as f64);
            assert!((-21.0..-15.0).contains(&level), "{name}: speech at {level:.1} dBm0, want about -18");
            assert!(samples.iter().all(|&s| s.unsigned_abs() < 32000), "{name}: clipped");
            // pound listens while it plays: its own prompt echoed back must not be a key.
            let mut detector = DtmfDetector::new(&DtmfConfig::default());
            detector.process(samples, |event| panic!("{name}: the detector hears {event:?}"));
        }
    }

    #[test]
    fn from_samples_pads_the_last_frame() {
        let samples: Vec<i16> = (1..=400).collect();
        let prompt = Prompt::from_samples(&samples);
        assert_eq!(prompt.frames().len(), 3);
        assert_eq!(prompt.frames()[2][..80], samples[320..]);
        assert!(prompt.frames()[2][80..].iter().all(|&s| s == 0));
        assert_eq!(prompt.duration(), Duration::from_millis(60));
        assert!(Prompt::from_samples(&[]).frames().is_empty());
    }

    #[test]
    fn refuses_non_wav_empty_and_too_long_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("prompt.wav");
        std::fs::write(&text, "To confirm your phone number, press the pound key.").unwrap();
        assert!(matches!(Prompt::load(&text), Err(PromptError::Wav(WavError::NotWav))));
        assert!(matches!(Prompt::load(&dir.path().join("missing.wav")), Err(PromptError::Wav(WavError::Io(_)))));

        let empty = dir.path().join("empty.wav");
        write_file(&empty, &[], Encoding::Pcm16).unwrap();
        assert!(matches!(Prompt::load(&empty), Err(PromptError::Empty)));

        // Ten minutes and one sample of µ-law (4.8 MB), refused from the header.
        let long = dir.path().join("long.wav");
        let limit = MAX_DURATION.as_secs() as usize * RATE as usize;
        write_file(&long, &vec![0; limit + 1], Encoding::Ulaw).unwrap();
        assert!(matches!(Prompt::load(&long), Err(PromptError::TooLong { seconds: 600 })));
        write_file(&long, &vec![0; limit], Encoding::Ulaw).unwrap();
        assert_eq!(Prompt::load(&long).unwrap().duration(), MAX_DURATION);
    }
}
