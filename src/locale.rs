//! Prompt locales: which prompt set a BCP 47 language tag picks.
//!
//! pound ships one compiled-in prompt set per language (`fixtures/prompts/<lang>/`).
//! A tag picks a set by its primary language subtag, case-insensitively, so
//! `de-AT` plays German and `zh-Hans-CN` Chinese; a region or script that has
//! no set of its own falls back to its language rather than being refused.

/// The languages with a compiled-in prompt set, `en` first.
pub const LOCALES: [&str; 10] = ["en", "de", "fr", "es", "pt", "it", "nl", "pl", "ja", "zh"];

/// What a dialplan's prompt paths contain where the locale goes
/// (`builtin:{locale}/press-pound.wav`, `/srv/prompts/{locale}/press-pound.wav`).
pub const PLACEHOLDER: &str = "{locale}";

/// The longest tag looked at: BCP 47 tags in practice are far shorter, and
/// anything longer is refused without being scanned.
const MAX_TAG_LEN: usize = 64;

/// Why a locale was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocaleError {
    /// Not a BCP 47 tag, or one whose language has no prompt set.
    #[error("locale must be a BCP 47 tag whose language is one of {}", LOCALES.join(", "))]
    Unsupported,
}

/// The shipped locale `tag` asks for.
pub fn resolve(tag: &str) -> Result<&'static str, LocaleError> {
    if tag.len() > MAX_TAG_LEN {
        return Err(LocaleError::Unsupported);
    }
    let mut subtags = tag.split('-');
    let language = subtags.next().unwrap_or_default();
    // Every subtag is 1 to 8 ASCII letters or digits (RFC 5646 §2.1); `de_AT`
    // or `de-` are not tags, and guessing what they meant hides a client bug.
    let well_formed = |s: &str| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !language.bytes().all(|b| b.is_ascii_alphabetic()) || !well_formed(language) || !subtags.all(well_formed) {
        return Err(LocaleError::Unsupported);
    }
    LOCALES.iter().copied().find(|l| l.eq_ignore_ascii_case(language)).ok_or(LocaleError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_primary_language_case_insensitively() {
        for (tag, want) in [("de", "de"), ("DE", "de"), ("de-AT", "de"), ("zh-Hans-CN", "zh"), ("pt-BR", "pt")] {
            assert_eq!(resolve(tag), Ok(want), "{tag}");
        }
        for locale in LOCALES {
            assert_eq!(resolve(locale), Ok(locale));
        }
    }

    #[test]
    fn refuses_other_languages_and_malformed_tags() {
        for tag in ["", "xx", "sv", "de_AT", "de-", "-de", "d e", "dé", "de-AT-toolongsubtag", "1de", &"a".repeat(200)]
        {
            assert_eq!(resolve(tag), Err(LocaleError::Unsupported), "{tag:?}");
        }
    }
}
