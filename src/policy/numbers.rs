//! Which numbers may be called: an allow-list of countries, a deny-list of
//! prefixes (built in, extendable) and the number types no verification
//! needs, from the phonenumber crate's metadata.

use std::fmt;

use phonenumber::Type;
use phonenumber::metadata::DATABASE;

/// The built-in deny-list: one `+digits` prefix per line, `#` comments.
const BUILT_IN_DENY_LIST: &str = include_str!("deny_prefixes.txt");

/// Countries a node accepts when its configuration names none: the ones the
/// project is tested with. Every other country is opt-in, so a fresh node
/// cannot be pointed at the Caribbean parts of +1 or at any other
/// high-cost destination.
pub const DEFAULT_ALLOWED_COUNTRIES: [&str; 3] = ["US", "CA", "GB"];

/// Number types that reach a service or a tariff, never one person's phone
/// (premium rate and shared cost pay the called party; the others forward to
/// wherever their owner points them).
const REFUSED_TYPES: [(Type, &str); 6] = [
    (Type::PremiumRate, "premium rate"),
    (Type::SharedCost, "shared cost"),
    (Type::Uan, "universal access (company) number"),
    (Type::PersonalNumber, "personal (forwarding) number"),
    (Type::Pager, "pager"),
    (Type::Voicemail, "voicemail access number"),
];

/// Who may be called.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRules {
    /// Region codes as the phonenumber metadata names them (ISO 3166
    /// alpha-2 such as `US`, `001` for the global services like +800 and
    /// +882); empty accepts every region.
    pub allowed_countries: Vec<String>,
    /// E.164 country calling codes; empty accepts every code.
    pub allowed_country_codes: Vec<u16>,
    /// Refused besides the built-in deny-list.
    pub deny_prefixes: Vec<String>,
    /// Numbers starting with one of these skip the deny-lists and the type
    /// check (not the country lists): how an operator relaxes them.
    pub allow_prefixes: Vec<String>,
}

impl Default for NumberRules {
    fn default() -> Self {
        NumberRules {
            allowed_countries: DEFAULT_ALLOWED_COUNTRIES.iter().map(|c| (*c).to_string()).collect(),
            allowed_country_codes: Vec::new(),
            deny_prefixes: Vec::new(),
            allow_prefixes: Vec::new(),
        }
    }
}

/// Why a number may not be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberRefusal {
    /// Not a valid E.164 number (the API refuses these earlier; the engine
    /// can still meet one in an old or edited row).
    Invalid,
    /// Its country is not on the allow-lists.
    CountryNotAllowed { country: String, code: u16 },
    /// It starts with a denied prefix.
    PrefixDenied { prefix: String },
    /// Its type is one no verification needs.
    TypeNotAllowed { kind: &'static str },
}

impl NumberRefusal {
    /// The API error code, also the `reason` label of the refusal metric.
    pub fn code(&self) -> &'static str {
        match self {
            NumberRefusal::Invalid => "invalid_number",
            NumberRefusal::CountryNotAllowed { .. } => "country_not_allowed",
            NumberRefusal::PrefixDenied { .. } => "prefix_denied",
            NumberRefusal::TypeNotAllowed { .. } => "number_type_not_allowed",
        }
    }
}

impl fmt::Display for NumberRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberRefusal::Invalid => write!(f, "not a valid E.164 number"),
            NumberRefusal::CountryNotAllowed { country, code } => {
                write!(f, "numbers in {country} (country code +{code}) are not allowed")
            }
            NumberRefusal::PrefixDenied { prefix } => write!(f, "numbers starting with {prefix} are not allowed"),
            NumberRefusal::TypeNotAllowed { kind } => write!(f, "{kind} numbers are not allowed"),
        }
    }
}

/// What the metadata says about a valid number.
struct Classified {
    region: String,
    code: u16,
    kind: Type,
}

/// Classifies an E.164 number; `None` when it is not a valid one.
fn classify(e164: &str) -> Option<Classified> {
    let digits = e164.strip_prefix('+')?;
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The parser has panicked on odd input before (see `api::request`); a
    // panic here must not take the engine's task down with it.
    std::panic::catch_unwind(|| {
        let number = phonenumber::parse(None, e164).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        let region = number.metadata(&DATABASE)?.id().to_string();
        Some(Classified { region, code: number.code().value(), kind: number.number_type(&DATABASE) })
    })
    .ok()
    .flatten()
}

/// The built-in deny-list's prefixes.
pub fn built_in_deny_list() -> impl Iterator<Item = &'static str> {
    BUILT_IN_DENY_LIST
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| line.split_whitespace().next())
}

/// Whether `prefix` is `+` and 1 to 15 digits (how config prefixes are checked).
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix('+')
        .is_some_and(|digits| (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
}

impl NumberRules {
    /// Checks an E.164 number; on success returns its region (the
    /// destination country the velocity limits count).
    pub fn check(&self, e164: &str) -> Result<String, NumberRefusal> {
        let number = classify(e164).ok_or(NumberRefusal::Invalid)?;
        let region_ok = self.allowed_countries.is_empty() || self.allowed_countries.contains(&number.region);
        let code_ok = self.allowed_country_codes.is_empty() || self.allowed_country_codes.contains(&number.code);
        if !(region_ok && code_ok) {
            return Err(NumberRefusal::CountryNotAllowed { country: number.region, code: number.code });
        }
        if self.allow_prefixes.iter().any(|prefix| e164.starts_with(prefix.as_str())) {
            return Ok(number.region);
        }
        let built_in: Option<&str> = built_in_deny_list().find(|prefix| e164.starts_with(prefix));
        let denied = built_in.or_else(|| self.deny_prefixes.iter().map(String::as_str).find(|p| e164.starts_with(p)));
        if let Some(prefix) = denied {
            return Err(NumberRefusal::PrefixDenied { prefix: prefix.to_string() });
        }
        if let Some((_, kind)) = REFUSED_TYPES.iter().find(|(kind, _)| *kind == number.kind) {
            return Err(NumberRefusal::TypeNotAllowed { kind });
        }
        Ok(number.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_classified_exactly_when_the_library_calls_it_valid() {
        // Deterministic numbers across country codes and lengths, valid and
        // not. Validity cannot be read off the type alone (which would save
        // a lookup): the library reads the national number with its leading
        // zeros for one and without for the other, and +104354598972 has a
        // type but is not valid.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let codes = ["1", "44", "49", "33", "81", "86", "7", "61", "55", "234", "353", "880", "998"];
        let (mut valid, mut checked) = (0, 0);
        for _ in 0..1500 {
            let mut e164 = format!("+{}", codes[next(codes.len() as u64) as usize]);
            for _ in 0..(6 + next(7)) {
                e164.push(char::from(b'0' + next(10) as u8));
            }
            let library = phonenumber::parse(None, &e164).is_ok_and(|n| phonenumber::is_valid(&n));
            assert_eq!(classify(&e164).is_some(), library, "{e164}");
            valid += usize::from(library);
            checked += 1;
        }
        assert!(valid > 50 && valid < checked - 50, "both kinds covered: {valid} valid of {checked}");
    }

    fn open() -> NumberRules {
        NumberRules { allowed_countries: Vec::new(), ..NumberRules::default() }
    }

    #[test]
    fn the_built_in_deny_list_is_well_formed() {
        let prefixes: Vec<&str> = built_in_deny_list().collect();
        assert!(prefixes.len() >= 10, "{prefixes:?}");
        for prefix in &prefixes {
            assert!(is_valid_prefix(prefix), "{prefix:?}");
        }
        for network in ["+800", "+808", "+870", "+881", "+882", "+883", "+979"] {
            assert!(prefixes.contains(&network), "{network} missing");
        }
    }

    #[test]
    fn every_country_is_refused_but_the_allowed_ones() {
        let rules = NumberRules::default();
        assert_eq!(rules.check("+14155550100"), Ok("US".to_string()));
        assert_eq!(rules.check("+442071234567"), Ok("GB".to_string()));
        for (phone, country) in
            [("+18762345678", "JM"), ("+18092345678", "DO"), ("+5351234567", "CU"), ("+33123456789", "FR")]
        {
            match rules.check(phone) {
                Err(NumberRefusal::CountryNotAllowed { country: c, .. }) => assert_eq!(c, country, "{phone}"),
                other => panic!("{phone}: {other:?}"),
            }
        }
        let codes = NumberRules { allowed_country_codes: vec![44], ..NumberRules::default() };
        assert_eq!(codes.check("+14155550100").unwrap_err().code(), "country_not_allowed");
    }

    #[test]
    fn the_deny_list_refuses_international_networks_even_when_every_country_is_allowed() {
        let rules = open();
        for phone in ["+8821612345678", "+881612345678", "+870773123456", "+883510001234567", "+80012345678"] {
            assert!(matches!(rules.check(phone), Err(NumberRefusal::PrefixDenied { .. })), "{phone}");
        }
        let extended = NumberRules { deny_prefixes: vec!["+44207".into()], ..open() };
        assert_eq!(
            extended.check("+442071234567"),
            Err(NumberRefusal::PrefixDenied { prefix: "+44207".into() }),
            "an operator's own prefix"
        );
    }

    #[test]
    fn types_no_verification_needs_are_refused_by_metadata() {
        let rules = NumberRules { allowed_countries: Vec::new(), ..NumberRules::default() };
        // Not on the deny-list: only the metadata's type refuses these.
        for (phone, kind) in [
            ("+447012345678", "personal (forwarding) number"),
            ("+447623456789", "pager"),
            ("+15005550100", "personal (forwarding) number"),
            ("+448432345678", "premium rate"),
        ] {
            assert_eq!(rules.check(phone), Err(NumberRefusal::TypeNotAllowed { kind }), "{phone}");
        }
    }

    #[test]
    fn allow_prefixes_relax_the_deny_lists_and_types_but_not_countries() {
        let rules = NumberRules { allow_prefixes: vec!["+4470".into(), "+1900".into()], ..NumberRules::default() };
        assert!(rules.check("+447012345678").is_ok());
        assert!(rules.check("+19002345678").is_ok());
        assert!(rules.check("+449012345678").is_err());
        let rules = NumberRules { allow_prefixes: vec!["+1876".into()], ..NumberRules::default() };
        assert_eq!(rules.check("+18762345678").unwrap_err().code(), "country_not_allowed");
    }

    #[test]
    fn invalid_and_odd_input_is_refused_without_panicking() {
        let rules = open();
        for phone in ["", "+", "14155550100", "+1415555", "+1 415 555 0100", "+99912345678", "+1234567890123456"] {
            assert_eq!(rules.check(phone), Err(NumberRefusal::Invalid), "{phone:?}");
        }
        assert!(is_valid_prefix("+1"));
        for bad in ["", "+", "1900", "+19a", "+1234567890123456"] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
    }
}
