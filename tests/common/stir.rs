//! STIR/SHAKEN (issue 13): pound's `Identity` headers verified by an independent JWS
//! implementation (`jsonwebtoken`) with the public key OpenSSL derived (`fixtures/stir/`).

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;

/// The test signing keys and their public key.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/stir")
}

/// The PASSporT's header and claims once its signature verified; panics (naming the header)
/// when it does not, or when the `info`/`alg`/`ppt` parameters are not `x5u`'s.
pub fn verify(identity: &str, x5u: &str) -> (Header, Value) {
    let (token, params) = identity.split_once(';').unwrap_or_else(|| panic!("no parameters: {identity}"));
    assert_eq!(params, format!("info=<{x5u}>;alg=ES256;ppt=shaken"));
    let public = std::fs::read(fixtures().join("public.pem")).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    // A PASSporT has no exp: the verifier judges iat's freshness itself (RFC 8224 §6.2.1).
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let verified = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_ec_pem(&public).unwrap(), &validation)
        .unwrap_or_else(|e| panic!("{e}: {identity}"));
    (verified.header, verified.claims)
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
