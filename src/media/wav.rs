//! WAV files: 16-bit PCM, G.711 µ-law and A-law, mono or mixed down to mono.
//!
//! Files are untrusted input: every length is checked against what the file
//! really holds, reading streams in bounded chunks, and anything unsupported is
//! a clear [`WavError`], never a panic.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::dsp::g711;

/// What can go wrong with a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with a RIFF/WAVE header.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// A chunk header or the format chunk is cut short or inconsistent.
    #[error("broken WAV file: {0}")]
    Malformed(&'static str),
    /// The samples are in an encoding we do not decode.
    #[error(
        "unsupported WAV encoding: format tag {tag:#06x} with {bits} bits per sample (supported: 16-bit PCM, G.711 µ-law, G.711 A-law)"
    )]
    UnsupportedEncoding { tag: u16, bits: u16 },
    /// The sample rate is not 8000 Hz.
    #[error(
        "sample rate {0} Hz is not supported: pound works on 8000 Hz telephone audio (convert with `sox IN.wav -r 8000 OUT.wav`)"
    )]
    UnsupportedRate(u32),
}

/// How the samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM.
    Pcm16,
    /// G.711 µ-law, one byte per sample.
    Ulaw,
    /// G.711 A-law, one byte per sample.
    Alaw,
}

impl Encoding {
    fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Pcm16 => 2,
            Encoding::Ulaw | Encoding::Alaw => 1,
        }
    }

    fn tag(self) -> u16 {
        match self {
            Encoding::Pcm16 => 1,
            Encoding::Alaw => 6,
            Encoding::Ulaw => 7,
        }
    }
}

/// The only sample rate pound processes.
pub const RATE: u32 = 8000;

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// More channels than any real telephone recording has; bounds the frame size.
const MAX_CHANNELS: u16 = 16;

/// A streaming reader of 8 kHz audio, mixing channels down to mono.
#[derive(Debug)]
pub struct WavReader<R> {
    input: R,
    encoding: Encoding,
    channels: usize,
    remaining: u64,
    bytes: Vec<u8>,
}

impl WavReader<BufReader<File>> {
    /// Opens a WAV file and reads its header.
    pub fn open(path: &Path) -> Result<Self, WavError> {
        let file = File::open(path)?;
        let length = file.metadata()?.len();
        Self::new(BufReader::new(file), length)
    }
}

impl<R: Read + Seek> WavReader<R> {
    /// Reads the header from `input`, which holds `length` bytes in all.
    pub fn new(mut input: R, length: u64) -> Result<Self, WavError> {
        let mut riff = [0u8; 12];
        read_exact_or(&mut input, &mut riff, WavError::NotWav)?;
        if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
            return Err(WavError::NotWav);
        }
        let mut position = 12u64;
        let mut format: Option<(Encoding, usize)> = None;
        loop {
            let mut header = [0u8; 8];
            read_exact_or(&mut input, &mut header, WavError::Malformed("no data chunk"))?;
            position += 8;
            let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
            let available = length.saturating_sub(position);
            match &header[0..4] {
                b"fmt " => {
                    if !(16..=1024).contains(&size) || size > available {
                        return Err(WavError::Malformed("format chunk has an impossible size"));
                    }
                    let mut fmt = vec![0u8; size as usize];
                    input.read_exact(&mut fmt)?;
                    format = Some(parse_format(&fmt)?);
                    if size & 1 == 1 {
                        input.seek(SeekFrom::Current(1))?;
                    }
                }
                b"data" => {
                    let (encoding, channels) = format.ok_or(WavError::Malformed("data chunk before format chunk"))?;
                    // Streaming writers leave the size at 0 or 0xFFFFFFFF: take what is there.
                    let size = if size == 0 || size > available { available } else { size };
                    let frame = (encoding.bytes_per_sample() * channels) as u64;
                    return Ok(Self { input, encoding, channels, remaining: size - size % frame, bytes: Vec::new() });
                }
                _ => {
                    let skip = size + (size & 1);
                    if skip > available {
                        return Err(WavError::Malformed("chunk runs past the end of the file"));
                    }
                    input.seek(SeekFrom::Current(skip as i64))?;
                }
            }
            position += size + (size & 1);
        }
    }

    /// The encoding of the file's samples.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Number of (mono) samples not read yet.
    pub fn remaining_samples(&self) -> u64 {
        self.remaining / (self.encoding.bytes_per_sample() * self.channels) as u64
    }

    /// Fills `out` with the next samples; returns how many, 0 at the end.
    pub fn read(&mut self, out: &mut [i16]) -> Result<usize, WavError> {
        let width = self.encoding.bytes_per_sample();
        let frame = width * self.channels;
        let frames = (out.len() as u64).min(self.remaining / frame as u64) as usize;
        if frames == 0 {
            return Ok(0);
        }
        self.bytes.resize(frames * frame, 0);
        let got = read_up_to(&mut self.input, &mut self.bytes)?;
        let frames = got / frame;
        self.remaining = if got < self.bytes.len() { 0 } else { self.remaining - got as u64 };
        for (o, bytes) in out.iter_mut().zip(self.bytes.chunks_exact(frame)).take(frames) {
            let sum: i32 = bytes.chunks_exact(width).map(|s| decode(self.encoding, s) as i32).sum();
            *o = (sum / self.channels as i32) as i16;
        }
        Ok(frames)
    }

    /// Reads every remaining sample.
    pub fn read_to_end(&mut self) -> Result<Vec<i16>, WavError> {
        let mut samples = Vec::with_capacity(self.remaining_samples().min(1 << 24) as usize);
        let mut chunk = vec![0i16; 8192];
        loop {
            let n = self.read(&mut chunk)?;
            if n == 0 {
                return Ok(samples);
            }
            samples.extend_from_slice(&chunk[..n]);
        }
    }
}

fn decode(encoding: Encoding, bytes: &[u8]) -> i16 {
    match encoding {
        Encoding::Pcm16 => i16::from_le_bytes([bytes[0], bytes[1]]),
        Encoding::Ulaw => g711::ulaw_decode(bytes[0]),
        Encoding::Alaw => g711::alaw_decode(bytes[0]),
    }
}

fn parse_format(fmt: &[u8]) -> Result<(Encoding, usize), WavError> {
    let word = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let mut tag = word(0);
    let channels = word(2);
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = word(14);
    if tag == FORMAT_EXTENSIBLE {
        // The real tag is the first two bytes of the sub-format GUID.
        if fmt.len() < 26 {
            return Err(WavError::Malformed("extensible format chunk too short"));
        }
        tag = word(24);
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(WavError::Malformed("channel count must be 1 to 16"));
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_ULAW, 8) => Encoding::Ulaw,
        (FORMAT_ALAW, 8) => Encoding::Alaw,
        _ => return Err(WavError::UnsupportedEncoding { tag, bits }),
    };
    if rate != RATE {
        return Err(WavError::UnsupportedRate(rate));
    }
    Ok((encoding, channels as usize))
}

fn read_exact_or(input: &mut impl Read, buf: &mut [u8], error: WavError) -> Result<(), WavError> {
    match input.read_exact(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(error),
        other => Ok(other?),
    }
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a whole 8 kHz WAV file into memory.
pub fn read_file(path: &Path) -> Result<Vec<i16>, WavError> {
    WavReader::open(path)?.read_to_end()
}

/// Writes mono 8 kHz samples as a WAV file in the given encoding.
pub fn write_file(path: &Path, samples: &[i16], encoding: Encoding) -> Result<(), WavError> {
    let mut file = std::io::BufWriter::new(File::create(path)?);
    write(&mut file, samples, encoding)?;
    file.flush()?;
    Ok(())
}

/// Writes mono 8 kHz samples as WAV to any writer.
pub fn write(out: &mut impl Write, samples: &[i16], encoding: Encoding) -> Result<(), WavError> {
    let width = encoding.bytes_per_sample();
    let data_len = u32::try_from(samples.len() * width)
        .ok()
        .filter(|len| *len <= u32::MAX - 36)
        .ok_or(WavError::Malformed("too many samples for one WAV file"))?;
    out.write_all(b"RIFF")?;
    out.write_all(&(36 + data_len).to_le_bytes())?;
    out.write_all(b"WAVEfmt ")?;
    out.write_all(&16u32.to_le_bytes())?;
    out.write_all(&encoding.tag().to_le_bytes())?;
    out.write_all(&1u16.to_le_bytes())?;
    out.write_all(&RATE.to_le_bytes())?;
    out.write_all(&(RATE * width as u32).to_le_bytes())?;
    out.write_all(&(width as u16).to_le_bytes())?;
    out.write_all(&(8 * width as u16).to_le_bytes())?;
    out.write_all(b"data")?;
    out.write_all(&data_len.to_le_bytes())?;
    let mut bytes = Vec::with_capacity(samples.len() * width);
    for &s in samples {
        match encoding {
            Encoding::Pcm16 => bytes.extend_from_slice(&s.to_le_bytes()),
            Encoding::Ulaw => bytes.push(g711::ulaw_encode(s)),
            Encoding::Alaw => bytes.push(g711::alaw_encode(s)),
        }
    }
    out.write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn parse(bytes: Vec<u8>) -> Result<Vec<i16>, WavError> {
        let len = bytes.len() as u64;
        WavReader::new(Cursor::new(bytes), len)?.read_to_end()
    }

    fn encoded(samples: &[i16], encoding: Encoding) -> Vec<u8> {
        let mut bytes = Vec::new();
        write(&mut bytes, samples, encoding).unwrap();
        bytes
    }

    #[test]
    fn round_trips_every_encoding() {
        let samples: Vec<i16> = (0..1000).map(|i| ((i * 37) % 20000 - 10000) as i16).collect();
        assert_eq!(parse(encoded(&samples, Encoding::Pcm16)).unwrap(), samples);
        for encoding in [Encoding::Ulaw, Encoding::Alaw] {
            let back = parse(encoded(&samples, encoding)).unwrap();
            assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                assert!((*a as i32 - *b as i32).abs() <= 320, "{encoding:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn mixes_stereo_down_and_skips_unknown_chunks() {
        let mut bytes = encoded(&[], Encoding::Pcm16);
        bytes[22] = 2; // channels
        bytes.truncate(36);
        bytes.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        bytes.extend_from_slice(b"data\x08\x00\x00\x00");
        for s in [100i16, 300, -50, -150] {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        assert_eq!(parse(bytes).unwrap(), vec![200, -100]);
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        let mut other_rate = encoded(&[0; 10], Encoding::Pcm16);
        other_rate[24..28].copy_from_slice(&16000u32.to_le_bytes());
        assert!(matches!(parse(other_rate), Err(WavError::UnsupportedRate(16000))));
        let mut float = encoded(&[0; 10], Encoding::Pcm16);
        float[20] = 3;
        float[34] = 32;
        assert!(matches!(parse(float), Err(WavError::UnsupportedEncoding { tag: 3, bits: 32 })));
        assert!(matches!(parse(b"hello".to_vec()), Err(WavError::NotWav)));
        assert!(matches!(parse(b"RIFF\x00\x00\x00\x00WAVE".to_vec()), Err(WavError::Malformed(_))));
    }

    #[test]
    fn lying_lengths_never_panic_or_overread() {
        let good = encoded(&[1, 2, 3, 4, 5], Encoding::Pcm16);
        for cut in 0..good.len() {
            let _ = parse(good[..cut].to_vec());
        }
        let mut huge = good.clone();
        huge[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(huge).unwrap(), vec![1, 2, 3, 4, 5]);
        let mut fmt_huge = good.clone();
        fmt_huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(fmt_huge).is_err());
        // Every single-byte corruption of the header is an error or a clean read.
        for i in 0..44 {
            for value in [0u8, 1, 0x7F, 0xFF] {
                let mut bytes = good.clone();
                bytes[i] = value;
                let _ = parse(bytes);
            }
        }
    }
}
