//! Turning key presses into a verdict: the expected key, the fraud code, or a
//! wrong entry; one press that arrives by two paths counts once.

use std::time::{Duration, Instant};

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

/// Collects keys for one attempt and remembers recent presses for deduplication.
#[derive(Debug, Clone)]
pub struct DigitCollector {
    expect: String,
    fraud: Option<String>,
    entry: String,
    all: String,
    recent: Option<(char, DtmfSource, Instant)>,
}

impl DigitCollector {
    pub fn new(expect: &str, fraud: Option<&str>) -> Self {
        Self {
            expect: expect.into(),
            fraud: fraud.map(Into::into),
            entry: String::new(),
            all: String::new(),
            recent: None,
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
            self.all.push(digit);
        }
        self.entry.push(digit);
        let verdict = if self.entry == self.expect {
            Verdict::Expected
        } else if self.fraud.as_deref() == Some(self.entry.as_str()) {
            Verdict::Fraud
        } else if self.expect.starts_with(&self.entry)
            || self.fraud.as_deref().is_some_and(|f| f.starts_with(&self.entry))
        {
            Verdict::Pending
        } else {
            Verdict::Wrong
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
