//! Structured header values: name-addr (From, To, Contact, Refer-To…) and Via.

use super::SipError;
use super::syntax::{
    check_uri, find_outside_quotes, is_token, malformed, one_line, parse_params, split_host_port, take_quoted,
};

/// A name-addr or addr-spec header value (From, To, Contact, Refer-To…): optional display name, URI and
/// header parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display: Option<String>,
    /// The URI as written, without the angle brackets.
    pub uri: String,
    /// The header parameters (`tag`, `expires`, `+sip.instance`…) in order; values as written, quotes included.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses `"Display" <uri>;params`, `Display <uri>;params` or `uri;params`. In the last form every
    /// `;` parameter belongs to the header, not the URI (RFC 3261 §20.10).
    pub fn parse(value: &str) -> Result<NameAddr, SipError> {
        let s = value.trim();
        let (display, rest) = if let Some(quoted) = s.strip_prefix('"') {
            let (display, rest) = take_quoted(quoted)?;
            let rest = rest.trim_start();
            if !rest.starts_with('<') {
                return Err(malformed(format!("quoted display name without <uri> in {s:.60}")));
            }
            (Some(display), rest)
        } else if let Some(lt) = find_outside_quotes(s, b'<') {
            let display = s[..lt].trim();
            ((!display.is_empty()).then(|| display.to_string()), &s[lt..])
        } else {
            (None, s)
        };
        let (uri, params) = if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(|| malformed(format!("'<' without '>' in {s:.60}")))?;
            let params = inner[gt + 1..].trim_start();
            if !params.is_empty() && !params.starts_with(';') {
                return Err(malformed(format!("text after <uri> in {s:.60}")));
            }
            (inner[..gt].trim(), params)
        } else {
            rest.split_at(rest.find(';').unwrap_or(rest.len()))
        };
        check_uri(uri)?;
        Ok(NameAddr { display, uri: uri.to_string(), params: parse_params(params)? })
    }

    /// The value of the header parameter `name` (any case); `Some("")` for a parameter without a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// The header value: `"display" <uri>;params`, always in the name-addr form.
    pub fn to_string_value(&self) -> String {
        let mut out = String::with_capacity(self.uri.len() + 32);
        if let Some(display) = &self.display {
            out.push('"');
            for c in display.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(&self.uri);
        out.push('>');
        for (name, value) in &self.params {
            out.push(';');
            out.push_str(name);
            if let Some(value) = value {
                out.push('=');
                out.push_str(value);
            }
        }
        one_line(out)
    }
}

/// One Via entry (RFC 3261 §20.42).
#[derive(Clone, Debug, PartialEq)]
pub struct Via {
    /// The transport, upper-cased: `UDP`, `TCP`, `TLS`…
    pub transport: String,
    /// The sent-by host as written; an IPv6 address keeps its brackets (`[2001:db8::1]`).
    pub host: String,
    /// The sent-by port, when given.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<String>,
    /// The `received` parameter (RFC 3261 §18.2.1).
    pub received: Option<String>,
    /// The `rport` parameter (RFC 3581): `Some(None)` when present without a value.
    pub rport: Option<Option<u16>>,
}

impl Via {
    /// Parses one Via entry, `SIP/2.0/UDP host:port;params`.
    pub fn parse(value: &str) -> Result<Via, SipError> {
        let bad = || malformed(format!("Via {value:.80}"));
        let value = value.trim();
        let (protocol_and_host, params) = value.split_at(value.find(';').unwrap_or(value.len()));
        // Spaces are allowed around the slashes (RFC 3261 §25.1 SLASH).
        let mut protocol = protocol_and_host.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (protocol.next(), protocol.next(), protocol.next()) else {
            return Err(bad());
        };
        let mut rest = rest.split_whitespace();
        let (Some(transport), Some(sent_by), None) = (rest.next(), rest.next(), rest.next()) else {
            return Err(bad());
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" || !is_token(transport) {
            return Err(bad());
        }
        let (host, port) = split_host_port(sent_by).ok_or_else(bad)?;
        let (mut branch, mut received, mut rport) = (None, None, None);
        // The first of a repeated parameter wins, as it does for every other reader of the header.
        for (name, param) in parse_params(params)? {
            match name.to_ascii_lowercase().as_str() {
                "branch" => branch = branch.or(param),
                "received" => received = received.or(param),
                "rport" if rport.is_none() => {
                    rport = Some(match param.as_deref() {
                        None | Some("") => None,
                        Some(port) => Some(port.parse::<u16>().map_err(|_| bad())?),
                    });
                }
                _ => {}
            }
        }
        Ok(Via { transport: transport.to_ascii_uppercase(), host: host.to_string(), port, branch, received, rport })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let quoted = NameAddr::parse(r#" "Dr. \"Who\" <tardis>" <sip:who@gallifrey.example>;tag=tt;lr "#).unwrap();
        assert_eq!(quoted.display.as_deref(), Some(r#"Dr. "Who" <tardis>"#));
        assert_eq!(quoted.uri, "sip:who@gallifrey.example");
        assert_eq!(quoted.params, [("tag".into(), Some("tt".into())), ("lr".into(), None)]);
        assert_eq!((quoted.tag(), quoted.param("LR"), quoted.param("maddr")), (Some("tt"), Some(""), None));
        assert_eq!(NameAddr::parse(&quoted.to_string_value()).unwrap(), quoted);

        let unquoted = NameAddr::parse("Alice Liddell <sip:alice@wonderland.example;transport=tcp>").unwrap();
        assert_eq!(unquoted.display.as_deref(), Some("Alice Liddell"));
        assert_eq!(unquoted.uri, "sip:alice@wonderland.example;transport=tcp");
        assert!(unquoted.params.is_empty());
        assert_eq!(unquoted.to_string_value(), "\"Alice Liddell\" <sip:alice@wonderland.example;transport=tcp>");

        let instance = NameAddr::parse(
            r#"<sip:a@192.0.2.4:5060>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=60"#,
        )
        .unwrap();
        assert_eq!(instance.uri, "sip:a@192.0.2.4:5060");
        assert_eq!(instance.param("+sip.instance"), Some(r#""<urn:uuid:00000000-0000-1000-8000-000A95A0E128>""#));
        assert_eq!(instance.param("expires"), Some("60"));

        let bare = NameAddr::parse("sip:bob@biloxi.example.com;tag=8321234356").unwrap();
        assert_eq!(
            (bare.display.as_deref(), bare.uri.as_str(), bare.tag()),
            (None, "sip:bob@biloxi.example.com", Some("8321234356"))
        );

        for bad in [
            "",
            "   ",
            "*",
            "<sip:a@b",
            "\"open <sip:a@b>",
            "\"name\" sip:a@b",
            "<sip:a@b> junk",
            "noscheme",
            "<>",
            "<sip:>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn via_forms() {
        let spaced = Via::parse("SIP / 2.0 / udp  host.example.com:5070 ; branch=z9hG4bKs ; rport").unwrap();
        assert_eq!(
            spaced,
            Via {
                transport: "UDP".into(),
                host: "host.example.com".into(),
                port: Some(5070),
                branch: Some("z9hG4bKs".into()),
                received: None,
                rport: Some(None),
            }
        );
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "HTTP/1.1/TCP host",
            "SIP/2.0/UDP host extra",
            "SIP/2.0/UDP host:abc",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP [zz::1]:5060",
            "SIP/2.0/UDP ::1",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host;=x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
