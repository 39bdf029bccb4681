//! The dialplans compiled into the binary, so that every subcommand works
//! from any folder with nothing installed beside it. They name compiled-in
//! prompts (`media::builtin`) as `builtin:<lang>/<file>.wav`.

/// Compiled-in dialplans: name and TOML text, the same files as `dialplans/`.
const DIALPLANS: &[(&str, &str)] = &[("press-pound", include_str!("../../dialplans/press-pound.toml"))];

/// The TOML text of the compiled-in dialplan `name`.
pub fn dialplan(name: &str) -> Option<&'static str> {
    DIALPLANS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// The names of every compiled-in dialplan.
pub fn dialplan_names() -> impl Iterator<Item = &'static str> {
    DIALPLANS.iter().map(|(name, _)| *name)
}
