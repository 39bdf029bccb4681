//! Number matching: the code a registration page shows and the callee keys
//! in before `#`, so that a reflexive `#` from someone called out of the
//! blue verifies nothing.
//!
//! A [`Code`] is secret and personal: it has no `Display`, its `Debug` is
//! redacted, and its digits are reached only through [`Code::digits`], which
//! the store (to compare after a restart, on any node) and the record for
//! the tenant that created it use.

use rand::RngExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest code: one digit could not be told from the fraud code's `0`.
pub const MIN_LEN: usize = 2;
/// The longest code: what a person reads off a screen and keys in at once.
pub const MAX_LEN: usize = 8;

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The code is not 2 to 8 ASCII digits; the message never repeats it.
    #[error("code must be {MIN_LEN} to {MAX_LEN} digits (0-9)")]
    Digits,
    /// A length outside 2 to 8 was asked for.
    #[error("code_length must be {MIN_LEN} to {MAX_LEN}")]
    Length,
}

/// A code length pound may draw: 2 to 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLength(usize);

impl CodeLength {
    pub fn new(length: u64) -> Result<CodeLength, CodeError> {
        usize::try_from(length)
            .ok()
            .filter(|length| (MIN_LEN..=MAX_LEN).contains(length))
            .map(CodeLength)
            .ok_or(CodeError::Length)
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// The digits the callee must key in before `#`.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// `text` as a code: 2 to 8 ASCII digits, leading zeros kept.
    pub fn parse(text: &str) -> Result<Code, CodeError> {
        if !(MIN_LEN..=MAX_LEN).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::Digits);
        }
        Ok(Code(text.to_string()))
    }

    /// A fresh code of `length` digits from the thread's CSPRNG (ChaCha,
    /// seeded by the OS), each digit uniform.
    pub fn draw(length: CodeLength) -> Code {
        let mut rng = rand::rng();
        Code((0..length.0).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect())
    }

    /// The digits themselves, for the store and the creating tenant's record.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// Whether `entry` (the keys before `#`) is this code. Takes the same
    /// time wherever the two differ, and whatever the entry's length up to
    /// [`MAX_LEN`] + 1, so the timing of the answer tells nothing.
    pub fn matches(&self, entry: &str) -> bool {
        const WIDTH: usize = MAX_LEN + 1;
        let pad = |text: &str| {
            let mut padded = [0u8; WIDTH];
            for (slot, byte) in padded.iter_mut().zip(text.bytes()) {
                *slot = byte;
            }
            padded
        };
        let (ours, theirs) = (pad(&self.0), pad(entry));
        let mut diff = u8::from(self.0.len() != entry.len());
        for (a, b) in ours.iter().zip(&theirs) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }
}

// By hand: a code must never reach a log through `{:?}`.
impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Code, D::Error> {
        let text = String::deserialize(deserializer)?;
        Code::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_two_to_eight_ascii_digits_with_leading_zeros_kept() {
        for good in ["47", "07", "00", "12345678"] {
            assert_eq!(Code::parse(good).unwrap().digits(), good);
        }
        for bad in ["", "4", "123456789", "4a", "4#", "٤٧", "４７", " 47", "-1"] {
            assert_eq!(Code::parse(bad), Err(CodeError::Digits), "{bad:?}");
        }
    }

    #[test]
    fn drawn_codes_have_the_length_asked_for_and_vary() {
        for length in MIN_LEN..=MAX_LEN {
            let code = Code::draw(CodeLength::new(length as u64).unwrap());
            assert_eq!(code.digits().len(), length);
            assert!(Code::parse(code.digits()).is_ok());
        }
        for refused in [0, 1, 9, u64::MAX] {
            assert_eq!(CodeLength::new(refused), Err(CodeError::Length), "{refused}");
        }
        let eight = CodeLength::new(8).unwrap();
        let drawn: std::collections::HashSet<String> =
            (0..50).map(|_| Code::draw(eight).digits().to_string()).collect();
        assert!(drawn.len() > 45, "a CSPRNG repeats 8-digit codes this rarely: {}", drawn.len());
    }

    #[test]
    fn only_the_exact_code_matches() {
        let code = Code::parse("047").unwrap();
        assert!(code.matches("047"));
        for other in ["", "0", "04", "47", "0470", "048", "147", "047047047"] {
            assert!(!code.matches(other), "{other:?}");
        }
    }

    #[test]
    fn the_code_never_shows_in_debug_and_errors() {
        let code = Code::parse("86420").unwrap();
        assert!(!format!("{code:?}").contains("86420"));
        assert!(!format!("{:?}", Some(code.clone())).contains("86420"));
        let error = serde_json::from_str::<Code>("\"8642a\"").unwrap_err().to_string();
        assert!(!error.contains("8642"), "{error}");
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"86420\"");
    }
}
