//! What was measured of each key a call accepted: the record an operator
//! audits a disputed verification with and tunes detection by. A leaf like
//! `vocab`: the call machine writes it, the store keeps it, the API shows it.

use serde::{Deserialize, Serialize};

use crate::vocab::DtmfSource;

/// One key accepted by a call attempt. Fields that do not apply to the key's
/// source are absent (not null) in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEvidence {
    /// The key; `x` for a digit of a number-matching code, which is never shown.
    pub digit: String,
    pub source: DtmfSource,
    /// From the answer to the key's acceptance.
    pub at_ms: u64,
    /// How long the key sounded: in-band from the tone's start to its end,
    /// RFC 4733 the end packet's duration. Absent while the key was still
    /// held when the call ended, when no end packet arrived, and for SIP INFO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(flatten)]
    pub inband: Option<InbandEvidence>,
    #[serde(flatten)]
    pub rfc4733: Option<Rfc4733Evidence>,
    /// SIP INFO: the body's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// What the in-band detector measured when it declared the key (rounded to
/// 0.1 dB and 0.01 %: finer would be noise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InbandEvidence {
    /// Both tones together.
    pub level_dbm0: f32,
    pub level_low_dbm0: f32,
    pub level_high_dbm0: f32,
    /// Low group minus high group: positive is normal twist, negative reverse.
    pub twist_db: f32,
    pub freq_error_low_pct: f32,
    pub freq_error_high_pct: f32,
    /// Share of the audio's energy the two tones carried (the detector needs 0.9).
    pub tone_share: f32,
    /// Headroom to the nearest of the level and twist limits.
    pub margin_db: f32,
}

/// What an RFC 4733 telephone-event said about the key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rfc4733Evidence {
    pub payload_type: u8,
    /// The event's volume field: the level the sender claims, in -dBm0.
    pub volume: u8,
    /// Whether an end packet of the event arrived before the call ended.
    pub end_received: bool,
}

impl InbandEvidence {
    /// Rounds every figure to the precision the detector measures with.
    pub fn rounded(self) -> Self {
        let tenth = |x: f32| (x * 10.0).round() / 10.0;
        let hundredth = |x: f32| (x * 100.0).round() / 100.0;
        Self {
            level_dbm0: tenth(self.level_dbm0),
            level_low_dbm0: tenth(self.level_low_dbm0),
            level_high_dbm0: tenth(self.level_high_dbm0),
            twist_db: tenth(self.twist_db),
            freq_error_low_pct: hundredth(self.freq_error_low_pct),
            freq_error_high_pct: hundredth(self.freq_error_high_pct),
            tone_share: hundredth(self.tone_share),
            margin_db: tenth(self.margin_db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_shows_only_its_own_fields_and_reads_back() {
        let inband = KeyEvidence {
            digit: "#".into(),
            source: DtmfSource::Inband,
            at_ms: 1520,
            duration_ms: Some(120),
            inband: Some(InbandEvidence {
                level_dbm0: -7.0,
                level_low_dbm0: -10.0,
                level_high_dbm0: -10.1,
                twist_db: 0.1,
                freq_error_low_pct: 0.12,
                freq_error_high_pct: -0.3,
                tone_share: 0.99,
                margin_db: 9.4,
            }),
            rfc4733: None,
            content_type: None,
        };
        let json = serde_json::to_value(&inband).unwrap();
        assert_eq!(json["level_low_dbm0"], -10.0);
        assert!(json.get("payload_type").is_none() && json.get("content_type").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<KeyEvidence>(json).unwrap(), inband);

        let relay = KeyEvidence {
            digit: "x".into(),
            source: DtmfSource::Rfc4733,
            at_ms: 900,
            duration_ms: None,
            inband: None,
            rfc4733: Some(Rfc4733Evidence { payload_type: 101, volume: 10, end_received: false }),
            content_type: None,
        };
        let json = serde_json::to_value(&relay).unwrap();
        assert_eq!((json["payload_type"].as_u64(), json["end_received"].as_bool()), (Some(101), Some(false)));
        assert!(json.get("level_dbm0").is_none() && json.get("duration_ms").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<KeyEvidence>(json).unwrap(), relay);
    }
}
