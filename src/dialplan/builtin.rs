//! The dialplans and prompts compiled into the binary, so that every
//! subcommand works from any folder with nothing installed beside it.
//!
//! Dialplans name compiled-in prompts as `builtin:<lang>/<file>.wav`; a
//! dialplan file on disk may use those names too, or its own WAV files.

/// The scheme that marks a compiled-in prompt in a dialplan.
pub const PROMPT_SCHEME: &str = "builtin:";

/// Compiled-in dialplans: name and TOML text, the same files as `dialplans/`.
const DIALPLANS: &[(&str, &str)] = &[("press-pound", include_str!("../../dialplans/press-pound.toml"))];

/// Compiled-in prompts by their `builtin:` name (the files in `fixtures/prompts/`).
const PROMPTS: &[(&str, &[u8])] = &[
    ("en/press-pound.wav", include_bytes!("../../fixtures/prompts/en/press-pound.wav")),
    ("en/wrong-key.wav", include_bytes!("../../fixtures/prompts/en/wrong-key.wav")),
    ("en/confirmed.wav", include_bytes!("../../fixtures/prompts/en/confirmed.wav")),
    ("en/reported.wav", include_bytes!("../../fixtures/prompts/en/reported.wav")),
];

/// The TOML text of the compiled-in dialplan `name`.
pub fn dialplan(name: &str) -> Option<&'static str> {
    DIALPLANS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// The names of every compiled-in dialplan.
pub fn dialplan_names() -> impl Iterator<Item = &'static str> {
    DIALPLANS.iter().map(|(name, _)| *name)
}

/// The WAV bytes of a compiled-in prompt, from its full `builtin:…` reference.
/// `None` when `reference` is not a `builtin:` name.
pub fn prompt(reference: &str) -> Option<Result<&'static [u8], String>> {
    let name = reference.strip_prefix(PROMPT_SCHEME)?;
    Some(PROMPTS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes).ok_or_else(|| {
        let known: Vec<&str> = PROMPTS.iter().map(|(n, _)| *n).collect();
        format!("no compiled-in prompt {name:?}; known: {}", known.join(", "))
    }))
}
