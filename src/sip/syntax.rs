//! The lexical pieces of SIP header values (RFC 3261 §25.1): tokens, quoted
//! strings, `;name=value` parameters, `host[:port]`, URIs; shared by the
//! message parser, the structured header values and digest challenges.

use super::SipError;

/// A URI is at least `scheme:something`; for sip and sips the host and port are checked as well,
/// because rsipstack takes an unterminated `[` or a non-numeric port as part of a domain name.
pub(crate) fn check_uri(uri: &str) -> Result<(), SipError> {
    let bad = || malformed(format!("URI {uri:.80}"));
    let (scheme, rest) = uri.split_once(':').ok_or_else(bad)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || uri.contains(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"')) {
        return Err(bad());
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        // The user part may itself hold `;` and `?` (`sip:+14155550100;npdi@gw.example.com`), so the
        // host starts after the `@`.
        let host_and_params = rest.split_once('@').map_or(rest, |(_, host)| host);
        split_host_port(host_and_params.split([';', '?']).next().unwrap_or_default()).ok_or_else(bad)?;
    }
    Ok(())
}

/// Splits `host[:port]`; an IPv6 reference must be a valid address in brackets, a name or IPv4 address
/// may hold letters, digits, `-`, `.` and `_`.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']')?;
        s[1..close].parse::<std::net::Ipv6Addr>().ok()?;
        let (host, port) = s.split_at(close + 1);
        (host, if port.is_empty() { None } else { Some(port.strip_prefix(':')?) })
    } else {
        let (host, port) = s.split_once(':').map_or((s, None), |(host, port)| (host, Some(port)));
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Some(port.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// `;name=value;flag` header parameters; values are kept as written (quoted strings included).
pub(crate) fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, SipError> {
    let s = s.trim();
    let rest = match s.strip_prefix(';') {
        Some(rest) => rest,
        None if s.is_empty() => return Ok(Vec::new()),
        None => return Err(malformed(format!("parameters {s:.60}"))),
    };
    split_outside_quotes(rest, b';')
        .into_iter()
        .map(|param| {
            let (name, value) = param.split_once('=').map_or((param, None), |(n, v)| (n, Some(v.trim())));
            let name = name.trim();
            if !is_token(name) {
                return Err(malformed(format!("parameter {param:.40}")));
            }
            Ok((name.to_string(), value.map(str::to_string)))
        })
        .collect()
}

/// The contents of a quoted string whose opening quote has been consumed, unescaped, and the text
/// after its closing quote.
pub(crate) fn take_quoted(s: &str) -> Result<(String, &str), SipError> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => out.push(chars.next().map(|(_, c)| c).ok_or_else(|| malformed("unterminated quoted string"))?),
            c => out.push(c),
        }
    }
    Err(malformed("unterminated quoted string"))
}

/// The position of `target` outside any quoted string.
pub(crate) fn find_outside_quotes(s: &str, target: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == target {
            return Some(i);
        }
    }
    None
}

/// Splits at every `separator` that is outside quotes and outside `<>`, trimming the parts and
/// dropping empty ones.
pub(crate) fn split_outside_quotes(s: &str, separator: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle_depth = 0usize;
    for (i, b) in s.bytes().enumerate() {
        if in_quotes {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => angle_depth += 1,
            b'>' => angle_depth = angle_depth.saturating_sub(1),
            _ if b == separator && angle_depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.retain(|part| !part.is_empty());
    parts
}

/// RFC 3261 §25.1 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

pub(crate) fn one_line(s: String) -> String {
    if s.contains(['\r', '\n']) { s.replace(['\r', '\n'], " ") } else { s }
}

pub(crate) fn malformed(what: impl Into<String>) -> SipError {
    SipError::Malformed(what.into())
}
