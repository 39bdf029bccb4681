//! What the callee's audio says besides keys: a network announcement (SIT)
//! or a voicemail box. Fed the decoded samples the media receives; the call
//! decides on what it hears.

use crate::dsp::sit::{SitClass, SitDetector};
use crate::dsp::steady::BlockAnalyser;
use crate::dsp::voicemail::{Voicemail, VoicemailConfig, VoicemailDetector};
use crate::vocab::Outcome;

/// Something recognised in the callee's audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heard {
    Sit(SitClass),
    Voicemail(Voicemail),
}

impl Heard {
    /// The outcome it decides.
    pub fn outcome(self) -> Outcome {
        match self {
            Heard::Sit(class) if class.number_is_invalid() => Outcome::InvalidNumber,
            Heard::Sit(_) => Outcome::Unreachable,
            Heard::Voicemail(_) => Outcome::Voicemail,
        }
    }

    /// The record's detail: what was heard, never what was said.
    pub fn detail(self) -> String {
        match self {
            Heard::Sit(class) => format!("SIT {} ({})", class.code(), class.name()),
            Heard::Voicemail(v) => format!(
                "voicemail: {:.1} s of greeting, then a {:.0} Hz beep",
                f64::from(v.greeting_ms) / 1000.0,
                v.beep_hz
            ),
        }
    }
}

/// Listens for SIT always, and for a voicemail box until the first key.
#[derive(Debug, Clone)]
pub struct Listener {
    blocks: BlockAnalyser,
    sit: SitDetector,
    voicemail: Option<VoicemailDetector>,
    heard: Option<Heard>,
}

impl Listener {
    /// `voicemail`: `None` when the dialplan turns the detection off.
    pub fn new(voicemail: Option<VoicemailConfig>) -> Self {
        Self {
            blocks: BlockAnalyser::default(),
            sit: SitDetector::default(),
            voicemail: voicemail.map(VoicemailDetector::new),
            heard: None,
        }
    }

    /// Decoded 8 kHz samples from the callee.
    pub fn process(&mut self, samples: &[i16]) {
        let Self { blocks, sit, voicemail, heard } = self;
        blocks.process(samples, |block| {
            let found = sit.push(block).map(Heard::Sit);
            let found = found.or_else(|| voicemail.as_mut().and_then(|v| v.push(block)).map(Heard::Voicemail));
            if heard.is_none() {
                *heard = found;
            }
        });
    }

    /// A key was pressed: whoever presses keys is no voicemail box, and the
    /// greeting is counted only before it.
    pub fn key_pressed(&mut self) {
        self.voicemail = None;
    }

    /// What was recognised, once.
    pub fn take_heard(&mut self) -> Option<Heard> {
        self.heard.take()
    }
}
