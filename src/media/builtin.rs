//! The prompts compiled into the binary. Dialplans name them as
//! `builtin:<lang>/<file>.wav`; a dialplan file on disk may use those names
//! too, or its own WAV files.

/// The scheme that marks a compiled-in prompt in a dialplan.
pub const PROMPT_SCHEME: &str = "builtin:";

/// One locale's six prompts, named `<lang>/<file>.wav`.
macro_rules! prompt_set {
    ($lang:literal) => {
        [
            prompt_set!($lang, "press-pound.wav"),
            prompt_set!($lang, "wrong-key.wav"),
            prompt_set!($lang, "confirmed.wav"),
            prompt_set!($lang, "reported.wav"),
            prompt_set!($lang, "enter-code.wav"),
            prompt_set!($lang, "wrong-code.wav"),
        ]
    };
    ($lang:literal, $file:literal) => {
        (concat!($lang, "/", $file), include_bytes!(concat!("../../fixtures/prompts/", $lang, "/", $file)).as_slice())
    };
}

/// Compiled-in prompts by their `builtin:` name (the files in `fixtures/prompts/`),
/// one set per locale of [`crate::locale::LOCALES`], in its order.
const PROMPT_SETS: [[(&str, &[u8]); 6]; 10] = [
    prompt_set!("en"),
    prompt_set!("de"),
    prompt_set!("fr"),
    prompt_set!("es"),
    prompt_set!("pt"),
    prompt_set!("it"),
    prompt_set!("nl"),
    prompt_set!("pl"),
    prompt_set!("ja"),
    prompt_set!("zh"),
];
const PROMPTS: &[(&str, &[u8])] = PROMPT_SETS.as_flattened();

/// The WAV bytes of a compiled-in prompt, from its full `builtin:…` reference.
/// `None` when `reference` is not a `builtin:` name.
pub fn prompt(reference: &str) -> Option<Result<&'static [u8], String>> {
    let name = reference.strip_prefix(PROMPT_SCHEME)?;
    Some(PROMPTS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes).ok_or_else(|| {
        let known: Vec<&str> = PROMPTS.iter().map(|(n, _)| *n).collect();
        format!("no compiled-in prompt {name:?}; known: {}", known.join(", "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_its_compiled_in_set() {
        for (locale, set) in crate::locale::LOCALES.iter().zip(PROMPT_SETS) {
            assert!(set.iter().all(|(name, _)| name.starts_with(&format!("{locale}/"))), "{locale}");
        }
    }
}
