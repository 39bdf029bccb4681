//! The PASSporT's two JSON objects in the one byte form RFC 8225 §9 allows, and the telephone
//! numbers inside them in the form RFC 8224 §8.3 signs.
//!
//! §9 asks for keys in lexicographic order at every level, no whitespace and integers as
//! integers: the verifier rebuilds these bytes from the SIP message, so any other serialisation
//! of the same claims fails verification. The structs below declare their fields in that order
//! and serde writes fields in declaration order, whatever features `serde_json` was built with.

use serde::Serialize;

/// The longest telephone number signed: E.164 allows 15 digits.
const MAX_TN_DIGITS: usize = 15;

/// A telephone number in the canonical form of RFC 8224 §8.3: digits only, the leading `+` and
/// the visual separators of RFC 3966 (`-`, `.`, `(`, `)`) removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tn(String);

impl Tn {
    /// Reads a bare number (`+1 (415) 555-0100` is not one: spaces are not RFC 3966 separators;
    /// `+1-415-555-0100` is), or the user part of a `sip:`, `sips:` or `tel:` URI, whose
    /// parameters (`;npdi`, `;user=phone`) are not part of the number. `None` when what is left
    /// is not 1 to 15 digits: a name such as `pound`, `*67`, or a URI without a user part.
    pub fn canonical(text: &str) -> Option<Tn> {
        let text = text.trim();
        let text = text.strip_prefix('<').and_then(|t| t.strip_suffix('>')).unwrap_or(text);
        let number = match text.split_once(':') {
            Some((scheme, rest)) if ["sip", "sips"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) => {
                rest.split_once('@')?.0
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tel") => rest,
            Some(_) => return None,
            None => text,
        };
        let number = number.split([';', '?']).next().unwrap_or_default();
        let number = number.strip_prefix('+').unwrap_or(number);
        let digits: String = number.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')')).collect();
        let valid = (1..=MAX_TN_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        valid.then_some(Tn(digits))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The JOSE header of a SHAKEN PASSporT (RFC 8588 §3).
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    ppt: &'static str,
    typ: &'static str,
    x5u: &'a str,
}

/// The claims of a SHAKEN PASSporT (RFC 8225 §5, RFC 8588 §4).
#[derive(Serialize)]
struct Claims<'a> {
    attest: &'a str,
    dest: Dest<'a>,
    iat: u64,
    orig: Orig<'a>,
    origid: &'a str,
}

/// `dest`: an array, as RFC 8225 §5.2.1 allows several destinations.
#[derive(Serialize)]
struct Dest<'a> {
    tn: [&'a str; 1],
}

#[derive(Serialize)]
struct Orig<'a> {
    tn: &'a str,
}

/// What one PASSporT says.
#[derive(Debug, Clone, Copy)]
pub struct Passport<'a> {
    /// `https://…` where the signing certificate is.
    pub x5u: &'a str,
    /// `A`, `B` or `C`.
    pub attest: &'a str,
    pub orig: &'a Tn,
    pub dest: &'a Tn,
    /// Unix seconds when it was signed.
    pub iat: u64,
    /// The call's UUID (RFC 8588 §4).
    pub origid: &'a str,
}

impl Passport<'_> {
    /// The header's canonical JSON.
    pub fn header_json(&self) -> String {
        let header = Header { alg: "ES256", ppt: "shaken", typ: "passport", x5u: self.x5u };
        serde_json::to_string(&header).expect("strings and integers serialise")
    }

    /// The claims' canonical JSON.
    pub fn claims_json(&self) -> String {
        let claims = Claims {
            attest: self.attest,
            dest: Dest { tn: [self.dest.as_str()] },
            iat: self.iat,
            orig: Orig { tn: self.orig.as_str() },
            origid: self.origid,
        };
        serde_json::to_string(&claims).expect("strings and integers serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_canonicalised_as_rfc_8224_says() {
        for (text, digits) in [
            ("+12155550123", "12155550123"),
            ("12155550123", "12155550123"),
            ("+1-215-555-0123", "12155550123"),
            ("+1.(215).555.0123", "12155550123"),
            ("sip:+12155550123@trunk.example.net;user=phone", "12155550123"),
            ("<sips:+12155550123;npdi;rn=+12155550000@192.0.2.1:5061>", "12155550123"),
            ("tel:+1-215-555-0123;ext=7", "12155550123"),
            ("SIP:2155550123@h", "2155550123"),
        ] {
            assert_eq!(Tn::canonical(text).map(|tn| tn.0), Some(digits.to_string()), "{text}");
        }
        for text in [
            "pound",
            "",
            "+",
            "*67",
            "#1",
            "+1 215 555 0123",
            "sip:127.0.0.1",
            "sip:bob@example.com",
            "http:+1215@x",
            "+1234567890123456",
            "12a4",
            "１２３",
        ] {
            assert_eq!(Tn::canonical(text), None, "{text}");
        }
    }

    #[test]
    fn the_json_is_the_canonical_form_of_rfc_8225_section_9() {
        let (orig, dest) = (Tn::canonical("+12155550100").unwrap(), Tn::canonical("+1-215-555-0123").unwrap());
        let passport = Passport {
            x5u: "https://cert.example.org/passport.pem",
            attest: "A",
            orig: &orig,
            dest: &dest,
            iat: 1_443_208_345,
            origid: "123e4567-e89b-12d3-a456-426655440000",
        };
        assert_eq!(
            passport.header_json(),
            r#"{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/passport.pem"}"#
        );
        assert_eq!(
            passport.claims_json(),
            concat!(
                r#"{"attest":"A","dest":{"tn":["12155550123"]},"iat":1443208345,"#,
                r#""orig":{"tn":"12155550100"},"origid":"123e4567-e89b-12d3-a456-426655440000"}"#
            )
        );
        // The order is lexicographic whatever the declaration says: checked independently.
        for json in [passport.header_json(), passport.claims_json()] {
            let keys = top_level_keys(&json);
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "{json}");
        }
    }

    /// The keys of a flat-enough JSON object, in the order written.
    fn top_level_keys(json: &str) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        let mut positions: Vec<(usize, String)> =
            keys.into_iter().map(|k| (json.find(&format!("\"{k}\":")).unwrap(), k)).collect();
        positions.sort();
        positions.into_iter().map(|(_, k)| k).collect()
    }
}
