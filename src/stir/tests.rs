//! The signer against an independent JWS implementation (`jsonwebtoken`) and a public key made by
//! OpenSSL (`fixtures/stir/README.md`).

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::*;

const X5U: &str = "https://cert.example.org/shaken/pound.pem";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/stir").join(name)
}

fn signer(key: &str, attest: Attestation) -> Arc<Signer> {
    Arc::new(Signer::load(&fixture(key), X5U, attest).unwrap())
}

fn parties() -> Parties {
    let from = "sip:+1-215-555-0100@pound.example.com";
    Parties::new(None, from, "sip:+12155550123@trunk.example.net;user=phone").unwrap()
}

/// The claims, after `jsonwebtoken` checked the signature with OpenSSL's public key.
fn verified_claims(token: &str) -> serde_json::Value {
    let public = std::fs::read(fixture("public.pem")).unwrap();
    let key = DecodingKey::from_ec_pem(&public).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    // A PASSporT has no exp: its freshness is the verifier's check of iat (RFC 8224 §6.2.1).
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap().claims
}

#[test]
fn an_independent_jws_implementation_verifies_the_passport() {
    for key in ["pkcs8.key.pem", "sec1.key.pem"] {
        let call = CallSigner::new(signer(key, Attestation::A), parties(), [7; 16]);
        let identity = call.identity(1_764_460_800);
        let (token, params) = identity.split_once(';').unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!((header.typ.as_deref(), header.x5u.as_deref()), (Some("passport"), Some(X5U)));
        let claims = verified_claims(token);
        assert_eq!(
            claims,
            serde_json::json!({
                "attest": "A",
                "dest": {"tn": ["12155550123"]},
                "iat": 1_764_460_800,
                "orig": {"tn": "12155550100"},
                "origid": call.origid(),
            })
        );
        assert_eq!(params, format!("info=<{X5U}>;alg=ES256;ppt=shaken"));
    }
}

#[test]
fn the_segments_are_the_canonical_bytes_and_the_signature_is_raw_r_and_s() {
    let call = CallSigner::new(signer("sec1.key.pem", Attestation::C), parties(), [0xff; 16]);
    assert_eq!(call.origid(), "ffffffff-ffff-4fff-bfff-ffffffffffff", "a version 4, RFC 4122 variant UUID");
    let identity = call.identity(1_500_000_000);
    let token = identity.split(';').next().unwrap();
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3);
    let decode = |segment: &str| URL_SAFE_NO_PAD.decode(segment).unwrap();
    assert_eq!(
        String::from_utf8(decode(segments[0])).unwrap(),
        format!(r#"{{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"{X5U}"}}"#)
    );
    assert_eq!(
        String::from_utf8(decode(segments[1])).unwrap(),
        concat!(
            r#"{"attest":"C","dest":{"tn":["12155550123"]},"iat":1500000000,"orig":{"tn":"12155550100"},"#,
            r#""origid":"ffffffff-ffff-4fff-bfff-ffffffffffff"}"#
        )
    );
    assert_eq!(decode(segments[2]).len(), 64, "ES256 is r || s, 32 bytes each, not DER");
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "base64url without padding");
    // Both PEM forms of one key sign alike (RFC 6979 signatures are deterministic).
    let pkcs8 = CallSigner::new(signer("pkcs8.key.pem", Attestation::C), parties(), [0xff; 16]);
    assert_eq!(pkcs8.identity(1_500_000_000), identity);
    assert_ne!(call.identity(1_500_000_001), identity, "iat is signed");
}

#[test]
fn a_tampered_passport_does_not_verify() {
    let identity = CallSigner::new(signer("sec1.key.pem", Attestation::B), parties(), [1; 16]).identity(1);
    let token = identity.split(';').next().unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let (header, _) = signing_input.split_once('.').unwrap();
    let other = CallSigner::new(
        signer("sec1.key.pem", Attestation::B),
        Parties::new(None, "+12155550100", "+12155550999").unwrap(),
        [1; 16],
    )
    .identity(1);
    let other_claims = other.split('.').nth(1).unwrap();
    let forged = format!("{header}.{other_claims}.{signature}");
    let public = std::fs::read(fixture("public.pem")).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let result =
        jsonwebtoken::decode::<serde_json::Value>(&forged, &DecodingKey::from_ec_pem(&public).unwrap(), &validation);
    assert!(result.is_err(), "another callee under the first signature verified");
}

#[test]
fn bad_keys_are_refused_without_quoting_them() {
    let key_text = std::fs::read_to_string(fixture("sec1.key.pem")).unwrap();
    let secret_line = key_text.lines().nth(1).unwrap();
    for (name, pem) in [
        ("wrong curve", std::fs::read_to_string(fixture("wrong-curve.key.pem")).unwrap()),
        ("public key", std::fs::read_to_string(fixture("public.pem")).unwrap()),
        ("truncated", key_text[..key_text.len() / 2].to_string()),
        ("not PEM", secret_line.to_string()),
        ("empty", String::new()),
    ] {
        let error = Signer::new(&pem, X5U, Attestation::A).unwrap_err();
        assert!(matches!(error, StirError::Key(_)), "{name}: {error}");
        assert!(!error.to_string().contains(secret_line), "{name}: the error quotes the key");
    }
    let missing = Signer::load(&fixture("absent.pem"), X5U, Attestation::A).unwrap_err();
    assert!(missing.to_string().contains("absent.pem"), "{missing}");
    let wrong = Signer::load(&fixture("public.pem"), X5U, Attestation::A).unwrap_err().to_string();
    assert!(wrong.contains("public.pem") && wrong.contains("P-256"), "{wrong}");
    let debug = format!("{:?}", signer("sec1.key.pem", Attestation::A));
    assert!(debug.contains("<secret>") && !debug.contains(secret_line), "{debug}");
}

#[test]
fn x5u_must_be_an_https_url_of_uri_characters() {
    let key = std::fs::read_to_string(fixture("pkcs8.key.pem")).unwrap();
    for good in [X5U, "https://cr.example.com:8443/a/b.pem?x=1&y=%20", "https://[2001:db8::1]/c.pem"] {
        Signer::new(&key, good, Attestation::A).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_X5U_BYTES));
    for bad in [
        "http://cert.example.org/c.pem",
        "https://",
        "https:///c.pem",
        "https://:443/c.pem",
        "HTTPS//example.com",
        "cert.example.org/c.pem",
        "https://example.com/a b",
        "https://example.com/a>;alg=none",
        "https://example.com/\"x",
        "https://example.com/\r\nVia: x",
        "https://example.com/é",
        "https://example.com/a\\b",
        "https://example.com/a;alg=none",
        "https://example.com/a,b",
        long.as_str(),
    ] {
        let error = Signer::new(&key, bad, Attestation::A).unwrap_err();
        assert!(matches!(error, StirError::X5u(_)), "{bad:?}: {error}");
    }
}

#[test]
fn attestation_is_a_b_or_c_and_numbers_must_be_telephone_numbers() {
    assert_eq!("A".parse::<Attestation>().unwrap(), Attestation::A);
    assert_eq!("C".parse::<Attestation>().unwrap().as_str(), "C");
    for bad in ["a", "D", "", "AB", " A"] {
        assert!(bad.parse::<Attestation>().unwrap_err().to_string().contains("A, B or C"), "{bad:?}");
    }
    let error = Parties::new(None, "sip:pound@192.0.2.1", "+12155550123").unwrap_err().to_string();
    assert!(error.contains("caller"), "{error}");
    let error = Parties::new(None, "+12155550100", "sip:+12155550123x@h").unwrap_err().to_string();
    assert!(error.contains("callee") && !error.contains("2155550123"), "the number is masked: {error}");
    // ATIS-1000074: the P-Asserted-Identity's number when there is one, the From's otherwise.
    let pai = Parties::new(Some("sip:+12155550111@pai.example"), "sip:+12155550100@h", "+12155550123").unwrap();
    assert_eq!(pai.orig.as_str(), "12155550111");
    assert_eq!(caller_number(None, "sip:+12155550100@h").unwrap().as_str(), "12155550100");
    assert!(caller_number(Some("sip:ops@pai.example"), "+12155550100").is_err(), "a PAI without a number");
}
