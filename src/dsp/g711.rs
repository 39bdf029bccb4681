//! ITU-T G.711 µ-law and A-law, bit-exact with the ITU-T G.191 reference
//! implementation (`ulaw_compress`, `ulaw_expand`, `alaw_compress`, `alaw_expand`).
//!
//! The G.191 encoders take the one's complement of negative inputs before
//! segmenting, which is what makes them differ from the widely copied Sun
//! `g711.c` on some negative values; we follow G.191 because conformance is
//! judged against it.

/// Encodes one 16-bit linear sample to µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let magnitude = if sample < 0 { !sample } else { sample };
    let biased = ((magnitude >> 2) as i32 + 33).min(0x1FFF);
    let mut rest = biased >> 6;
    let mut segment = 1;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    let high = 8 - segment;
    let low = 0x0F - ((biased >> segment) & 0x0F);
    let code = ((high << 4) | low) as u8;
    if sample >= 0 { code | 0x80 } else { code }
}

/// Decodes one µ-law code to a 16-bit linear sample.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

/// Encodes one 16-bit linear sample to A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut value = (if sample < 0 { !sample } else { sample } >> 4) as i32;
    if value > 15 {
        let mut exponent = 1;
        while value > 16 + 15 {
            value >>= 1;
            exponent += 1;
        }
        value -= 16;
        value += exponent << 4;
    }
    if sample >= 0 {
        value |= 0x80;
    }
    (value ^ 0x55) as u8
}

/// Decodes one A-law code to a 16-bit linear sample.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

const fn ulaw_expand(code: u8) -> i16 {
    let complement = !code;
    let exponent = ((complement >> 4) & 0x07) as i32;
    let mantissa = (complement & 0x0F) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    (if code < 0x80 { -magnitude } else { magnitude }) as i16
}

const fn alaw_expand(code: u8) -> i16 {
    let value = ((code ^ 0x55) & 0x7F) as i32;
    let exponent = value >> 4;
    let mut mantissa = value & 0x0F;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 0x08;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    (if code > 127 { mantissa } else { -mantissa }) as i16
}

const fn expand_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = if alaw { alaw_expand(code as u8) } else { ulaw_expand(code as u8) };
        code += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = expand_table(false);
static ALAW_TO_LINEAR: [i16; 256] = expand_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the G.711 tables: µ-law decodes to ±8031 and A-law to ±4032
    /// at full scale (in 14-bit and 13-bit units), zero codes decode to 0, and
    /// the smallest steps are 2 (µ) and 16 (A, i.e. 1 in 13-bit units ±0.5).
    #[test]
    fn decoder_matches_g711_table_values() {
        assert_eq!(ulaw_decode(0x80), 8031 * 4);
        assert_eq!(ulaw_decode(0x00), -8031 * 4);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 2 * 4);
        assert_eq!(ulaw_decode(0xEF), 33 * 4);
        assert_eq!(alaw_decode(0xAA), 4032 * 8);
        assert_eq!(alaw_decode(0x2A), -4032 * 8);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xD4), 24);
    }

    #[test]
    fn encoder_matches_g191_reference_points() {
        // Zero encodes to the positive zero codes.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        // G.191 one's-complement handling of small negatives.
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(alaw_encode(-1), 0x55);
        // Full scale saturates at the extreme codes.
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "µ-law {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    /// Quantisation is monotonic and every linear value decodes to a level
    /// no further from it than half the gap to that level's wider neighbour
    /// (plus the input bits G.711 discards: 2 for µ-law, 4 for A-law).
    #[test]
    fn every_sample_quantises_to_an_adjacent_level() {
        fn check(encode: fn(i16) -> u8, decode: fn(u8) -> i16, slack: i32) {
            let mut levels: Vec<i32> = (0..=255u8).map(|c| decode(c) as i32).collect();
            levels.sort_unstable();
            levels.dedup();
            let half_gap = |level: i32| {
                let i = levels.binary_search(&level).unwrap();
                let below = if i > 0 { level - levels[i - 1] } else { 0 };
                let above = if i + 1 < levels.len() { levels[i + 1] - level } else { 0 };
                below.max(above) / 2
            };
            let mut previous = i32::MIN;
            for sample in i16::MIN..=i16::MAX {
                let x = sample as i32;
                let level = decode(encode(sample)) as i32;
                assert!(level >= previous, "not monotonic at {x}");
                previous = level;
                let outermost = x.abs() >= *levels.last().unwrap();
                assert!(outermost || (level - x).abs() <= half_gap(level) + slack, "{x} -> {level}");
            }
        }
        check(ulaw_encode, ulaw_decode, 4);
        check(alaw_encode, alaw_decode, 16);
    }

    #[test]
    fn decoders_are_odd_and_monotonic() {
        for code in 0x80..=0xFFu8 {
            assert_eq!(ulaw_decode(code), -ulaw_decode(code & 0x7F));
            assert_eq!(alaw_decode(code), -alaw_decode(code & 0x7F));
        }
        let mut previous = i16::MIN;
        for code in (0x80..=0xFFu8).rev() {
            assert!(ulaw_decode(code) >= previous);
            previous = ulaw_decode(code);
        }
    }
}
