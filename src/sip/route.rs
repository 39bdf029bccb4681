//! Where a call goes: the Request-URI for a SIP URI or an E.164 number, and
//! the `host:port` its SIP is sent to (the trunk, or the URI's own host).

/// A target that is neither a SIP URI nor an E.164 number, or a number
/// without a trunk to send it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(String);

/// The Request-URI and the `host:port` SIP goes to.
pub fn route(target: &str, trunk: Option<&str>) -> Result<(String, String), RouteError> {
    let trunk_hop = trunk.map(host_port).transpose()?;
    if target.starts_with("sip:") {
        let hop = match trunk_hop {
            Some(hop) => hop,
            None => host_port(target)?,
        };
        return Ok((target.to_string(), hop));
    }
    let digits = target.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RouteError(format!(
            "{target:?} is neither a SIP URI (sip:user@host:port) nor an E.164 number (+14155550100)"
        )));
    }
    let hop = trunk_hop.ok_or_else(|| RouteError("an E.164 number needs --trunk sip:HOST[:PORT]".into()))?;
    Ok((format!("sip:{target}@{hop};user=phone"), hop))
}

/// `host:port` of a SIP URI (port 5060 when absent).
fn host_port(uri: &str) -> Result<String, RouteError> {
    let bad = || RouteError(format!("{uri:?} is not a SIP URI with a host"));
    let rest = uri.strip_prefix("sip:").ok_or_else(bad)?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() {
        return Err(bad());
    }
    let has_port = match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    };
    Ok(if has_port { host.to_string() } else { format!("{host}:5060") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_uris_and_numbers() {
        assert_eq!(
            route("sip:bob@127.0.0.1:5070", None).unwrap(),
            ("sip:bob@127.0.0.1:5070".into(), "127.0.0.1:5070".into())
        );
        assert_eq!(route("sip:bob@example.com;transport=udp", None).unwrap().1, "example.com:5060");
        assert_eq!(route("sip:bob@[::1]:5070", None).unwrap().1, "[::1]:5070");
        assert_eq!(route("sip:[::1]", None).unwrap().1, "[::1]:5060");
        assert_eq!(
            route("+14155550100", Some("sip:trunk.example.com:5080")).unwrap(),
            ("sip:+14155550100@trunk.example.com:5080;user=phone".into(), "trunk.example.com:5080".into())
        );
        assert_eq!(route("sip:bob@a.example", Some("sip:proxy:5062")).unwrap().1, "proxy:5062");
        assert!(route("+14155550100", None).unwrap_err().to_string().contains("--trunk"));
        assert!(route("14155550100", Some("sip:t")).is_err());
        assert!(route("+1", Some("sip:t")).is_err());
        assert!(route("sip:", None).is_err());
        assert!(route("mailto:x", None).is_err());
    }
}
