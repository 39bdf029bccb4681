//! Where a call goes: the Request-URI for a SIP URI or an E.164 number, the
//! `host:port` its SIP is sent to (the trunk, or the URI's own host), and
//! how: a `sips:` URI or `transport=tls` means TLS (RFC 3261 §26, RFC 5630).

use crate::vocab::Transport;

/// A target that is neither a SIP URI nor an E.164 number, or a number
/// without a trunk to send it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(String);

/// Where and how a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The Request-URI.
    pub uri: String,
    /// `host:port` SIP is sent to.
    pub hop: String,
    /// The host of `hop`: over TLS, the name its certificate must carry.
    pub host: String,
    pub transport: Transport,
}

/// Routes `target` (through `trunk` when given); `transport` is the
/// configured one, which a `sips:` target or hop, or a hop with
/// `transport=tls`, turns into TLS.
pub fn route(target: &str, trunk: Option<&str>, transport: Transport) -> Result<Routed, RouteError> {
    let is_uri = scheme_rest(target).is_some();
    let hop_uri = match trunk {
        Some(trunk) => trunk,
        None if is_uri => target,
        None => return Err(RouteError("an E.164 number needs --trunk sip:HOST[:PORT]".into())),
    };
    let secure = target.starts_with("sips:") || wants_tls(hop_uri);
    let transport = if secure { Transport::Tls } else { transport };
    let (host, port) = host_port(hop_uri, transport)?;
    let hop = format!("{host}:{port}");
    if is_uri {
        return Ok(Routed { uri: target.to_string(), hop, host, transport });
    }
    let digits = target.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RouteError(format!(
            "{target:?} is neither a SIP URI (sip:user@host:port) nor an E.164 number (+14155550100)"
        )));
    }
    let scheme = if hop_uri.starts_with("sips:") { "sips" } else { "sip" };
    Ok(Routed { uri: format!("{scheme}:{target}@{hop};user=phone"), hop, host, transport })
}

/// Whether a URI asks for TLS: `sips:`, or a `transport=tls` parameter.
pub fn wants_tls(uri: &str) -> bool {
    if uri.starts_with("sips:") {
        return true;
    }
    let Some(rest) = scheme_rest(uri) else { return false };
    let Some(start) = rest.find(';') else { return false };
    let params = &rest[start + 1..];
    let params = &params[..params.find(['?', '>']).unwrap_or(params.len())];
    params
        .split(';')
        .filter_map(|param| param.split_once('='))
        .any(|(name, value)| name.trim().eq_ignore_ascii_case("transport") && value.trim().eq_ignore_ascii_case("tls"))
}

/// What follows `sip:` or `sips:`.
fn scheme_rest(uri: &str) -> Option<&str> {
    uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:"))
}

/// The host and port of a SIP URI (the transport's default port when absent).
fn host_port(uri: &str, transport: Transport) -> Result<(String, String), RouteError> {
    let bad = || RouteError(format!("{uri:?} is not a SIP URI with a host"));
    let rest = scheme_rest(uri).ok_or_else(bad)?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let host_port = &rest[..end];
    let split = match host_port.rfind(']') {
        Some(close) => host_port[close..].find(':').map(|colon| close + colon),
        None => host_port.rfind(':'),
    };
    let (host, port) = match split {
        Some(colon) => (&host_port[..colon], host_port[colon + 1..].to_string()),
        None => (host_port, transport.default_port().to_string()),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(target: &str, trunk: Option<&str>) -> (String, Transport) {
        let routed = route(target, trunk, Transport::Udp).unwrap();
        (routed.hop, routed.transport)
    }

    #[test]
    fn routes_uris_and_numbers() {
        let routed = route("sip:bob@127.0.0.1:5070", None, Transport::Udp).unwrap();
        assert_eq!(
            (routed.uri.as_str(), routed.hop.as_str(), routed.host.as_str()),
            ("sip:bob@127.0.0.1:5070", "127.0.0.1:5070", "127.0.0.1")
        );
        assert_eq!(hop("sip:bob@example.com;transport=udp", None).0, "example.com:5060");
        assert_eq!(hop("sip:bob@[::1]:5070", None).0, "[::1]:5070");
        assert_eq!(hop("sip:[::1]", None).0, "[::1]:5060");
        let number = route("+14155550100", Some("sip:trunk.example.com:5080"), Transport::Tcp).unwrap();
        assert_eq!(number.uri, "sip:+14155550100@trunk.example.com:5080;user=phone");
        assert_eq!((number.hop.as_str(), number.transport), ("trunk.example.com:5080", Transport::Tcp));
        assert_eq!(hop("sip:bob@a.example", Some("sip:proxy:5062")).0, "proxy:5062");
        assert!(route("+14155550100", None, Transport::Udp).unwrap_err().to_string().contains("--trunk"));
        assert!(route("14155550100", Some("sip:t"), Transport::Udp).is_err());
        assert!(route("+1", Some("sip:t"), Transport::Udp).is_err());
        assert!(route("sip:", None, Transport::Udp).is_err());
        assert!(route("mailto:x", None, Transport::Udp).is_err());
    }

    #[test]
    fn sips_and_transport_tls_mean_tls_on_5061() {
        assert_eq!(hop("sips:bob@sip.example.com", None), ("sip.example.com:5061".into(), Transport::Tls));
        assert_eq!(hop("sip:bob@sip.example.com;transport=TLS", None), ("sip.example.com:5061".into(), Transport::Tls));
        assert_eq!(hop("sips:bob@[2001:db8::1]:5071", None), ("[2001:db8::1]:5071".into(), Transport::Tls));
        assert_eq!(route("sips:bob@[2001:db8::1]", None, Transport::Udp).unwrap().host, "[2001:db8::1]");
        // A sips target stays TLS through a trunk; a TLS trunk makes numbers sips when it is sips.
        assert_eq!(hop("sips:bob@a.example", Some("sip:proxy.example")), ("proxy.example:5061".into(), Transport::Tls));
        let number = route("+14155550100", Some("sips:trunk.example.com"), Transport::Udp).unwrap();
        assert_eq!(number.uri, "sips:+14155550100@trunk.example.com:5061;user=phone");
        assert_eq!(number.host, "trunk.example.com");
        // The configured transport picks the default port too.
        let configured = route("sip:bob@sip.example.com", None, Transport::Tls).unwrap();
        assert_eq!((configured.hop.as_str(), configured.transport), ("sip.example.com:5061", Transport::Tls));
        assert_eq!(hop("sip:bob@sip.example.com;transport=tcp", None).1, Transport::Udp);
    }

    #[test]
    fn reads_the_transport_parameter() {
        assert!(wants_tls("sip:a@b;lr;Transport=Tls?x=y"));
        assert!(wants_tls("sips:a@b"));
        assert!(!wants_tls("sip:a@b;transport=tcp"));
        assert!(!wants_tls("sip:a@b?transport=tls"));
        assert!(!wants_tls("sip:a@b"));
        assert!(!wants_tls("tel:+1;transport=tls"));
    }
}
