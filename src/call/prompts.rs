//! A dialplan's prompts, loaded once and shared by every call that uses it.

use std::sync::Arc;

use crate::dialplan::Dialplan;
use crate::media::prompt::{Prompt, PromptError};

/// The dialplan's prompts, loaded once and shared by every call.
#[derive(Debug)]
pub struct Prompts {
    /// The locale the prompts were loaded in (one of [`crate::locale::LOCALES`]).
    pub locale: &'static str,
    pub main: Arc<Prompt>,
    pub wrong_key: Option<Arc<Prompt>>,
    pub confirmation: Option<Arc<Prompt>>,
    pub fraud: Option<Arc<Prompt>>,
    /// Number matching: asks for the code, then `#`.
    pub code: Arc<Prompt>,
    /// Number matching: after a wrong code.
    pub wrong_code: Option<Arc<Prompt>>,
}

impl Prompts {
    /// Loads every prompt a dialplan names, in its locale.
    pub fn load(plan: &Dialplan) -> Result<Prompts, PromptError> {
        let load = |path: &std::path::Path| Prompt::load(&plan.prompt_path(path)).map(Arc::new);
        let optional = |path: &Option<std::path::PathBuf>| path.as_deref().map(load).transpose();
        Ok(Prompts {
            locale: plan.locale,
            main: load(&plan.prompt)?,
            wrong_key: optional(&plan.wrong_key_prompt)?,
            confirmation: optional(&plan.confirmation_prompt)?,
            fraud: optional(&plan.fraud_prompt)?,
            code: load(&plan.code_prompt)?,
            wrong_code: optional(&plan.wrong_code_prompt)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dialplan_loads_every_compiled_in_prompt() {
        let compiled_in = Dialplan::find("press-pound", None).unwrap();
        let prompts = Prompts::load(&compiled_in).expect("every compiled-in prompt loads");
        assert!(prompts.confirmation.is_some() && prompts.fraud.is_some() && prompts.wrong_key.is_some());
        assert!(prompts.wrong_code.is_some());
    }

    #[test]
    fn a_missing_builtin_prompt_is_a_named_error() {
        let plan = Dialplan::parse("t", "prompt = \"builtin:en/missing.wav\"", std::path::Path::new(".")).unwrap();
        let error = Prompts::load(&plan).unwrap_err().to_string();
        assert!(error.contains("en/missing.wav") && error.contains("en/press-pound.wav"), "{error}");
    }
}
