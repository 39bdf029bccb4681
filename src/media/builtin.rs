//! The prompts compiled into the binary. Dialplans name them as
//! `builtin:<lang>/<file>.wav`; a dialplan file on disk may use those names
//! too, or its own WAV files.

/// The scheme that marks a compiled-in prompt in a dialplan.
pub const PROMPT_SCHEME: &str = "builtin:";

/// Compiled-in prompts by their `builtin:` name (the files in `fixtures/prompts/`).
const PROMPTS: &[(&str, &[u8])] = &[
    ("en/press-pound.wav", include_bytes!("../../fixtures/prompts/en/press-pound.wav")),
    ("en/wrong-key.wav", include_bytes!("../../fixtures/prompts/en/wrong-key.wav")),
    ("en/confirmed.wav", include_bytes!("../../fixtures/prompts/en/confirmed.wav")),
    ("en/reported.wav", include_bytes!("../../fixtures/prompts/en/reported.wav")),
    ("en/enter-code.wav", include_bytes!("../../fixtures/prompts/en/enter-code.wav")),
    ("en/wrong-code.wav", include_bytes!("../../fixtures/prompts/en/wrong-code.wav")),
];

/// The WAV bytes of a compiled-in prompt, from its full `builtin:…` reference.
/// `None` when `reference` is not a `builtin:` name.
pub fn prompt(reference: &str) -> Option<Result<&'static [u8], String>> {
    let name = reference.strip_prefix(PROMPT_SCHEME)?;
    Some(PROMPTS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes).ok_or_else(|| {
        let known: Vec<&str> = PROMPTS.iter().map(|(n, _)| *n).collect();
        format!("no compiled-in prompt {name:?}; known: {}", known.join(", "))
    }))
}
