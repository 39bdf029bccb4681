//! Reading and validating `POST /v1/verifications`: the body, the phone
//! number, the callback URL and the `Idempotency-Key` header.
//!
//! Everything here is pure, so the rules are unit-tested without a server.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::ApiConfig;
use super::error::ApiError;
use super::ssrf::TargetPolicy;
use crate::code::{Code, CodeError, CodeLength};

/// The longest `user` accepted: an e-mail address is at most 254 octets
/// (RFC 5321), and other account ids are shorter.
pub const MAX_USER_LEN: usize = 256;

/// The longest `callback_url` accepted.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// E.164 allows at most 15 digits, country code included.
const MAX_E164_DIGITS: usize = 15;

/// A create request that passed every check that needs no store.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// E.164, as the phonenumber crate formats it.
    pub phone: String,
    /// Who the phone is registered for once verified.
    pub user: String,
    /// A configured dialplan: the requested one, or the default.
    pub dialplan: String,
    /// Where the signed webhook goes, if anywhere.
    pub callback_url: Option<String>,
    /// Number matching: `code` or `code_length`, if either was given.
    pub code: Option<CodeChoice>,
    /// The shipped locale the `locale` tag picked; `None`: the dialplan's.
    pub locale: Option<&'static str>,
}

/// How the request asked for number matching.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeChoice {
    /// `"code"`: the digits the registration page shows.
    Given(Code),
    /// `"code_length"`: pound draws a code of this many digits.
    Drawn(CodeLength),
}

impl CodeChoice {
    /// The code the call will ask for: the given one, or a fresh one from the CSPRNG.
    pub fn into_code(self) -> Code {
        match self {
            CodeChoice::Given(code) => code,
            CodeChoice::Drawn(length) => Code::draw(length),
        }
    }
}

impl CreateRequest {
    /// SHA-256 (hex) of the request's canonical JSON: keys sorted, no
    /// whitespace, values normalized (phone in E.164, default dialplan
    /// filled in), so a retry that spells the same request differently is
    /// still the same request for `Idempotency-Key`.
    pub fn hash(&self) -> String {
        // Keys are inserted in sorted order so the output is the same whether
        // or not serde_json's `preserve_order` feature is on in the build.
        let mut canonical = Map::new();
        canonical.insert("callback_url".into(), json!(self.callback_url));
        // Only when given, so that requests without one hash as they always did.
        match &self.code {
            Some(CodeChoice::Given(code)) => canonical.insert("code".into(), json!(code.digits())),
            Some(CodeChoice::Drawn(length)) => canonical.insert("code_length".into(), json!(length.get())),
            None => None,
        };
        canonical.insert("dialplan".into(), json!(self.dialplan));
        if let Some(locale) = self.locale {
            canonical.insert("locale".into(), json!(locale));
        }
        canonical.insert("phone".into(), json!(self.phone));
        canonical.insert("user".into(), json!(self.user));
        hex::encode(Sha256::digest(Value::Object(canonical).to_string().as_bytes()))
    }
}

/// Parses and validates the body of `POST /v1/verifications`.
pub fn parse_create(body: &[u8], config: &ApiConfig) -> Result<CreateRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {err}"))
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_request("the body must be a JSON object"));
    };
    // Unknown fields are refused rather than ignored: a misspelt
    // `callbackUrl` would otherwise silently lose the webhook.
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid_request(format!("unknown field {unknown:?}")));
    }
    let code = code_choice(&fields)?;
    let locale = optional_string(&fields, "locale")?
        .map(|tag| {
            crate::locale::resolve(tag).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "unsupported_locale", format!("{e}, not {:?}", shown(tag)))
            })
        })
        .transpose()?;
    let phone = required_string(&fields, "phone")?;
    let user = required_string(&fields, "user")?;
    let dialplan = optional_string(&fields, "dialplan")?;
    let callback_url = optional_string(&fields, "callback_url")?;

    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(format!(
            "user must be 1 to {MAX_USER_LEN} bytes without control characters"
        )));
    }
    let (phone, country_code) = parse_phone(phone)?;
    let allowed = &config.policy.allowed_country_codes;
    if !allowed.is_empty() && !allowed.contains(&country_code) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "country_not_allowed",
            format!("numbers with country code +{country_code} are not allowed"),
        ));
    }
    let dialplan = match dialplan {
        None => config.default_dialplan.clone(),
        Some(name) if config.dialplans.iter().any(|d| d == name) => name.to_string(),
        Some(name) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_dialplan",
                format!("dialplan {name:?} is not configured; known: {}", config.dialplans.join(", ")),
            ));
        }
    };
    if let Some(url) = callback_url {
        check_callback_url(url, &config.webhook_targets)?;
    }
    Ok(CreateRequest {
        phone,
        user: user.to_string(),
        dialplan,
        callback_url: callback_url.map(str::to_string),
        code,
        locale,
    })
}

/// The fields a create request may have.
const FIELDS: [&str; 7] = ["phone", "user", "dialplan", "callback_url", "code", "code_length", "locale"];

/// `code` (a string of 2 to 8 digits) or `code_length` (2 to 8), not both.
/// The messages never repeat the value: it is a secret.
fn code_choice(fields: &Map<String, Value>) -> Result<Option<CodeChoice>, ApiError> {
    let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", message);
    let given = |name: &str| fields.get(name).filter(|value| !value.is_null());
    match (given("code"), given("code_length")) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid("give code or code_length, not both".into())),
        (Some(Value::String(text)), None) => {
            Code::parse(text).map(|code| Some(CodeChoice::Given(code))).map_err(|e| invalid(e.to_string()))
        }
        (Some(_), None) => Err(invalid("code must be a string of digits (leading zeros count)".into())),
        (None, Some(length)) => length
            .as_u64()
            .ok_or(CodeError::Length)
            .and_then(CodeLength::new)
            .map(|length| Some(CodeChoice::Drawn(length)))
            .map_err(|e| invalid(format!("{e}, a whole number"))),
    }
}

fn required_string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(ApiError::invalid_request(format!("{name} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid_request(format!("{name} must be a string"))),
    }
}

/// `text` for an error message: whole when short, else its start.
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn optional_string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_request(format!("{name} must be a string"))),
    }
}

fn invalid_number(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_number", message)
}

/// Validates an E.164 number and returns it formatted E.164 with its country
/// calling code. A leading `+` is required (without it the country is
/// guesswork); spaces, dots, dashes and parentheses between digits are
/// accepted and dropped.
pub fn parse_phone(raw: &str) -> Result<(String, u16), ApiError> {
    const FORMAT: &str = "phone must be an E.164 number with a leading +, e.g. +14155550100";
    let Some(rest) = raw.strip_prefix('+') else {
        return Err(invalid_number(FORMAT));
    };
    let mut digits = String::with_capacity(MAX_E164_DIGITS + 1);
    digits.push('+');
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(invalid_number(FORMAT)),
        }
        if digits.len() > MAX_E164_DIGITS + 1 {
            return Err(invalid_number("phone has more than the 15 digits E.164 allows"));
        }
    }
    if digits.len() < 3 {
        return Err(invalid_number(FORMAT));
    }
    // Only `+` and digits reach the parser, which has panicked on malformed
    // input before (rust-phonenumber #32, #43); catching a panic as well
    // keeps a parser bug a 422 rather than a dropped connection.
    let parsed = std::panic::catch_unwind(|| {
        let number = phonenumber::parse(None, &digits).ok()?;
        phonenumber::is_valid(&number)
            .then(|| (number.format().mode(phonenumber::Mode::E164).to_string(), number.code().value()))
    });
    match parsed {
        Ok(Some(valid)) => Ok(valid),
        Ok(None) => Err(invalid_number("phone is not a valid number for its country")),
        Err(_) => {
            tracing::error!(phone = %crate::mask::mask_phone(&digits), "the phone number parser panicked");
            Err(invalid_number("phone is not a valid number for its country"))
        }
    }
}

/// A callback URL must be absolute `http://` or `https://` with a host, and
/// at most [`MAX_CALLBACK_URL_LEN`] bytes, and must pass the webhook
/// destination guard as far as the URL alone shows ([`super::ssrf::check_url`]).
fn check_callback_url(url: &str, targets: &TargetPolicy) -> Result<(), ApiError> {
    let invalid =
        |why: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_callback_url", format!("callback_url {why}"));
    if url.len() > MAX_CALLBACK_URL_LEN {
        return Err(invalid(&format!("is longer than {MAX_CALLBACK_URL_LEN} bytes")));
    }
    // The URL parser forgives (it trims spaces and reads `https:///x` as
    // host `x`); what is stored is what the client sent, so the text itself
    // must already be a plain absolute URL.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain spaces or control characters"));
    }
    let rest = ["http://", "https://"].into_iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(scheme))
            .and_then(|_| url.get(scheme.len()..))
    });
    let Some(rest) = rest else {
        return Err(invalid("must start with http:// or https://"));
    };
    if rest.starts_with(['/', '\\']) {
        return Err(invalid("has no host"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|err| invalid(&format!("is not a valid URL: {err}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    super::ssrf::check_url(&parsed, targets).map_err(|why| invalid(&why))
}

/// The `Idempotency-Key` header: absent, or 1 to 255 printable ASCII
/// characters (a UUID fits; so does any client's own request id).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid_request(format!(
            "Idempotency-Key must be one header of 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
        ))
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid());
    }
    // Printable ASCII is valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config() -> ApiConfig {
        ApiConfig {
            dialplans: vec!["press-pound".into(), "fraud".into()],
            default_dialplan: "press-pound".into(),
            ..ApiConfig::default()
        }
    }

    fn code(result: Result<CreateRequest, ApiError>) -> (StatusCode, &'static str, String) {
        let err = result.expect_err("should be refused");
        (err.status, err.code, err.message)
    }

    #[test]
    fn accepts_a_minimal_request_and_fills_in_the_default_dialplan() {
        let req = parse_create(br#"{"phone":"+1 (415) 555-0100","user":"alice@contoso.com"}"#, &config()).unwrap();
        assert_eq!(req.phone, "+14155550100");
        assert_eq!(req.dialplan, "press-pound");
        assert_eq!(req.callback_url, None);
    }

    #[test]
    fn refuses_malformed_bodies_naming_the_field() {
        let cfg = config();
        assert_eq!(code(parse_create(b"{", &cfg)).1, "invalid_json");
        assert_eq!(code(parse_create(b"", &cfg)).1, "invalid_json");
        assert_eq!(code(parse_create(b"[1]", &cfg)).1, "invalid_request");
        let (status, c, message) = code(parse_create(br#"{"phone":14155550100,"user":"a"}"#, &cfg));
        assert_eq!((status, c), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert!(message.contains("phone"), "{message}");
        let (_, c, message) = code(parse_create(br#"{"phone":"+14155550100"}"#, &cfg));
        assert_eq!(c, "invalid_request");
        assert!(message.contains("user"), "{message}");
        let (_, _, message) = code(parse_create(br#"{"phone":"+14155550100","user":"a","callbackUrl":"x"}"#, &cfg));
        assert!(message.contains("callbackUrl"), "{message}");
        let (_, _, message) = code(parse_create(br#"{"phone":"+14155550100","user":""}"#, &cfg));
        assert!(message.contains("user"), "{message}");
        let long_user = format!(r#"{{"phone":"+14155550100","user":"{}"}}"#, "u".repeat(MAX_USER_LEN + 1));
        assert_eq!(code(parse_create(long_user.as_bytes(), &cfg)).1, "invalid_request");
    }

    #[test]
    fn phone_numbers_must_be_valid_e164() {
        assert_eq!(parse_phone("+442071234567").unwrap(), ("+442071234567".into(), 44));
        assert_eq!(parse_phone("+49 30 123456").unwrap().1, 49);
        for bad in [
            "14155550100",
            "+",
            "+1",
            "+1415555010",
            "+1415555010012345",
            "+1415abc0100",
            "++14155550100",
            "+999123456",
            "tel:+14155550100",
            "+1 415 555 0100 ext 7",
            "",
        ] {
            let err = parse_phone(bad).expect_err(bad);
            assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_number"), "{bad}");
        }
    }

    #[test]
    fn the_phone_parser_never_panics_on_digit_soup() {
        // The crate has panicked on odd inputs; our filter only lets `+` and
        // digits through, so sweep short digit strings and separators.
        for len in 1..=16 {
            for seed in 0..60u64 {
                let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(len as u64);
                let s: String = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        b"0123456789 -()"[(x >> 33) as usize % 14] as char
                    })
                    .collect();
                let _ = parse_phone(&format!("+{s}"));
            }
        }
    }

    #[test]
    fn country_and_dialplan_and_callback_rules() {
        let mut cfg = config();
        cfg.policy.allowed_country_codes = vec![44];
        let (status, c, _) = code(parse_create(br#"{"phone":"+14155550100","user":"a"}"#, &cfg));
        assert_eq!((status, c), (StatusCode::FORBIDDEN, "country_not_allowed"));
        assert!(parse_create(br#"{"phone":"+442071234567","user":"a","dialplan":"fraud"}"#, &cfg).is_ok());
        let (status, c, _) = code(parse_create(br#"{"phone":"+442071234567","user":"a","dialplan":"nope"}"#, &cfg));
        assert_eq!((status, c), (StatusCode::BAD_REQUEST, "unknown_dialplan"));
        for url in [
            "ftp://example.com/x",
            "example.com/hook",
            "http://",
            "https:///path",
            "http:\\\\evil.example/",
            " https://example.com/",
            "https://exa mple.com/",
            "javascript:alert(1)",
        ] {
            let body = json!({"phone": "+442071234567", "user": "a", "callback_url": url}).to_string();
            assert_eq!(code(parse_create(body.as_bytes(), &cfg)).1, "invalid_callback_url", "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
        let body = json!({"phone": "+442071234567", "user": "a", "callback_url": long}).to_string();
        assert_eq!(code(parse_create(body.as_bytes(), &cfg)).1, "invalid_callback_url");
        let body = json!({"phone": "+442071234567", "user": "a", "callback_url": "https://hooks.example.com/x"});
        let req = parse_create(body.to_string().as_bytes(), &cfg).unwrap();
        assert_eq!(req.callback_url.as_deref(), Some("https://hooks.example.com/x"));
    }

    #[test]
    fn callbacks_to_non_public_addresses_are_refused_unless_allowed() {
        let mut cfg = config();
        let forms = [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://localhost:9/hook",
            "http://2130706433:9/hook",
            "http://0x7f000001:9/hook",
            "http://127.1:9/hook",
            "http://[::ffff:127.0.0.1]:9/hook",
            "http://0.0.0.0:9/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/hook",
            "https://user:pass@hooks.example.com/",
        ];
        for url in forms {
            let body = json!({"phone": "+442071234567", "user": "a", "callback_url": url}).to_string();
            let (status, c, message) = code(parse_create(body.as_bytes(), &cfg));
            assert_eq!((status, c), (StatusCode::BAD_REQUEST, "invalid_callback_url"), "{url}: {message}");
        }
        cfg.webhook_targets.allow_private = true;
        let body = json!({"phone": "+442071234567", "user": "a", "callback_url": "http://127.0.0.1:9/hook"});
        assert!(parse_create(body.to_string().as_bytes(), &cfg).is_ok(), "allow_private lets loopback through");
    }

    #[test]
    fn the_hash_ignores_spelling_but_not_meaning() {
        let cfg = config();
        let a = parse_create(br#"{"user":"a","phone":"+14155550100"}"#, &cfg).unwrap();
        let b =
            parse_create(br#"{ "phone" : "+1 415-555-0100", "user":"a", "dialplan":"press-pound" }"#, &cfg).unwrap();
        let c = parse_create(br#"{"phone":"+14155550100","user":"b"}"#, &cfg).unwrap();
        let d = parse_create(br#"{"phone":"+14155550100","user":"a","callback_url":"https://x.example/h"}"#, &cfg);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_ne!(a.hash(), d.unwrap().hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("order 42/retry"));
        assert_eq!(idempotency_key(&headers).unwrap().as_deref(), Some("order 42/retry"));
        headers.insert("idempotency-key", HeaderValue::from_str(&"k".repeat(255)).unwrap());
        assert!(idempotency_key(&headers).is_ok());
        for bad in [&b""[..], &[b'k'; 256][..], b"caf\xc3\xa9", b"tab\there"] {
            headers.insert("idempotency-key", HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(idempotency_key(&headers).unwrap_err().code, "invalid_request");
        }
        headers.insert("idempotency-key", HeaderValue::from_static("a"));
        headers.append("idempotency-key", HeaderValue::from_static("b"));
        assert!(idempotency_key(&headers).is_err());
    }
}
