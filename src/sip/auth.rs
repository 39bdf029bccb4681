//! HTTP digest authentication for SIP: reading challenges from 401/407 responses and answering them
//! (RFC 2617, RFC 7616 for SHA-256, RFC 8760 for its use in SIP).

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::SipError;
use super::message::{Message, Method};
use super::syntax::{is_token, take_quoted};

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617), the default when a challenge names none.
    Md5,
    /// MD5-sess (RFC 2617).
    Md5Sess,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-256-sess (RFC 7616, RFC 8760).
    Sha256Sess,
}

impl Algorithm {
    /// The name used in the `algorithm` parameter.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn parse(name: &str) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess]
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name))
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }

    fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Lower is stronger: RFC 8760 §2.4 has the client pick the strongest algorithm it supports.
    fn rank(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 0,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }
}

/// One digest challenge from a WWW-Authenticate or Proxy-Authenticate header.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    /// The protection space; it also goes into the hash.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Opaque data the server wants back unchanged.
    pub opaque: Option<String>,
    /// The hash algorithm.
    pub algorithm: Algorithm,
    /// Whether the server offers `qop=auth`; otherwise the answer is RFC 2069 style.
    pub qop_auth: bool,
    /// The server says the previous answer failed only because its nonce was stale: retrying with the
    /// same credentials is worthwhile.
    pub stale: bool,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="example.com", nonce="abc", qop="auth"`.
    ///
    /// Parameters come in any order, quoted or as tokens, with names in any case. A scheme other than
    /// Digest, an unknown algorithm, or a qop list without `auth` (we cannot answer `auth-int` alone)
    /// is [`SipError::UnsupportedAuth`]; a challenge without realm or nonce is malformed.
    pub fn parse(value: &str) -> Result<Challenge, SipError> {
        let value = value.trim();
        let (scheme, params) = value.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(SipError::UnsupportedAuth(format!("scheme {scheme:.20}")));
        }
        let (mut realm, mut nonce, mut opaque, mut algorithm, mut qop, mut stale) =
            (None, None, None, None, None, None);
        // The first of a repeated parameter wins.
        for (name, value) in auth_params(params)? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "opaque" => &mut opaque,
                "algorithm" => &mut algorithm,
                "qop" => &mut qop,
                "stale" => &mut stale,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(name) => {
                Algorithm::parse(&name).ok_or_else(|| SipError::UnsupportedAuth(format!("algorithm {name:.20}")))?
            }
        };
        let qop_auth = match qop {
            None => false,
            Some(options) if options.split(',').any(|option| option.trim().eq_ignore_ascii_case("auth")) => true,
            Some(options) => return Err(SipError::UnsupportedAuth(format!("qop {options:.40}"))),
        };
        Ok(Challenge {
            realm: realm.ok_or_else(|| SipError::Malformed("digest challenge without realm".into()))?,
            nonce: nonce.ok_or_else(|| SipError::Malformed("digest challenge without nonce".into()))?,
            opaque,
            algorithm,
            qop_auth,
            stale: stale.is_some_and(|stale| stale.eq_ignore_ascii_case("true")),
        })
    }
}

/// A user name and password for digest authentication.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password; never printed by `Debug`.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// The digest challenges of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) response, strongest
/// algorithm first, in message order otherwise. Challenges we cannot read or answer are left out; any
/// other response has none.
pub fn challenges(response: &Message) -> Vec<Challenge> {
    let header = match response.status() {
        Some(401) => "WWW-Authenticate",
        Some(407) => "Proxy-Authenticate",
        _ => return Vec::new(),
    };
    let mut challenges: Vec<Challenge> = response
        .header_lines(header)
        .filter_map(|value| {
            Challenge::parse(value).inspect_err(|err| tracing::debug!(%err, "skipping a digest challenge")).ok()
        })
        .collect();
    challenges.sort_by_key(|challenge| challenge.algorithm.rank());
    challenges
}

/// The header that carries the answer to a challenge in a response with this status: Proxy-Authorization
/// for 407, Authorization otherwise.
pub fn authorization_header(status: u16) -> &'static str {
    if status == 407 { "Proxy-Authorization" } else { "Authorization" }
}

/// The Authorization or Proxy-Authorization header value answering `challenge` for a request with this
/// method and Request-URI.
///
/// With `qop=auth` the answer carries `cnonce`, `qop` and the nonce count `nc` (which must grow for each
/// request answered with the same nonce); without it the answer is RFC 2069 style. The session variants
/// always carry `cnonce`, which their A1 includes.
pub fn authorize(
    challenge: &Challenge,
    credentials: &Credentials,
    method: &Method,
    uri: &str,
    cnonce: &str,
    nonce_count: u32,
) -> String {
    let algorithm = challenge.algorithm;
    let nonce = &challenge.nonce;
    let mut ha1 = algorithm.hash(&format!("{}:{}:{}", credentials.user, challenge.realm, credentials.password));
    if algorithm.is_session() {
        ha1 = algorithm.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let nc = format!("{nonce_count:08x}");
    let response = if challenge.qop_auth {
        algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
    } else {
        algorithm.hash(&format!("{ha1}:{nonce}:{ha2}"))
    };

    let mut value = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(&credentials.user),
        quote(&challenge.realm),
        quote(nonce),
        quote(uri),
        algorithm.as_str(),
    );
    if challenge.qop_auth {
        value.push_str(&format!(", cnonce={}, qop=auth, nc={nc}", quote(cnonce)));
    } else if algorithm.is_session() {
        value.push_str(&format!(", cnonce={}", quote(cnonce)));
    }
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque={}", quote(opaque)));
    }
    value
}

/// `name=value` pairs separated by commas; values are tokens or quoted strings (returned unescaped).
fn auth_params(s: &str) -> Result<Vec<(&str, String)>, SipError> {
    let bad = || SipError::Malformed(format!("digest parameters {s:.80}"));
    let mut params = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return Ok(params);
        }
        let (name, after) = rest.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        if !is_token(name) {
            return Err(bad());
        }
        let after = after.trim_start();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => take_quoted(quoted)?,
            None => {
                let end = after.find(|c: char| c == ',' || c.is_ascii_whitespace()).unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        let after = after.trim_start();
        if !after.is_empty() && !after.starts_with(',') {
            return Err(bad());
        }
        params.push((name, value));
        rest = after;
    }
}

fn quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        // A line break would end the header; the value is hashed unchanged either way.
        quoted.push(if c == '\r' || c == '\n' { ' ' } else { c });
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Message {
        let path = format!("{}/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        Message::parse(&bytes).unwrap()
    }

    fn mufasa(password: &str) -> Credentials {
        Credentials { user: "Mufasa".into(), password: password.into() }
    }

    fn get() -> Method {
        Method::parse("GET")
    }

    /// Pulls `name="value"` or `name=value` out of an answer.
    fn answer_param<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        answer.trim_start_matches("Digest ").split(", ").find_map(|param| {
            let (n, v) = param.split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
    }

    #[test]
    fn rfc_2617_section_3_5_example() {
        let challenge = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let answer = authorize(&challenge, &mufasa("Circle Of Life"), &get(), "/dir/index.html", "0a4f113b", 1);
        assert_eq!(
            answer,
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        );
    }

    #[test]
    fn rfc_7616_section_3_9_1_examples_md5_and_sha256() {
        let challenge = |algorithm: &str| {
            Challenge::parse(&format!(
                "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n algorithm={algorithm},\r\n \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            ))
            .unwrap()
        };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let credentials = mufasa("Circle of Life");

        let md5 = challenge("MD5");
        assert_eq!(md5.algorithm, Algorithm::Md5);
        assert_eq!(md5.opaque.as_deref(), Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"));
        let answer = authorize(&md5, &credentials, &get(), "/dir/index.html", cnonce, 1);
        assert_eq!(answer_param(&answer, "response"), Some("8ca523f5e9506fed4657c9700eebdbec"));

        let sha256 = challenge("SHA-256");
        assert_eq!(sha256.algorithm, Algorithm::Sha256);
        let answer = authorize(&sha256, &credentials, &get(), "/dir/index.html", cnonce, 1);
        assert_eq!(
            answer_param(&answer, "response"),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
        assert_eq!(answer_param(&answer, "algorithm"), Some("SHA-256"));
        assert_eq!(answer_param(&answer, "nc"), Some("00000001"));
        assert_eq!(answer_param(&answer, "cnonce"), Some(cnonce));
    }

    // The expected values below come from Python's hashlib over the RFC 2617 formulas, an
    // implementation independent of this one.

    #[test]
    fn without_qop_the_answer_is_rfc_2069_style() {
        let challenge =
            Challenge::parse(r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#)
                .unwrap();
        assert!(!challenge.qop_auth);
        let answer = authorize(&challenge, &mufasa("CircleOfLife"), &get(), "/dir/index.html", "0a4f113b", 1);
        assert_eq!(
            answer,
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", response="1949323746fe6a43ef61f9606e7febea", algorithm=MD5"#
        );
    }

    #[test]
    fn session_variants_hash_the_cnonce_into_a1() {
        let challenge = |algorithm: &str| {
            Challenge::parse(&format!(
                r#"Digest realm="trunk.example.net", nonce="5f1e8a3c2b7d9e04", qop="auth", algorithm={algorithm}"#
            ))
            .unwrap()
        };
        let credentials = Credentials { user: "alice".into(), password: "s3cret".into() };
        let uri = "sip:+14155550100@trunk.example.net";
        let answer = authorize(&challenge("MD5-sess"), &credentials, &Method::Invite, uri, "0a4f113b", 2);
        assert_eq!(answer_param(&answer, "response"), Some("d3e6ad5f44afa9fa608f7b77aa008890"));
        assert_eq!(answer_param(&answer, "algorithm"), Some("MD5-sess"));
        assert_eq!(answer_param(&answer, "nc"), Some("00000002"));
        let answer = authorize(&challenge("SHA-256-sess"), &credentials, &Method::Invite, uri, "0a4f113b", 2);
        assert_eq!(
            answer_param(&answer, "response"),
            Some("241a4d570c60bcbf263048dd82dc24c45dbb4ae0e0ae9275d3859108ad4f16ae")
        );
    }

    #[test]
    fn challenge_parameters_in_any_order_case_and_quoting() {
        let challenge =
            Challenge::parse(r#"digest NONCE=abc123 , Realm="a \"quoted\" realm",stale=TRUE,Algorithm=sha-256-SESS"#)
                .unwrap();
        assert_eq!(
            challenge,
            Challenge {
                realm: r#"a "quoted" realm"#.into(),
                nonce: "abc123".into(),
                opaque: None,
                algorithm: Algorithm::Sha256Sess,
                qop_auth: false,
                stale: true,
            }
        );
        let challenge = Challenge::parse(r#"Digest realm="r", nonce="n", stale=false, qop=auth"#).unwrap();
        assert!(!challenge.stale);
        assert!(challenge.qop_auth);
        assert_eq!(challenge.algorithm, Algorithm::Md5);
    }

    #[test]
    fn challenges_we_cannot_answer_are_refused() {
        for (value, unsupported) in [
            (r#"Basic realm="r""#, true),
            (r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#, true),
            (r#"Digest realm="r", nonce="n", qop="auth-int""#, true),
            (r#"Digest realm="r""#, false),
            (r#"Digest nonce="n""#, false),
            (r#"Digest realm="r", nonce="n"#, false),
            (r#"Digest realm="r" nonce="n""#, false),
            (r#"Digest realm"#, false),
            ("", true),
        ] {
            match Challenge::parse(value) {
                Err(SipError::UnsupportedAuth(_)) if unsupported => {}
                Err(SipError::Malformed(_)) if !unsupported => {}
                other => panic!("{value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_strongest_challenge_comes_first() {
        let response = fixture("401-two-challenges.sip");
        let found = challenges(&response);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].algorithm, Algorithm::Sha256);
        assert!(found[0].qop_auth);
        assert_eq!(found[1].algorithm, Algorithm::Md5);
        assert_eq!(found[1].opaque.as_deref(), Some("b0a5e1c2"));
        assert_eq!(authorization_header(response.status().unwrap()), "Authorization");
    }

    #[test]
    fn proxy_challenges_come_from_proxy_authenticate() {
        let response = fixture("407-proxy-auth.sip");
        assert_eq!(
            challenges(&response),
            [Challenge {
                realm: "proxy.example.net".into(),
                nonce: "4a5b6c7d8e9f".into(),
                opaque: None,
                algorithm: Algorithm::Md5,
                qop_auth: false,
                stale: true,
            }]
        );
        assert_eq!(authorization_header(407), "Proxy-Authorization");
    }

    #[test]
    fn unreadable_challenges_are_skipped_and_other_responses_have_none() {
        let mut response = Message::response(401, "Unauthorized")
            .with_header("WWW-Authenticate", r#"Digest realm="r", nonce="n", algorithm=SHA-512"#)
            .with_header("WWW-Authenticate", r#"Basic realm="r""#)
            .with_header("WWW-Authenticate", r#"Digest realm="r", nonce="n""#)
            .with_header("Proxy-Authenticate", r#"Digest realm="p", nonce="n""#);
        let found = challenges(&response);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].realm, "r");
        response.remove_header("WWW-Authenticate");
        assert!(challenges(&response).is_empty());
        assert!(
            challenges(&Message::response(200, "OK").with_header("WWW-Authenticate", "Digest realm=r, nonce=n"))
                .is_empty()
        );
    }

    #[test]
    fn quoted_values_in_the_answer_are_escaped() {
        let challenge = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        let credentials = Credentials { user: "a\"b\\c".into(), password: "p".into() };
        let answer = authorize(&challenge, &credentials, &Method::Register, "sip:r", "c", 1);
        assert!(answer.starts_with(r#"Digest username="a\"b\\c", realm="r""#), "{answer}");
    }

    #[test]
    fn the_password_never_appears_in_debug_output() {
        let credentials = Credentials { user: "alice".into(), password: "hunter2-very-secret".into() };
        let printed = format!("{credentials:?} {credentials:#?}");
        assert!(printed.contains("alice"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
