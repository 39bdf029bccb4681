//! Dialplans: what a verification call plays and what it accepts, from
//! `dialplans/*.toml`, validated into a [`Dialplan`].
//!
//! ```toml
//! locale = "en"                # the prompt set when the request names none (see `locale`)
//! prompt = "fixtures/prompts/en/press-pound.wav"   # played after the answer
//! prompt_repeats = 3            # plays of the prompt before giving up (no_input)
//! expect = "#"                  # the confirmation
//! fraud_code = "0#"             # "this wasn't me": fraud_reported
//! wrong_key_prompt = "fixtures/prompts/en/wrong-key.wav"
//! max_attempts = 3              # wrong entries before wrong_input
//! confirmation_prompt = "fixtures/prompts/en/confirmed.wav"
//! fraud_prompt = "fixtures/prompts/en/reported.wav"
//! code_prompt = "builtin:en/enter-code.wav"        # number matching: asks for the code, then #
//! wrong_code_prompt = "builtin:en/wrong-code.wav"  # number matching: after a wrong code
//! input_timeout_ms = 5000       # silence after a prompt before it repeats
//! ring_timeout_ms = 45000       # ringing before CANCEL (no_answer)
//! max_duration_ms = 120000      # from the answer; then BYE
//! media_timeout_ms = 0          # off; or >= 60000: no RTP for this long → in-dialog OPTIONS,
//!                               # then no_input (dialog alive) or callee_hangup (481/408/no answer)
//! dtmf_sources = ["rfc4733", "info", "inband"]
//! retry_outcomes = ["no_answer", "busy", "unreachable"]   # call again after these
//! retry_after_ms = 60000        # wait before the next attempt
//! voicemail_greeting_ms = 2500  # callee speech before a steady beep means a voicemail box
//! voicemail_beep_ms = 150       # the beep's length at least (0 = no voicemail detection)
//! ```
//!
//! Relative prompt paths are resolved against the dialplan file's folder, then
//! against the working directory; `builtin:<lang>/<file>.wav` names a prompt
//! compiled into the binary. `{locale}` in a prompt path stands for the
//! verification's locale (`builtin:{locale}/press-pound.wav`), so one dialplan
//! speaks every language; a path without it plays the same file for all. The shipped dialplans are compiled in too
//! ([`builtin`]), so a folder of dialplans is needed only to add or override.

pub mod builtin;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dsp::tone::key_position;
use crate::dsp::voicemail::VoicemailConfig;
use crate::locale::{self, PLACEHOLDER};
use crate::vocab::{DtmfSource, Outcome};

/// A validated dialplan.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialplan {
    /// Name (the file stem), for logs and records.
    pub name: String,
    /// The prompt set (`{locale}` in prompt paths) when the request names
    /// none: one of [`locale::LOCALES`].
    pub locale: &'static str,
    pub prompt: PathBuf,
    pub prompt_repeats: u32,
    pub expect: String,
    pub fraud_code: Option<String>,
    pub wrong_key_prompt: Option<PathBuf>,
    pub max_attempts: u32,
    pub confirmation_prompt: Option<PathBuf>,
    pub fraud_prompt: Option<PathBuf>,
    /// Number matching (a verification with a code): played instead of `prompt`.
    pub code_prompt: PathBuf,
    /// Number matching: played instead of `wrong_key_prompt`.
    pub wrong_code_prompt: Option<PathBuf>,
    pub input_timeout: Duration,
    pub ring_timeout: Duration,
    pub max_duration: Duration,
    /// `None` (the default): silence from the callee ends nothing by itself.
    pub media_timeout: Option<Duration>,
    pub dtmf_sources: Vec<DtmfSource>,
    /// Outcomes after which the engine calls again (while attempts remain).
    pub retry_outcomes: Vec<Outcome>,
    pub retry_after: Duration,
    /// Voicemail detection; `None` when `voicemail_beep_ms` is 0.
    pub voicemail: Option<VoicemailConfig>,
}

/// Why a dialplan was refused.
#[derive(Debug, thiserror::Error)]
pub enum DialplanError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The TOML is malformed or has unknown keys.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "defaults::locale")]
    locale: String,
    prompt: PathBuf,
    #[serde(default = "defaults::prompt_repeats")]
    prompt_repeats: u32,
    #[serde(default = "defaults::expect")]
    expect: String,
    fraud_code: Option<String>,
    wrong_key_prompt: Option<PathBuf>,
    #[serde(default = "defaults::max_attempts")]
    max_attempts: u32,
    confirmation_prompt: Option<PathBuf>,
    fraud_prompt: Option<PathBuf>,
    #[serde(default = "defaults::code_prompt")]
    code_prompt: PathBuf,
    #[serde(default = "defaults::wrong_code_prompt")]
    wrong_code_prompt: Option<PathBuf>,
    #[serde(default = "defaults::input_timeout_ms")]
    input_timeout_ms: u64,
    #[serde(default = "defaults::ring_timeout_ms")]
    ring_timeout_ms: u64,
    #[serde(default = "defaults::max_duration_ms")]
    max_duration_ms: u64,
    #[serde(default = "defaults::media_timeout_ms")]
    media_timeout_ms: u64,
    #[serde(default = "defaults::dtmf_sources")]
    dtmf_sources: Vec<DtmfSource>,
    #[serde(default = "defaults::retry_outcomes")]
    retry_outcomes: Vec<Outcome>,
    #[serde(default = "defaults::retry_after_ms")]
    retry_after_ms: u64,
    #[serde(default = "defaults::voicemail_greeting_ms")]
    voicemail_greeting_ms: u32,
    #[serde(default = "defaults::voicemail_beep_ms")]
    voicemail_beep_ms: u32,
}

mod defaults {
    use std::path::PathBuf;

    use crate::vocab::{DtmfSource, Outcome};
    // Compiled in, so that every dialplan can take a verification with a code.
    pub fn code_prompt() -> PathBuf {
        "builtin:{locale}/enter-code.wav".into()
    }
    pub fn wrong_code_prompt() -> Option<PathBuf> {
        Some("builtin:{locale}/wrong-code.wav".into())
    }
    pub fn locale() -> String {
        "en".into()
    }
    pub fn retry_outcomes() -> Vec<Outcome> {
        vec![Outcome::NoAnswer, Outcome::Busy, Outcome::Unreachable]
    }
    pub fn retry_after_ms() -> u64 {
        60_000
    }
    pub fn prompt_repeats() -> u32 {
        3
    }
    pub fn expect() -> String {
        "#".into()
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn input_timeout_ms() -> u64 {
        5_000
    }
    pub fn ring_timeout_ms() -> u64 {
        45_000
    }
    pub fn max_duration_ms() -> u64 {
        120_000
    }
    pub fn media_timeout_ms() -> u64 {
        0
    }
    // Longer than "hello, who is this?"; shorter than any box's greeting.
    pub fn voicemail_greeting_ms() -> u32 {
        2_500
    }
    pub fn voicemail_beep_ms() -> u32 {
        150
    }
    pub fn dtmf_sources() -> Vec<DtmfSource> {
        vec![DtmfSource::Rfc4733, DtmfSource::Info, DtmfSource::Inband]
    }
}

/// Callees with VAD or DTX stay silent through a whole prompt and input
/// timeout; a shorter media timeout would cut off people who are listening.
const MIN_MEDIA_TIMEOUT_MS: u64 = 60_000;

/// Dialplan files are small; anything larger is a mistake, not a dialplan.
const MAX_FILE_BYTES: u64 = 64 * 1024;

impl Dialplan {
    /// Loads a dialplan file by path, or `NAME` from `folder` (as
    /// `folder/NAME.toml`), or else the compiled-in dialplan `NAME`.
    pub fn find(name_or_path: &str, folder: Option<&Path>) -> Result<Dialplan, DialplanError> {
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.components().count() > 1 {
            return Self::load(path);
        }
        if let Some(file) = folder.map(|f| f.join(format!("{name_or_path}.toml"))).filter(|f| f.exists()) {
            return Self::load(&file);
        }
        Self::builtin(name_or_path).unwrap_or_else(|| {
            let known: Vec<&str> = builtin::dialplan_names().collect();
            let place = folder.map(|f| format!(" in {} or", f.display())).unwrap_or_default();
            Err(DialplanError::Invalid {
                path: name_or_path.to_string(),
                message: format!("no such dialplan{place} compiled in (compiled in: {})", known.join(", ")),
            })
        })
    }

    /// The compiled-in dialplan `name`, parsed; `None` if there is none.
    pub fn builtin(name: &str) -> Option<Result<Dialplan, DialplanError>> {
        let text = builtin::dialplan(name)?;
        Some(Self::parse(name, text, Path::new("")).map_err(|e| e.located(&format!("builtin:{name}"))))
    }

    /// Loads and validates one dialplan file.
    pub fn load(path: &Path) -> Result<Dialplan, DialplanError> {
        let shown = path.display().to_string();
        let io = |source| DialplanError::Io { path: shown.clone(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_FILE_BYTES {
            return Err(DialplanError::Invalid {
                path: shown,
                message: format!("{size} bytes is too large for a dialplan"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::parse(&name, &text, path.parent().unwrap_or(Path::new("."))).map_err(|e| e.located(&shown))
    }

    /// Parses dialplan TOML; relative prompt paths are resolved against `base`.
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<Dialplan, DialplanError> {
        let file: File = toml::from_str(text)
            .map_err(|e| DialplanError::Syntax { path: String::new(), message: e.message().to_string() })?;
        let invalid = |message: String| DialplanError::Invalid { path: String::new(), message };
        let keys = |field: &str, value: &str| -> Result<(), DialplanError> {
            if value.is_empty() || value.len() > 16 || !value.chars().all(|c| key_position(c).is_some()) {
                return Err(invalid(format!("{field} must be 1 to 16 DTMF keys (0-9 * # A-D), not {value:?}")));
            }
            Ok(())
        };
        keys("expect", &file.expect)?;
        if let Some(code) = &file.fraud_code {
            keys("fraud_code", code)?;
            if *code == file.expect {
                return Err(invalid("fraud_code must differ from expect".into()));
            }
        }
        let ranged = |field: &str, value: u64, min: u64, max: u64| -> Result<Duration, DialplanError> {
            if !(min..=max).contains(&value) {
                return Err(invalid(format!("{field} must be between {min} and {max} ms, not {value}")));
            }
            Ok(Duration::from_millis(value))
        };
        if !(1..=10).contains(&file.prompt_repeats) {
            return Err(invalid(format!("prompt_repeats must be 1 to 10, not {}", file.prompt_repeats)));
        }
        if !(1..=10).contains(&file.max_attempts) {
            return Err(invalid(format!("max_attempts must be 1 to 10, not {}", file.max_attempts)));
        }
        if file.dtmf_sources.is_empty() {
            return Err(invalid("dtmf_sources must name at least one of rfc4733, info, inband".into()));
        }
        if file.voicemail_beep_ms > 10_000 || !(500..=60_000).contains(&file.voicemail_greeting_ms) {
            return Err(invalid(format!(
                "voicemail_beep_ms must be 0 (off) to 10000 and voicemail_greeting_ms 500 to 60000, not {} and {}",
                file.voicemail_beep_ms, file.voicemail_greeting_ms
            )));
        }
        let voicemail = (file.voicemail_beep_ms > 0)
            .then_some(VoicemailConfig { greeting_ms: file.voicemail_greeting_ms, beep_ms: file.voicemail_beep_ms });
        let default_locale =
            locale::resolve(&file.locale).map_err(|e| invalid(format!("locale {:?}: {e}", file.locale)))?;
        // A relative path is the dialplan folder's when its default locale's file is there.
        let resolve = |p: &PathBuf| {
            let probe = localized(p, default_locale);
            if p.is_relative() && base.join(probe).exists() { base.join(p) } else { p.clone() }
        };
        Ok(Dialplan {
            name: name.to_string(),
            locale: default_locale,
            prompt: resolve(&file.prompt),
            prompt_repeats: file.prompt_repeats,
            expect: file.expect.to_ascii_uppercase(),
            fraud_code: file.fraud_code.map(|c| c.to_ascii_uppercase()),
            wrong_key_prompt: file.wrong_key_prompt.as_ref().map(resolve),
            max_attempts: file.max_attempts,
            confirmation_prompt: file.confirmation_prompt.as_ref().map(resolve),
            fraud_prompt: file.fraud_prompt.as_ref().map(resolve),
            code_prompt: resolve(&file.code_prompt),
            wrong_code_prompt: file.wrong_code_prompt.as_ref().map(resolve),
            input_timeout: ranged("input_timeout_ms", file.input_timeout_ms, 500, 60_000)?,
            ring_timeout: ranged("ring_timeout_ms", file.ring_timeout_ms, 1_000, 300_000)?,
            max_duration: ranged("max_duration_ms", file.max_duration_ms, 1_000, 3_600_000)?,
            media_timeout: match file.media_timeout_ms {
                0 => None,
                ms => Some(ranged("media_timeout_ms (0 = off)", ms, MIN_MEDIA_TIMEOUT_MS, 3_600_000)?),
            },
            dtmf_sources: file.dtmf_sources,
            retry_outcomes: file.retry_outcomes,
            retry_after: ranged("retry_after_ms", file.retry_after_ms, 1_000, 86_400_000)?,
            voicemail,
        })
    }

    /// The dialplan as TOML that [`Dialplan::parse`] reads back into the same
    /// dialplan (prompt paths as they were resolved), for a call's capture.
    pub fn to_toml(&self) -> Option<String> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let defaults = (defaults::voicemail_greeting_ms(), 0);
        let (voicemail_greeting_ms, voicemail_beep_ms) =
            self.voicemail.map_or(defaults, |v| (v.greeting_ms, v.beep_ms));
        let file = File {
            locale: self.locale.to_string(),
            prompt: self.prompt.clone(),
            prompt_repeats: self.prompt_repeats,
            expect: self.expect.clone(),
            fraud_code: self.fraud_code.clone(),
            wrong_key_prompt: self.wrong_key_prompt.clone(),
            max_attempts: self.max_attempts,
            confirmation_prompt: self.confirmation_prompt.clone(),
            fraud_prompt: self.fraud_prompt.clone(),
            code_prompt: self.code_prompt.clone(),
            wrong_code_prompt: self.wrong_code_prompt.clone(),
            input_timeout_ms: millis(self.input_timeout),
            ring_timeout_ms: millis(self.ring_timeout),
            max_duration_ms: millis(self.max_duration),
            media_timeout_ms: self.media_timeout.map_or(0, millis),
            dtmf_sources: self.dtmf_sources.clone(),
            retry_outcomes: self.retry_outcomes.clone(),
            retry_after_ms: millis(self.retry_after),
            voicemail_greeting_ms,
            voicemail_beep_ms,
        };
        // `None` only for prompt paths that are not UTF-8: TOML strings cannot hold them.
        toml::to_string(&file).ok()
    }

    /// This dialplan speaking `locale` (one of [`locale::LOCALES`]) instead of its default.
    pub fn with_locale(&self, locale: &'static str) -> Dialplan {
        Dialplan { locale, ..self.clone() }
    }

    /// `path` with `{locale}` replaced by this dialplan's locale: the file to play.
    pub fn prompt_path(&self, path: &Path) -> PathBuf {
        localized(path, self.locale)
    }

    /// Whether any prompt path has `{locale}`: whether the locale changes what is played.
    pub fn is_localized(&self) -> bool {
        let mut paths = [Some(&self.prompt), Some(&self.code_prompt)].into_iter().chain([
            self.wrong_key_prompt.as_ref(),
            self.confirmation_prompt.as_ref(),
            self.fraud_prompt.as_ref(),
            self.wrong_code_prompt.as_ref(),
        ]);
        paths.any(|p| p.is_some_and(|p| p.to_string_lossy().contains(PLACEHOLDER)))
    }

    /// Whether digits from `source` are accepted.
    pub fn accepts(&self, source: DtmfSource) -> bool {
        self.dtmf_sources.contains(&source)
    }
}

/// `path` with `{locale}` replaced by `locale`.
fn localized(path: &Path, locale: &str) -> PathBuf {
    path.to_string_lossy().replace(PLACEHOLDER, locale).into()
}

impl DialplanError {
    fn located(self, path: &str) -> Self {
        match self {
            DialplanError::Syntax { message, .. } => DialplanError::Syntax { path: path.into(), message },
            DialplanError::Invalid { message, .. } => DialplanError::Invalid { path: path.into(), message },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Dialplan, DialplanError> {
        Dialplan::parse("t", text, Path::new("."))
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let plan = parse("prompt = \"p.wav\"").unwrap();
        assert_eq!(plan.expect, "#");
        assert_eq!(plan.prompt_repeats, 3);
        assert_eq!(plan.ring_timeout, Duration::from_secs(45));
        assert_eq!(plan.dtmf_sources.len(), 3);
        assert_eq!(plan.fraud_code, None);
    }

    #[test]
    fn refuses_bad_values_with_the_key_named() {
        for (text, needle) in [
            ("prompt = \"p\"\nexpect = \"x\"", "expect"),
            ("prompt = \"p\"\nfraud_code = \"#\"", "differ"),
            ("prompt = \"p\"\nring_timeout_ms = 5", "ring_timeout_ms"),
            ("prompt = \"p\"\nprompt_repeats = 0", "prompt_repeats"),
            ("prompt = \"p\"\ndtmf_sources = []", "dtmf_sources"),
            ("prompt = \"p\"\ndtmf_sources = [\"smoke\"]", "unknown variant"),
            ("prompt = \"p\"\nbogus = 1", "unknown field"),
            ("prompt = \"p\"\nlocale = \"sv\"", "locale \"sv\""),
            ("prompt = \"p\"\nvoicemail_greeting_ms = 10", "voicemail_greeting_ms"),
            ("expect = \"#\"", "prompt"),
            ("prompt = ", "string"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_shipped_dialplan_is_compiled_in_with_its_prompts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let on_disk = Dialplan::find("press-pound", Some(&root.join("dialplans"))).unwrap();
        let compiled_in = Dialplan::find("press-pound", None).unwrap();
        assert_eq!(on_disk, compiled_in, "the file and the compiled-in copy are one");
        assert_eq!(compiled_in.expect, "#");
        assert_eq!(compiled_in.fraud_code.as_deref(), Some("0#"));
    }

    #[test]
    fn the_locale_names_the_prompt_set_of_paths_with_a_placeholder() {
        let plan = parse("locale = \"de-AT\"\nprompt = \"/srv/prompts/{locale}/press-pound.wav\"").unwrap();
        assert_eq!(plan.locale, "de");
        assert!(plan.is_localized());
        assert_eq!(plan.prompt_path(&plan.prompt), Path::new("/srv/prompts/de/press-pound.wav"));
        let french = plan.with_locale("fr");
        assert_eq!(french.prompt_path(&french.code_prompt), Path::new("builtin:fr/enter-code.wav"));
        // Fixed paths play the same files whatever the locale.
        let fixed = parse("prompt = \"p.wav\"\ncode_prompt = \"c.wav\"\nwrong_code_prompt = \"w.wav\"").unwrap();
        assert!(!fixed.is_localized());
        assert_eq!(fixed.locale, "en", "the default");
        let shipped = Dialplan::find("press-pound", None).unwrap();
        assert!(shipped.is_localized() && shipped.locale == "en");
    }

    #[test]
    fn a_dialplan_written_as_toml_reads_back_the_same() {
        let custom = "locale = \"de\"\nprompt = \"/srv/{locale}/p.wav\"\nfraud_code = \"9#\"\nmedia_timeout_ms = 90000\n\
                      voicemail_beep_ms = 0\ndtmf_sources = [\"inband\"]\nretry_outcomes = [\"busy\"]";
        let mut plans = vec![parse(custom).unwrap(), parse("prompt = \"p.wav\"\nexpect = \"*1\"").unwrap()];
        plans.extend(builtin::dialplan_names().map(|name| Dialplan::find(name, None).unwrap().with_locale("ja")));
        for plan in plans {
            let toml = plan.to_toml().unwrap();
            assert_eq!(Dialplan::parse(&plan.name, &toml, Path::new("")).unwrap(), plan, "{toml}");
        }
    }

    #[test]
    fn unknown_dialplans_are_named_errors() {
        let error = Dialplan::find("nope", None).unwrap_err().to_string();
        assert!(error.contains("nope") && error.contains("press-pound"), "{error}");
    }
}
