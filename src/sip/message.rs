//! The SIP message: a start line, headers in wire order and an opaque body.
//!
//! Parsing goes through rsipstack's parser so that it can be replaced within this one file. The wrapper
//! keeps what rsipstack normalises away (the Request-URI and reason phrase as written, extension methods)
//! and rejects what it would silently accept (see [`Message::parse`]).

use std::fmt;

use rsipstack::sip::{SipMessage, StatusCode, parser::parse_message};

use super::SipError;
use super::header::{NameAddr, Via};
use super::syntax::{check_uri, is_token, malformed, one_line, split_outside_quotes};

/// The largest message we read or frame: the largest UDP payload, and the cap on a TCP header block
/// plus body, so that a peer cannot make us buffer without bound.
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// Compact header forms (RFC 3261 §7.3.3 and the extensions that registered one) and their long names.
const COMPACT_NAMES: [(&str, &str); 19] = [
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Headers without which no request or response can be matched to a transaction or dialog
/// (RFC 3261 §8.1.1); a message lacking one is refused at parse time.
const MANDATORY_HEADERS: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// A SIP method. Method names are case-sensitive (RFC 3261 §7.1), so `invite` is an extension method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// REGISTER (RFC 3261).
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// MESSAGE (RFC 3428).
    Message,
    /// NOTIFY (RFC 6665).
    Notify,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// REFER (RFC 3515).
    Refer,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other method token, kept as written.
    Other(String),
}

impl Method {
    /// The method token as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Refer => "REFER",
            Method::Publish => "PUBLISH",
            Method::Other(token) => token,
        }
    }

    /// The method for a token; anything that is not exactly a known method becomes [`Method::Other`].
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "REFER" => Method::Refer,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

impl StartLine {
    fn parse(line: &str) -> Result<StartLine, SipError> {
        if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let status = match code.parse::<u16>() {
                Ok(status) if code.len() == 3 && (100..=699).contains(&status) => status,
                _ => return Err(malformed(format!("status code {code:.10}"))),
            };
            return Ok(StartLine::Response { status, reason: reason.trim().to_string() });
        }
        let mut parts = line.split(' ');
        let (Some(method), Some(uri), Some("SIP/2.0"), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(format!("start line {line:.60}")));
        };
        if !is_token(method) {
            return Err(malformed(format!("method {method:.20}")));
        }
        check_uri(uri)?;
        Ok(StartLine::Request { method: Method::parse(method), uri: uri.to_string() })
    }
}

/// A SIP request or response.
///
/// Header names are stored in their long form (compact forms are expanded when read and when added);
/// every lookup accepts the long or compact name in any case.
#[derive(Clone, Debug)]
pub struct Message {
    start: StartLine,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    /// Parses one message: a whole UDP datagram, or one frame cut from a TCP stream by
    /// [`frame_len`](super::frame::frame_len).
    ///
    /// The body is exactly Content-Length bytes; bytes after it are ignored (UDP padding), and a
    /// message without Content-Length takes the rest of the datagram as its body (RFC 3261 §18.3).
    /// A message is refused when it is larger than [`MAX_MESSAGE_BYTES`], its body is shorter than its
    /// Content-Length, a header line is not `name: value`, or Via, From, To, Call-ID or CSeq is missing
    /// or unreadable.
    pub fn parse(bytes: &[u8]) -> Result<Message, SipError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(SipError::TooLarge);
        }
        let head_len = header_block_len(bytes).ok_or_else(|| malformed("no empty line after the headers"))?;
        // rsipstack stops at the first header line that is not UTF-8 and keeps the message without
        // the headers after it; refusing the message is the only safe reading.
        let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| malformed("header block is not UTF-8"))?;
        // rsipstack also ends a line at a bare LF, so the two readings would disagree on where a value
        // ends (a reason phrase could swallow the next header).
        if head.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
            return Err(malformed("bare CR or LF in the header block"));
        }
        let (start_line, header_lines) = head.split_once("\r\n").unwrap_or((head, ""));
        let start = StartLine::parse(start_line)?;
        check_header_lines(header_lines)?;

        let parsed = match &start {
            // rsipstack's method type is a closed enum that refuses extension methods, which a UAS
            // still has to read to answer them (405/501); it sees a stand-in and the real method is
            // taken from our own start line.
            StartLine::Request { method: Method::Other(token), .. } => {
                let mut stand_in = b"OPTIONS".to_vec();
                stand_in.extend_from_slice(&bytes[token.len()..]);
                parse_message(&stand_in)
            }
            _ => parse_message(bytes),
        }
        .map_err(|err| malformed(err.to_string()))?;
        let headers = match parsed {
            SipMessage::Request(request) => request.headers,
            SipMessage::Response(response) => response.headers,
        };
        // rsipstack keeps the whitespace of a fold when the value starts on a continuation line;
        // that whitespace is not part of the value (RFC 3261 §7.3.1) and would be read differently
        // once the message is written back on one line.
        let headers = headers
            .iter()
            .map(|h| (long_name(h.name()).to_string(), h.value().trim_matches([' ', '\t']).to_string()))
            .collect();

        let mut message = Message { start, headers, body: Vec::new() };
        // rsipstack reads an unparseable Content-Length as 0 and silently shortens a truncated body.
        let available = &bytes[head_len + 4..];
        message.body = match message.content_length()? {
            Some(len) if len > available.len() => {
                return Err(malformed(format!("body has {} of its {len} bytes", available.len())));
            }
            Some(len) => available[..len].to_vec(),
            None => available.to_vec(),
        };
        message.check_mandatory_headers()?;
        Ok(message)
    }

    /// A request with no headers and no body.
    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        let uri = one_line(uri.into());
        Message { start: StartLine::Request { method, uri }, headers: Vec::new(), body: Vec::new() }
    }

    /// A response with no headers and no body.
    pub fn response(status: u16, reason: impl Into<String>) -> Message {
        let reason = one_line(reason.into());
        Message { start: StartLine::Response { status, reason }, headers: Vec::new(), body: Vec::new() }
    }

    /// A response to `request` (RFC 3261 §8.2.6.2): every Via in order, From, To, Call-ID and CSeq,
    /// with the standard reason phrase. `to_tag` is added to a To that has no tag yet.
    pub fn response_to(request: &Message, status: u16, to_tag: Option<&str>) -> Message {
        let mut response = Message::response(status, standard_reason(status));
        for via in request.header_lines("Via") {
            response.add_header("Via", via);
        }
        if let Some(from) = request.header("From") {
            response.add_header("From", from);
        }
        if let Some(to) = request.header("To") {
            let needs_tag = NameAddr::parse(to).is_ok_and(|to| to.tag().is_none());
            match to_tag {
                Some(tag) if needs_tag => response.add_header("To", format!("{to};tag={tag}")),
                _ => response.add_header("To", to),
            }
        }
        for name in ["Call-ID", "CSeq"] {
            if let Some(value) = request.header(name) {
                response.add_header(name, value);
            }
        }
        response
    }

    /// Whether this is a request (otherwise it is a response).
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI of a request, as written.
    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response, as written.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// The value of the first header line called `name` (long or compact, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_lines(name).next()
    }

    /// Every value of every header line called `name`, split at the commas that separate list
    /// elements (not those inside quotes or `<>`), trimmed: for Via, Route, Record-Route, Contact,
    /// Allow and the like. Not for headers whose values contain commas themselves (Date,
    /// WWW-Authenticate).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.header_lines(name).flat_map(|value| split_outside_quotes(value, b',')).collect()
    }

    /// Appends a header line. Line breaks in the name or value become spaces, so that a value taken
    /// from elsewhere can never start a header of its own.
    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((one_line(long_name(name).to_string()), one_line(value.into())));
    }

    /// [`add_header`](Self::add_header) for building a message in one expression.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Message {
        self.add_header(name, value);
        self
    }

    /// Replaces every header line called `name` with one line, where the first of them was (or at
    /// the end).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let long = long_name(name);
        let at = self.headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(long)).unwrap_or(self.headers.len());
        self.remove_header(name);
        self.headers.insert(at.min(self.headers.len()), (one_line(long.to_string()), one_line(value.into())));
    }

    /// Removes every header line called `name`.
    pub fn remove_header(&mut self, name: &str) {
        let long = long_name(name);
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(long));
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sets the body and its Content-Type; an empty body removes Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        if body.is_empty() {
            self.remove_header("Content-Type");
        } else {
            self.set_header("Content-Type", content_type);
        }
        self.body = body;
    }

    /// The wire form: long header names, CRLF line ends, and a Content-Length computed from the body
    /// (any stored Content-Length is ignored).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head =
            String::with_capacity(128 + self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
        match &self.start {
            StartLine::Request { method, uri } => {
                head.push_str(method.as_str());
                head.push(' ');
                head.push_str(uri);
                head.push_str(" SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                head.push_str("SIP/2.0 ");
                head.push_str(&status.to_string());
                head.push(' ');
                head.push_str(reason);
                head.push_str("\r\n");
            }
        }
        for (name, value) in self.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Length")) {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("Content-Length: ");
        head.push_str(&self.body.len().to_string());
        head.push_str("\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// The CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let mut parts = self.header("CSeq")?.split_whitespace();
        let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        Some((number.parse().ok()?, Method::parse(method)))
    }

    /// The From header.
    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("From")?).ok()
    }

    /// The To header.
    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("To")?).ok()
    }

    /// The tag of the From header.
    pub fn from_tag(&self) -> Option<String> {
        self.from()?.tag().map(str::to_string)
    }

    /// The tag of the To header.
    pub fn to_tag(&self) -> Option<String> {
        self.to()?.tag().map(str::to_string)
    }

    /// The topmost Via entry.
    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.header_values("Via").first()?).ok()
    }

    /// The first Contact entry (`None` for `Contact: *`).
    pub fn contact(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header_values("Contact").first()?).ok()
    }

    /// The Record-Route entries in message order, each exactly as written (e.g. `<sip:p1.example.com;lr>`).
    pub fn record_route(&self) -> Vec<String> {
        self.header_values("Record-Route").into_iter().map(str::to_string).collect()
    }

    /// The value of every header line called `name`, unsplit, in order.
    pub(crate) fn header_lines<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        let long = long_name(name).to_string();
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(&long)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Result<Option<usize>, SipError> {
        let mut length = None;
        for value in self.header_lines("Content-Length") {
            let this = parse_content_length(value)?;
            if length.is_some_and(|length| length != this) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            length = Some(this);
        }
        Ok(length)
    }

    fn check_mandatory_headers(&self) -> Result<(), SipError> {
        for name in MANDATORY_HEADERS {
            if self.header(name).is_none_or(|value| value.trim().is_empty()) {
                return Err(SipError::MissingHeader(name));
            }
        }
        let (_, cseq_method) = self.cseq().ok_or_else(|| malformed("CSeq is not `number METHOD`"))?;
        if self.method().is_some_and(|method| *method != cseq_method) {
            return Err(malformed("CSeq method differs from the request method"));
        }
        for name in ["From", "To"] {
            NameAddr::parse(self.header(name).unwrap_or_default())?;
        }
        Via::parse(self.header_values("Via").first().copied().unwrap_or_default())?;
        Ok(())
    }
}

/// The standard reason phrase for a status code, or the RFC 3261 §21 class name for a code without one.
fn standard_reason(status: u16) -> String {
    let known = StatusCode::try_from((status, "")).map(|code| code.text().to_string()).unwrap_or_default();
    if !known.is_empty() {
        return known;
    }
    match status / 100 {
        1 => "Provisional",
        2 => "Successful",
        3 => "Redirection",
        4 => "Request Failure",
        5 => "Server Failure",
        _ => "Global Failure",
    }
    .to_string()
}

/// The offset of the CRLFCRLF that ends the header block.
pub(crate) fn header_block_len(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

/// A Content-Length value: digits only, and no larger than a message may be.
pub(crate) fn parse_content_length(value: &str) -> Result<usize, SipError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("Content-Length {value:.20}")));
    }
    match value.parse::<usize>() {
        Ok(length) if length <= MAX_MESSAGE_BYTES => Ok(length),
        _ => Err(SipError::TooLarge),
    }
}

/// Whether `name` is the header `long` in its long or compact form, in any case.
pub(crate) fn is_header(name: &str, long: &str) -> bool {
    long_name(name).eq_ignore_ascii_case(long)
}

fn long_name(name: &str) -> &str {
    let name = name.trim();
    COMPACT_NAMES.iter().find(|(compact, _)| compact.eq_ignore_ascii_case(name)).map_or(name, |(_, long)| long)
}

/// Checks what rsipstack's line splitter lets through silently: lines without a colon (dropped), a
/// continuation before any header (dropped), names that are not tokens.
fn check_header_lines(lines: &str) -> Result<(), SipError> {
    if lines.is_empty() {
        return Ok(());
    }
    for (index, line) in lines.split("\r\n").enumerate() {
        if line.starts_with([' ', '\t']) {
            if index == 0 {
                return Err(malformed("continuation line before the first header"));
            }
            continue;
        }
        let name = line.split_once(':').map(|(name, _)| name.trim_end_matches([' ', '\t']));
        if !name.is_some_and(is_token) {
            return Err(malformed(format!("header line {line:.60}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    const FIXTURES: [&str; 4] =
        ["invite-sdp.sip", "200-ok-record-route.sip", "401-two-challenges.sip", "407-proxy-auth.sip"];

    /// A message from header lines and a body, joined with CRLF.
    fn raw(lines: &[&str], body: &str) -> Vec<u8> {
        format!("{}\r\n\r\n{body}", lines.join("\r\n")).into_bytes()
    }

    const BYE: [&str; 6] = [
        "BYE sip:gw@198.51.100.7:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye1",
        "From: <sip:verify@pound.example.com>;tag=1928301774",
        "To: <sip:+14155550100@trunk.example.net>;tag=a6c85cf",
        "Call-ID: a84b4c76e66710@192.0.2.10",
        "CSeq: 314160 BYE",
    ];

    fn bye_with(extra: &[&str], body: &str) -> Vec<u8> {
        raw(&[&BYE[..], extra].concat(), body)
    }

    #[test]
    fn an_invite_with_sdp() {
        let bytes = fixture("invite-sdp.sip");
        let invite = Message::parse(&bytes).unwrap();
        assert!(invite.is_request());
        assert_eq!(invite.method(), Some(&Method::Invite));
        assert_eq!(invite.uri(), Some("sip:+14155550100@trunk.example.net"));
        assert_eq!((invite.status(), invite.reason()), (None, None));
        assert_eq!(invite.call_id(), Some("a84b4c76e66710@192.0.2.10"));
        assert_eq!(invite.cseq(), Some((314159, Method::Invite)));
        let from = invite.from().unwrap();
        assert_eq!(from.display.as_deref(), Some("Pound Verifier"));
        assert_eq!(from.uri, "sip:verify@pound.example.com");
        assert_eq!(invite.from_tag().as_deref(), Some("1928301774"));
        assert_eq!(invite.to_tag(), None);
        assert_eq!(invite.contact().unwrap().uri, "sip:verify@192.0.2.10:5060");
        assert_eq!(invite.header_values("Allow"), ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"]);
        assert_eq!(invite.header("content-TYPE"), Some("application/sdp"));
        assert_eq!(invite.header("c"), Some("application/sdp"));
        let via = invite.top_via().unwrap();
        assert_eq!(
            via,
            Via {
                transport: "UDP".into(),
                host: "192.0.2.10".into(),
                port: Some(5060),
                branch: Some("z9hG4bK776asdhds".into()),
                received: None,
                rport: Some(None),
            }
        );
        let body = std::str::from_utf8(invite.body()).unwrap();
        assert!(body.starts_with("v=0\r\n") && body.ends_with("a=sendrecv\r\n"), "{body:?}");
        assert_eq!(invite.body().len().to_string(), invite.header("Content-Length").unwrap());
        // Written in long form with Content-Length last, the fixture comes back byte for byte.
        assert_eq!(invite.to_bytes(), bytes);
    }

    #[test]
    fn a_200_ok_with_record_route() {
        let ok = Message::parse(&fixture("200-ok-record-route.sip")).unwrap();
        assert!(!ok.is_request());
        assert_eq!((ok.status(), ok.reason(), ok.method(), ok.uri()), (Some(200), Some("OK"), None, None));
        assert_eq!(
            ok.record_route(),
            ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>", "<sip:edge.example.com;lr;transport=udp>"]
        );
        let via = ok.top_via().unwrap();
        assert_eq!(via.received.as_deref(), Some("203.0.113.9"));
        assert_eq!(via.rport, Some(Some(5060)));
        assert_eq!(ok.to_tag().as_deref(), Some("a6c85cf"));
        let contact = ok.contact().unwrap();
        assert_eq!(contact.uri, "sip:gw@198.51.100.7:5060;transport=udp");
        assert!(contact.params.is_empty());
    }

    #[test]
    fn folded_header_lines_are_unfolded() {
        let challenge = Message::parse(&fixture("401-two-challenges.sip")).unwrap();
        let values: Vec<_> = challenge.header_lines("www-authenticate").collect();
        assert_eq!(values.len(), 2);
        assert_eq!(
            values[1],
            r#"Digest realm="trunk.example.net", nonce="5f1e8a3c2b7d9e04", opaque="b0a5e1c2", algorithm=SHA-256, qop="auth,auth-int""#
        );
        assert_eq!(challenge.header("Server"), Some("trunk-sbc/4.2"));

        let bye = Message::parse(&bye_with(
            &["Subject: I know you're there,", "   pick up the phone", "\tand talk to me!", "Content-Length: 0"],
            "",
        ))
        .unwrap();
        assert_eq!(bye.header("s"), Some("I know you're there, pick up the phone and talk to me!"));
        assert!(bye.to_bytes().windows(11).any(|w| w == b"phone and t"));
    }

    #[test]
    fn a_value_that_starts_on_a_continuation_line_has_no_leading_space() {
        // Found by the fuzzer (fixtures/fuzz/sip_message/crash-038bf43c2207d82f): the fold is
        // whitespace, not part of the value (RFC 3261 §7.3.1), so the Call-ID was read as " x"
        // here and as "x" once written back.
        let folded =
            raw(&[BYE[0], BYE[1], BYE[2], BYE[3], "Call-ID:", " a84b4c76e66710", BYE[5], "Subject: \t", "\tlate"], "");
        let message = Message::parse(&folded).unwrap();
        assert_eq!(message.call_id(), Some("a84b4c76e66710"));
        assert_eq!(message.header("Subject"), Some("late"));
        assert_eq!(Message::parse(&message.to_bytes()).unwrap().to_bytes(), message.to_bytes());
    }

    #[test]
    fn compact_names_are_read_and_written_long() {
        let bytes = raw(
            &[
                "INVITE sip:bob@biloxi.example.com SIP/2.0",
                "v: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b43",
                "i: 3848276298220188511@atlanta.example.com",
                "m: <sip:alice@client.atlanta.example.com;transport=tcp>",
                "f: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
                "t: Bob <sip:bob@biloxi.example.com>",
                "CSeq: 1 INVITE",
                "k: 100rel",
                "o: dialog",
                "u: talk, hold",
                "x: 1800",
                "y: abc",
                "a: *;audio",
                "j: *;video",
                "d: proxy",
                "e: gzip",
                "r: <sip:carol@example.com>",
                "b: <sip:alice@atlanta.example.com>",
                "c: application/sdp",
                "l: 4",
            ],
            "v=0\r\n",
        );
        let invite = Message::parse(&bytes).unwrap();
        for (long, value) in [
            ("Via", "SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b43"),
            ("Call-ID", "3848276298220188511@atlanta.example.com"),
            ("Contact", "<sip:alice@client.atlanta.example.com;transport=tcp>"),
            ("From", "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"),
            ("To", "Bob <sip:bob@biloxi.example.com>"),
            ("Supported", "100rel"),
            ("Event", "dialog"),
            ("Allow-Events", "talk, hold"),
            ("Session-Expires", "1800"),
            ("Identity", "abc"),
            ("Accept-Contact", "*;audio"),
            ("Reject-Contact", "*;video"),
            ("Request-Disposition", "proxy"),
            ("Content-Encoding", "gzip"),
            ("Refer-To", "<sip:carol@example.com>"),
            ("Referred-By", "<sip:alice@atlanta.example.com>"),
            ("Content-Type", "application/sdp"),
        ] {
            assert_eq!(invite.header(long), Some(value), "{long}");
            assert_eq!(invite.header(&long.to_uppercase()), Some(value), "{long}");
        }
        assert_eq!(invite.header_values("u"), ["talk", "hold"]);
        assert_eq!(invite.body(), b"v=0\r");
        assert_eq!(invite.from().unwrap().display.as_deref(), Some("Alice"));

        let written = String::from_utf8(invite.to_bytes()).unwrap();
        assert!(written.contains("\r\nVia: SIP/2.0/TCP client"), "{written}");
        assert!(written.contains("\r\nAllow-Events: talk, hold\r\n"), "{written}");
        assert!(written.contains("\r\nReject-Contact: *;video\r\n"), "{written}");
        assert!(written.ends_with("\r\nContent-Length: 4\r\n\r\nv=0\r"), "{written}");
        let names: Vec<_> = written.lines().skip(1).filter_map(|line| line.split_once(':')).map(|(n, _)| n).collect();
        assert!(names.iter().all(|name| name.len() > 1), "{names:?}");
    }

    #[test]
    fn ipv6_hosts_in_request_uri_via_and_contact() {
        let bytes = raw(
            &[
                "OPTIONS sip:alice@[2001:db8::10]:5070;transport=udp SIP/2.0",
                "Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::9;rport=5061",
                "Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK0",
                "From: <sip:bob@[2001:db8::9]>;tag=x",
                "To: <sip:alice@[2001:db8::10]:5070>",
                "Call-ID: v6",
                "CSeq: 2 OPTIONS",
                "Contact: \"Bob\" <sip:bob@[2001:db8::9]:5062;transport=udp>;expires=60",
                "Content-Length: 0",
            ],
            "",
        );
        let options = Message::parse(&bytes).unwrap();
        assert_eq!(options.uri(), Some("sip:alice@[2001:db8::10]:5070;transport=udp"));
        assert_eq!(
            options.top_via().unwrap(),
            Via {
                transport: "UDP".into(),
                host: "[2001:db8::9]".into(),
                port: Some(5060),
                branch: Some("z9hG4bK1".into()),
                received: Some("2001:db8::9".into()),
                rport: Some(Some(5061)),
            }
        );
        assert_eq!(Via::parse(options.header_values("Via")[1]).unwrap().port, None);
        let contact = options.contact().unwrap();
        assert_eq!(contact.uri, "sip:bob@[2001:db8::9]:5062;transport=udp");
        assert_eq!(contact.param("expires"), Some("60"));
        assert_eq!(options.to().unwrap().uri, "sip:alice@[2001:db8::10]:5070");

        let proxy = Message::parse(&fixture("407-proxy-auth.sip")).unwrap();
        let via = proxy.top_via().unwrap();
        assert_eq!((via.transport.as_str(), via.host.as_str(), via.port), ("TCP", "[2001:db8::10]", Some(5060)));
    }

    #[test]
    fn tel_uris_as_request_uri_and_in_from_and_to() {
        let bytes = raw(
            &[
                "INVITE tel:+14155550100;phone-context=+1 SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKtel",
                "From: \"Verify\" <tel:+14155550199>;tag=abc",
                "To: tel:+14155550100;x=y",
                "Call-ID: tel-1",
                "CSeq: 1 INVITE",
                "Content-Length: 0",
            ],
            "",
        );
        let invite = Message::parse(&bytes).unwrap();
        assert_eq!(invite.uri(), Some("tel:+14155550100;phone-context=+1"));
        let from = invite.from().unwrap();
        assert_eq!((from.uri.as_str(), from.tag()), ("tel:+14155550199", Some("abc")));
        // Without <> every parameter belongs to the header (RFC 3261 §20.10).
        let to = invite.to().unwrap();
        assert_eq!((to.uri.as_str(), to.param("x")), ("tel:+14155550100", Some("y")));
        assert_eq!(to.to_string_value(), "<tel:+14155550100>;x=y");
    }

    #[test]
    fn list_headers_split_into_their_entries() {
        let bytes = bye_with(
            &[
                "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2, SIP/2.0/UDP p3.example.com;branch=z9hG4bKp3",
                "Record-Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
                "Record-Route: \"Odd, but legal\" <sip:p3.example.com;lr;x=\"a,b\">;y=\"<c,d>\"",
                "Contact: <sip:a@b>, <sip:c@d>",
                "Content-Length: 0",
            ],
            "",
        );
        let bye = Message::parse(&bytes).unwrap();
        let vias = bye.header_values("v");
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[2], "SIP/2.0/UDP p3.example.com;branch=z9hG4bKp3");
        assert_eq!(bye.top_via().unwrap().branch.as_deref(), Some("z9hG4bKbye1"));
        assert_eq!(
            bye.record_route(),
            [
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr>",
                "\"Odd, but legal\" <sip:p3.example.com;lr;x=\"a,b\">;y=\"<c,d>\"",
            ]
        );
        assert_eq!(bye.header_values("Contact"), ["<sip:a@b>", "<sip:c@d>"]);
        assert_eq!(bye.contact().unwrap().uri, "sip:a@b");
    }

    #[test]
    fn the_body_is_exactly_content_length_bytes() {
        let padded = bye_with(&["Content-Type: text/plain", "Content-Length: 5"], "hello, and some padding");
        assert_eq!(Message::parse(&padded).unwrap().body(), b"hello");
        // Without Content-Length a datagram's body runs to its end.
        let unframed = bye_with(&["Content-Type: text/plain"], "all of it\r\n");
        assert_eq!(Message::parse(&unframed).unwrap().body(), b"all of it\r\n");
        // Binary bodies are kept as they are.
        let mut binary = bye_with(&["Content-Type: application/octet-stream", "Content-Length: 4"], "");
        binary.extend_from_slice(&[0, 0xff, 0x80, b'\n']);
        assert_eq!(Message::parse(&binary).unwrap().body(), [0, 0xff, 0x80, b'\n']);
        let empty = Message::parse(&bye_with(&["Content-Length: 0"], "trailing")).unwrap();
        assert!(empty.body().is_empty());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("garbage", b"hello world\r\n\r\n".to_vec()),
            ("no end of headers", BYE.join("\r\n").into_bytes()),
            ("truncated body", bye_with(&["Content-Length: 10"], "short")),
            ("content-length not a number", bye_with(&["Content-Length: ten"], "")),
            ("negative content-length", bye_with(&["Content-Length: -1"], "")),
            ("conflicting content-length", bye_with(&["Content-Length: 1", "l: 2"], "ab")),
            ("line without colon", bye_with(&["Just text", "Content-Length: 0"], "")),
            ("name with space", bye_with(&["Bad Name: x"], "")),
            ("continuation first", raw(&[BYE[0], " folded", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("bare LF", bye_with(&["Subject: a\nb: c"], "")),
            ("bare LF in the start line", raw(&["SIP/2.0 200 OK\nX: y", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("bare CR", bye_with(&["Subject: a\rb: c"], "")),
            ("non-UTF-8 header", [&bye_with(&[], "")[..BYE.join("\r\n").len()], b"\r\nX: \xff\xfe\r\n\r\n"].concat()),
            ("status 99", raw(&["SIP/2.0 99 Low", BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: 1 BYE"], "")),
            ("status 2000", raw(&["SIP/2.0 2000 OK", BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: 1 BYE"], "")),
            ("status 700", raw(&["SIP/2.0 700 Odd", BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: 1 BYE"], "")),
            ("version", raw(&["SIP/3.0 200 OK", BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: 1 BYE"], "")),
            ("request version", raw(&["BYE sip:a@b SIP/3.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("double space", raw(&["BYE  sip:a@b SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("no uri scheme", raw(&["BYE gw.example.com SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("uri in brackets", raw(&["BYE <sip:a@b> SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("open ipv6", raw(&["BYE sip:a@[::1 SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("bad port", raw(&["BYE sip:a@b:50x0 SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("cseq method", raw(&[BYE[0], BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: 1 INVITE"], "")),
            ("cseq number", raw(&[BYE[0], BYE[1], BYE[2], BYE[3], BYE[4], "CSeq: one BYE"], "")),
            ("via", raw(&[BYE[0], "Via: SIP/2.0/UDP", BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("via port", raw(&[BYE[0], "Via: SIP/2.0/UDP host:abc;branch=z", BYE[2], BYE[3], BYE[4], BYE[5]], "")),
            ("from", raw(&[BYE[0], BYE[1], "From: <sip:a@b", BYE[3], BYE[4], BYE[5]], "")),
            ("empty call-id", raw(&[BYE[0], BYE[1], BYE[2], BYE[3], "Call-ID: ", BYE[5]], "")),
        ];
        for (what, bytes) in cases {
            assert!(Message::parse(&bytes).is_err(), "{what} was accepted");
        }
        for missing in MANDATORY_HEADERS {
            let lines: Vec<_> = BYE.iter().copied().filter(|line| !line.starts_with(missing)).collect();
            assert!(
                matches!(Message::parse(&raw(&lines, "")), Err(SipError::MissingHeader(name)) if name == missing),
                "{missing}"
            );
        }
    }

    #[test]
    fn oversized_messages_are_refused_before_parsing() {
        let big = bye_with(&[&format!("X-Padding: {}", "a".repeat(MAX_MESSAGE_BYTES))], "");
        assert!(matches!(Message::parse(&big), Err(SipError::TooLarge)));
        let too_long = bye_with(&["Content-Length: 70000"], "");
        assert!(matches!(Message::parse(&too_long), Err(SipError::TooLarge)));
    }

    #[test]
    fn every_truncation_of_a_message_is_refused() {
        for name in FIXTURES {
            let bytes = fixture(name);
            for end in 0..bytes.len() {
                assert!(Message::parse(&bytes[..end]).is_err(), "{name} cut at {end} was accepted");
            }
        }
    }

    /// A deterministic xorshift generator, so that any failure reproduces.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Bytes that mean something to the grammar, where a flip is most likely to confuse a parser.
    const SPECIAL: &[u8] = b"\r\n:;,<>\"[] @=\\\t";

    #[test]
    fn flipped_bytes_never_panic_and_whatever_parses_writes_back_readably() {
        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for name in FIXTURES {
            let original = fixture(name);
            for _ in 0..300 {
                let mut bytes = original.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(bytes.len());
                    bytes[at] = match rng.below(4) {
                        0 => rng.next() as u8,
                        1 => SPECIAL[rng.below(SPECIAL.len())],
                        2 => bytes[at] ^ 0x80,
                        _ => bytes[at].wrapping_add(1),
                    };
                }
                if let Ok(message) = Message::parse(&bytes) {
                    accepted += 1;
                    let written = message.to_bytes();
                    let reread = Message::parse(&written)
                        .unwrap_or_else(|err| panic!("{err} on rereading {}", String::from_utf8_lossy(&written)));
                    assert_eq!(String::from_utf8_lossy(&reread.to_bytes()), String::from_utf8_lossy(&written));
                }
            }
        }
        // Some flips land in harmless places (a body, a display name); the property above was exercised.
        assert!(accepted > 100, "{accepted}");
    }

    #[test]
    fn random_bytes_are_refused() {
        let mut rng = Xorshift(42);
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(Message::parse(&bytes).is_err());
            let mut with_end = bytes.clone();
            with_end.extend_from_slice(b"\r\n\r\n");
            assert!(Message::parse(&with_end).is_err());
        }
    }

    #[test]
    fn parsing_what_we_write_gives_back_the_same_message() {
        for name in FIXTURES {
            let message = Message::parse(&fixture(name)).unwrap();
            let written = message.to_bytes();
            assert_eq!(Message::parse(&written).unwrap().to_bytes(), written, "{name}");
        }
        let mut built = Message::request(Method::Options, "sip:trunk.example.net")
            .with_header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKopt")
            .with_header("From", "<sip:verify@pound.example.com>;tag=1")
            .with_header("To", "<sip:trunk.example.net>")
            .with_header("i", "opt-1")
            .with_header("CSeq", "1 OPTIONS");
        built.set_body("text/plain", b"ping".to_vec());
        let reread = Message::parse(&built.to_bytes()).unwrap();
        assert_eq!(reread.to_bytes(), built.to_bytes());
        assert_eq!(reread.body(), b"ping");
        assert_eq!(reread.call_id(), Some("opt-1"));
    }

    #[test]
    fn extension_methods_are_read_and_kept() {
        let bytes = raw(
            &[
                "FROBNICATE sip:gw@198.51.100.7 SIP/2.0",
                "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx",
                "From: <sip:a@b>;tag=1",
                "To: <sip:c@d>",
                "Call-ID: ext",
                "CSeq: 9 FROBNICATE",
                "Content-Length: 0",
            ],
            "",
        );
        let request = Message::parse(&bytes).unwrap();
        assert_eq!(request.method(), Some(&Method::Other("FROBNICATE".into())));
        assert_eq!(request.cseq(), Some((9, Method::Other("FROBNICATE".into()))));
        assert_eq!(request.uri(), Some("sip:gw@198.51.100.7"));
        assert_eq!(request.to_bytes(), bytes);
        // Method names are case-sensitive.
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
    }

    #[test]
    fn method_names_round_trip() {
        for method in [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
            Method::Info,
            Method::Update,
            Method::Register,
            Method::Prack,
            Method::Message,
            Method::Notify,
            Method::Subscribe,
            Method::Refer,
            Method::Publish,
            Method::Other("FOO".into()),
        ] {
            assert_eq!(Method::parse(method.as_str()), method);
            assert_eq!(method.to_string(), method.as_str());
        }
    }

    #[test]
    fn the_request_uri_and_reason_phrase_stay_as_written() {
        // rsipstack would re-encode the escaped user part (`%2B` becomes `%252B`).
        let bytes = raw(
            &["BYE sip:%2B14155550100;npdi@gw.example.com;user=phone SIP/2.0", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]],
            "",
        );
        assert_eq!(Message::parse(&bytes).unwrap().uri(), Some("sip:%2B14155550100;npdi@gw.example.com;user=phone"));
        let bytes =
            raw(&["SIP/2.0 403 Caller Origination Number is Invalid", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "");
        assert_eq!(Message::parse(&bytes).unwrap().reason(), Some("Caller Origination Number is Invalid"));
        let bytes = raw(&["SIP/2.0 486 busy here", BYE[1], BYE[2], BYE[3], BYE[4], BYE[5]], "");
        assert_eq!(Message::parse(&bytes).unwrap().reason(), Some("busy here"));
    }

    #[test]
    fn building_and_editing_headers() {
        let mut message = Message::request(Method::Info, "sip:gw@198.51.100.7")
            .with_header("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1")
            .with_header("X-First", "1")
            .with_header("Via", "SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK2")
            .with_header("Content-Length", "999");
        message.set_header("v", "SIP/2.0/UDP 192.0.2.12;branch=z9hG4bK3");
        assert_eq!(message.header_values("Via"), ["SIP/2.0/UDP 192.0.2.12;branch=z9hG4bK3"]);
        message.add_header("x-first", "2");
        assert_eq!(message.header_values("X-FIRST"), ["1", "2"]);
        message.remove_header("X-First");
        assert_eq!(message.header("X-First"), None);
        message.set_body("application/dtmf-relay", b"Signal=#\r\nDuration=160\r\n".to_vec());
        assert_eq!(
            String::from_utf8(message.to_bytes()).unwrap(),
            "INFO sip:gw@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.12;branch=z9hG4bK3\r\n\
             Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=#\r\nDuration=160\r\n"
        );
        message.set_body("ignored", Vec::new());
        assert_eq!(message.header("Content-Type"), None);
        assert!(message.to_bytes().ends_with(b"\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn line_breaks_cannot_inject_headers() {
        let message = Message::response(200, "OK\r\nX-Evil: 1")
            .with_header("Subject", "hi\r\nX-Evil: 2")
            .with_header("X-Name\r\nX-Evil", "3");
        let written = String::from_utf8(message.to_bytes()).unwrap();
        assert!(!written.contains("\r\nX-Evil"), "{written}");
        assert_eq!(written.matches("\r\n").count(), 5, "{written}");
    }

    #[test]
    fn a_response_copies_the_transaction_headers_and_adds_the_to_tag() {
        let bytes = bye_with(
            &[
                "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1, SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2",
                "Content-Length: 0",
            ],
            "",
        );
        let mut request = Message::parse(&bytes).unwrap();
        request.set_header("To", "<sip:+14155550100@trunk.example.net>");
        let response = Message::response_to(&request, 486, Some("tag9"));
        assert_eq!((response.status(), response.reason()), (Some(486), Some("Busy Here")));
        assert_eq!(response.header_lines("Via").collect::<Vec<_>>(), request.header_lines("Via").collect::<Vec<_>>());
        assert_eq!(response.header_values("Via").len(), 3);
        assert_eq!(response.header("From"), request.header("From"));
        assert_eq!(response.header("To"), Some("<sip:+14155550100@trunk.example.net>;tag=tag9"));
        assert_eq!(response.call_id(), request.call_id());
        assert_eq!(response.cseq(), Some((314160, Method::Bye)));
        assert_eq!(response.header("Contact"), None);
        // A To that already has a tag keeps it.
        request.set_header("To", "<sip:b@b>;tag=old");
        assert_eq!(Message::response_to(&request, 200, Some("new")).to_tag().as_deref(), Some("old"));
        assert_eq!(Message::response_to(&request, 200, None).reason(), Some("OK"));
        assert_eq!(Message::response_to(&request, 199, None).reason(), Some("Early Dialog Terminated"));
        assert_eq!(Message::response_to(&request, 299, None).reason(), Some("Successful"));
        assert_eq!(Message::response_to(&request, 699, None).reason(), Some("Global Failure"));
        assert!(Message::parse(&Message::response_to(&request, 487, None).to_bytes()).is_ok());
    }
}
