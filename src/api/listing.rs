//! Reading `GET /v1/verifications?user=&phone=&status=&limit=&cursor=`: the
//! filters, the page size and the opaque cursor.
//!
//! Everything here is pure, so the rules are unit-tested without a server.

use super::error::ApiError;
use super::request::{MAX_USER_LEN, parse_phone};
use crate::store::{Scope, Status, Verification, VerificationQuery};

/// Items per page when the request names no `limit`.
pub const DEFAULT_LIMIT: u32 = 50;

/// The largest `limit` accepted: a page is read and sent whole.
pub const MAX_LIMIT: u32 = 100;

/// Longer cursors are refused unread: the ones we hand out are far shorter.
const MAX_CURSOR_LEN: usize = 256;

/// Parses the query parameters into a store query in `scope`. Unknown and
/// repeated parameters are refused (a misspelt `stauts` would otherwise
/// silently list everything); an empty value is the same as none.
pub fn parse_list(params: &[(String, String)], scope: Scope) -> Result<VerificationQuery, ApiError> {
    let mut query =
        VerificationQuery { scope, user: None, phone: None, status: None, before: None, limit: DEFAULT_LIMIT };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in params {
        if seen.contains(&name.as_str()) {
            return Err(ApiError::invalid_request(format!("{name} is given more than once")));
        }
        seen.push(name);
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "user" => {
                if value.len() > MAX_USER_LEN || value.chars().any(char::is_control) {
                    return Err(ApiError::invalid_request(format!(
                        "user must be 1 to {MAX_USER_LEN} bytes without control characters"
                    )));
                }
                query.user = Some(value.clone());
            }
            "phone" => {
                let (phone, _) =
                    parse_phone(value).map_err(|err| ApiError::invalid_request(format!("phone: {}", err.message)))?;
                query.phone = Some(phone);
            }
            "status" => {
                query.status = Some(Status::parse(value).ok_or_else(|| {
                    ApiError::invalid_request(
                        "status must be one of queued, dialing, ringing, answered, completed, canceled, expired",
                    )
                })?);
            }
            "limit" => {
                query.limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::invalid_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))
                })?;
            }
            "cursor" => query.before = Some(decode_cursor(value)?),
            other => {
                return Err(ApiError::invalid_request(format!(
                    "unknown parameter {other:?}; known: user, phone, status, limit, cursor"
                )));
            }
        }
    }
    Ok(query)
}

/// The cursor that continues after `last`: its position in listing order,
/// hex-encoded so that clients treat it as opaque.
pub fn encode_cursor(last: &Verification) -> String {
    hex::encode(format!("{}.{}", last.created_at, last.id))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let invalid = || ApiError::invalid_request("cursor is not one this API returned");
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let text = hex::decode(cursor).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(invalid)?;
    let (created_at, id) = text.split_once('.').ok_or_else(invalid)?;
    let created_at = created_at.parse::<i64>().map_err(|_| invalid())?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid());
    }
    Ok((created_at, id.to_string()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        let err = parse_list(&params(pairs), Scope::All).expect_err("should be refused");
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "invalid_request"), "{pairs:?}");
        err.message
    }

    #[test]
    fn defaults_and_filters() {
        let scope = Scope::Tenant("t".into());
        let query = parse_list(&[], scope.clone()).unwrap();
        assert_eq!(
            query,
            VerificationQuery { scope: scope.clone(), user: None, phone: None, status: None, before: None, limit: 50 }
        );
        let query = parse_list(
            &params(&[
                ("user", "alice@contoso.com"),
                ("phone", "+1 415 555 0100"),
                ("status", "completed"),
                ("limit", "7"),
            ]),
            scope,
        )
        .unwrap();
        assert_eq!(query.user.as_deref(), Some("alice@contoso.com"));
        assert_eq!(query.phone.as_deref(), Some("+14155550100"), "normalised like a create request");
        assert_eq!((query.status, query.limit), (Some(Status::Completed), 7));
        let empty = parse_list(
            &params(&[("user", ""), ("phone", ""), ("status", ""), ("limit", ""), ("cursor", "")]),
            Scope::All,
        );
        assert_eq!(empty.unwrap().limit, DEFAULT_LIMIT, "empty values are absent");
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (pairs, named) in [
            (&[("limit", "0")][..], "limit"),
            (&[("limit", "101")], "limit"),
            (&[("limit", "-1")], "limit"),
            (&[("limit", "ten")], "limit"),
            (&[("limit", "99999999999999999999")], "limit"),
            (&[("status", "done")], "status"),
            (&[("phone", "4155550100")], "phone"),
            (&[("phone", "+99912345678")], "phone"),
            (&[("cursor", "zz")], "cursor"),
            (&[("stauts", "queued")], "stauts"),
            (&[("user", "a"), ("user", "b")], "user"),
        ] {
            let message = refused(pairs);
            assert!(message.contains(named), "{pairs:?}: {message}");
        }
        assert!(refused(&[("user", &"u".repeat(MAX_USER_LEN + 1))]).contains("user"));
        assert!(refused(&[("user", "a\nb")]).contains("user"));
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let last: Verification = serde_json::from_value(serde_json::json!({
            "id": "v_0123456789abcdef01234567", "phone": "+14155550100", "user": "a", "dialplan": "press-pound",
            "status": "queued", "outcome": null, "attempt_count": 0, "max_attempts": 3,
            "created_at": 1_700_000_000_123_i64, "updated_at": 1_700_000_000_123_i64, "completed_at": null,
        }))
        .unwrap();
        let cursor = encode_cursor(&last);
        let query = parse_list(&params(&[("cursor", &cursor)]), Scope::All).unwrap();
        assert_eq!(query.before, Some((1_700_000_000_123, "v_0123456789abcdef01234567".to_string())));
        for forged in [
            hex::encode("1700000000123"),
            hex::encode("x.v_1"),
            hex::encode("1.v_1' OR 1=1 --"),
            hex::encode("1."),
            hex::encode([0xff, 0xfe]),
            "0".repeat(MAX_CURSOR_LEN + 2),
        ] {
            assert!(refused(&[("cursor", &forged)]).contains("cursor"), "{forged}");
        }
    }
}
