//! Turning key presses into a verdict: the expected key, the fraud code, or a
//! wrong entry; one press that arrives by two paths counts once.
//!
//! With number matching the callee keys in a code, then `#`. The entry is
//! judged only at `#` (or once it is longer than any code), all of it at
//! once and in constant time: a verdict per key would tell a guesser which
//! digit was wrong. The fraud code is matched first, so `0#` is always
//! fraud; a code has at least two digits, so `0#` is never a code.

use std::time::{Duration, Instant};

use crate::code::{self, Code};
use crate::vocab::DtmfSource;

/// What the keys entered so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A prefix of the expected key or the fraud code: wait for more.
    Pending,
    Expected,
    Fraud,
    Wrong,
}

/// A press seen by one path is the same press seen by another when they agree
/// on the key within this time: RFC 4733 arrives first, the in-band detector
/// ~30 ms later, SIP INFO whenever the signalling path delivers it.
const SAME_PRESS: Duration = Duration::from_millis(600);
/// More keys than any verification needs; bounds the record.
const MAX_DIGITS: usize = 32;
/// The key that ends a code entry.
const CODE_END: char = '#';

/// What confirms the call.
#[derive(Debug, Clone)]
enum Expected {
    /// The dialplan's keys (`#`), judged key by key.
    Keys(String),
    /// Number matching: this code, then `#`.
    Code(Code),
}

/// What a code entry is recorded and logged as: every digit hidden, the
/// other keys (`#`, `*`) as pressed.
const HIDDEN_DIGIT: char = 'x';

/// Collects keys for one attempt and remembers recent presses for deduplication.
#[derive(Debug, Clone)]
pub struct DigitCollector {
    expect: Expected,
    fraud: Option<String>,
    entry: String,
    all: String,
    recent: Option<(char, DtmfSource, Instant)>,
}

impl DigitCollector {
    pub fn new(expect: &str, fraud: Option<&str>) -> Self {
        Self::expecting(Expected::Keys(expect.into()), fraud)
    }

    /// Number matching: `code` then `#` confirms.
    pub fn with_code(code: Code, fraud: Option<&str>) -> Self {
        Self::expecting(Expected::Code(code), fraud)
    }

    fn expecting(expect: Expected, fraud: Option<&str>) -> Self {
        Self { expect, fraud: fraud.map(Into::into), entry: String::new(), all: String::new(), recent: None }
    }

    /// `digit` as records and logs may show it: hidden while a code is
    /// expected, since the keys the callee enters are the code, or close to it.
    pub fn shown(&self, digit: char) -> char {
        match self.expect {
            Expected::Code(_) if digit.is_ascii_digit() => HIDDEN_DIGIT,
            _ => digit,
        }
    }

    /// A key from `source`; `None` when it repeats a press already counted
    /// from another path.
    pub fn press(&mut self, now: Instant, digit: char, source: DtmfSource) -> Option<Verdict> {
        if let Some((last, last_source, at)) = self.recent
            && last == digit
            && last_source != source
            && now.saturating_duration_since(at) < SAME_PRESS
        {
            return None;
        }
        self.recent = Some((digit, source, now));
        if self.all.len() < MAX_DIGITS {
            self.all.push(self.shown(digit));
        }
        self.entry.push(digit);
        let is_fraud_prefix = self.fraud.as_deref().is_some_and(|f| f.starts_with(&self.entry));
        let verdict = if self.fraud.as_deref() == Some(self.entry.as_str()) {
            Verdict::Fraud
        } else {
            match &self.expect {
                Expected::Keys(expect) if *expect == self.entry => Verdict::Expected,
                Expected::Keys(expect) if expect.starts_with(&self.entry) || is_fraud_prefix => Verdict::Pending,
                Expected::Keys(_) => Verdict::Wrong,
                Expected::Code(code) => match self.entry.strip_suffix(CODE_END) {
                    Some(typed) if code.matches(typed) => Verdict::Expected,
                    Some(_) => Verdict::Wrong,
                    // No code is this long: wrong without waiting for `#`.
                    None if self.entry.len() > code::MAX_LEN && !is_fraud_prefix => Verdict::Wrong,
                    None => Verdict::Pending,
                },
            }
        };
        if verdict != Verdict::Pending {
            self.entry.clear();
        }
        Some(verdict)
    }

    /// Forgets a half-entered code (the input timeout passed).
    pub fn clear_entry(&mut self) {
        self.entry.clear();
    }

    /// Every key accepted, in order.
    pub fn digits(&self) -> &str {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_fraud_and_wrong_entries() {
        let t = Instant::now();
        let mut c = DigitCollector::new("#", Some("0#"));
        assert_eq!(c.press(t, '#', DtmfSource::Rfc4733), Some(Verdict::Expected));
        let mut c = DigitCollector::new("#", Some("0#"));
        assert_eq!(c.press(t, '0', DtmfSource::Rfc4733), Some(Verdict::Pending));
        assert_eq!(c.press(t + Duration::from_secs(1), '#', DtmfSource::Rfc4733), Some(Verdict::Fraud));
        let mut c = DigitCollector::new("#", Some("0#"));
        assert_eq!(c.press(t, '5', DtmfSource::Info), Some(Verdict::Wrong));
        assert_eq!(c.press(t + Duration::from_secs(1), '#', DtmfSource::Info), Some(Verdict::Expected));
        assert_eq!(c.digits(), "5#");
    }

    /// Presses `keys` one second apart; the verdict of each.
    fn enter(c: &mut DigitCollector, t: Instant, keys: &str) -> Vec<Verdict> {
        keys.chars()
            .enumerate()
            .map(|(i, key)| c.press(t + Duration::from_secs(i as u64), key, DtmfSource::Rfc4733).unwrap())
            .collect()
    }

    #[test]
    fn a_code_is_judged_whole_at_the_pound_key() {
        use Verdict::*;
        let t = Instant::now();
        let code = || Code::parse("047").unwrap();
        let mut c = DigitCollector::with_code(code(), Some("0#"));
        assert_eq!(enter(&mut c, t, "047#"), [Pending, Pending, Pending, Expected]);
        assert_eq!(c.digits(), "xxx#", "the code is never recorded");
        // A wrong first digit says nothing until `#`.
        let mut c = DigitCollector::with_code(code(), Some("0#"));
        assert_eq!(enter(&mut c, t, "147#"), [Pending, Pending, Pending, Wrong]);
        assert_eq!(enter(&mut c, t, "#"), [Wrong], "# alone");
        assert_eq!(enter(&mut c, t, "04#"), [Pending, Pending, Wrong], "a prefix of the code");
        assert_eq!(enter(&mut c, t, "047#"), [Pending, Pending, Pending, Expected], "a new entry after a wrong one");
        // `0#` is fraud although the code starts with 0.
        let mut c = DigitCollector::with_code(code(), Some("0#"));
        assert_eq!(enter(&mut c, t, "0#"), [Pending, Fraud]);
        assert_eq!(c.digits(), "x#");
        // An entry longer than any code is wrong at once.
        let mut c = DigitCollector::with_code(code(), None);
        assert_eq!(enter(&mut c, t, "123456789"), [[Pending; 8].as_slice(), &[Wrong]].concat());
        assert_eq!(c.shown('5'), 'x');
        assert_eq!(DigitCollector::new("#", None).shown('5'), '5');
    }

    #[test]
    fn one_press_by_two_paths_counts_once_but_two_presses_by_one_path_count_twice() {
        let t = Instant::now();
        let mut c = DigitCollector::new("##", None);
        assert_eq!(c.press(t, '#', DtmfSource::Rfc4733), Some(Verdict::Pending));
        assert_eq!(c.press(t + Duration::from_millis(30), '#', DtmfSource::Inband), None);
        assert_eq!(c.press(t + Duration::from_millis(200), '#', DtmfSource::Info), None);
        assert_eq!(c.press(t + Duration::from_millis(300), '#', DtmfSource::Rfc4733), Some(Verdict::Expected));
        assert_eq!(c.digits(), "##");
    }
}
