//! Dialog state (RFC 3261 §12) and the identifiers that name dialogs and
//! transactions.
//!
//! pound always uses loose routing (RFC 3261 §16.12): every proxy of the
//! route set is assumed to carry `;lr`, as every proxy since 2002 does.

use std::net::SocketAddr;

use rand::Rng;

use super::{Message, Method, SipError};
use crate::vocab::Transport;

/// A fresh transaction branch: the magic cookie and 64 random bits. The
/// caller's RNG is a CSPRNG seeded from the OS in service (so branches cannot
/// be guessed by an off-path attacker) and a fixed seed in simulation.
pub fn new_branch(rng: &mut impl Rng) -> String {
    format!("z9hG4bK{:016x}", rng.next_u64())
}

/// A fresh From/To tag.
pub fn new_tag(rng: &mut impl Rng) -> String {
    format!("{:016x}", rng.next_u64())
}

/// A fresh Call-ID, scoped to `host`.
pub fn new_call_id(host: &str, rng: &mut impl Rng) -> String {
    format!("{:016x}{:016x}@{host}", rng.next_u64(), rng.next_u64())
}

/// Our Via for a new request from `local`, with a fresh branch and `rport`
/// (RFC 3581: answers come back to the address the request left from).
pub fn via(transport: Transport, local: SocketAddr, rng: &mut impl Rng) -> String {
    format!("SIP/2.0/{} {local};branch={};rport", transport.via_name(), new_branch(rng))
}

/// Our Contact as `user` at `local` over `transport`: a `sips:` URI when
/// the request it answers or goes with is `sips:` (RFC 5630 §3.1.3), else
/// a `sip:` URI naming a stream transport, so that the peer's requests
/// come back the way ours went.
pub fn contact(user: &str, local: SocketAddr, transport: Transport, sips: bool) -> String {
    match (transport, sips) {
        (Transport::Tls, true) => format!("<sips:{user}@{local}>"),
        (Transport::Udp, _) => format!("<sip:{user}@{local}>"),
        (Transport::Tcp, _) => format!("<sip:{user}@{local};transport=tcp>"),
        (Transport::Tls, false) => format!("<sip:{user}@{local};transport=tls>"),
    }
}

/// One side of an established dialog.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (as UAC) or To (as UAS) header value, with our tag.
    pub local: String,
    pub local_tag: String,
    /// The peer's header value, with its tag.
    pub remote: String,
    pub remote_tag: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route headers for in-dialog requests, in the order they are sent.
    pub route_set: Vec<String>,
    /// Our Contact, repeated in refreshes and answers.
    pub local_contact: String,
    local_cseq: u32,
    remote_cseq: Option<u32>,
}

impl Dialog {
    /// The caller's dialog, from its INVITE and the 2xx that answered it.
    pub fn as_caller(invite: &Message, response: &Message) -> Result<Dialog, SipError> {
        let from = invite.header("From").ok_or(SipError::MissingHeader("From"))?;
        let to = response.header("To").ok_or(SipError::MissingHeader("To"))?;
        let mut route_set = response.record_route();
        route_set.reverse();
        Ok(Dialog {
            call_id: invite.call_id().ok_or(SipError::MissingHeader("Call-ID"))?.to_string(),
            local: from.to_string(),
            local_tag: invite.from_tag().ok_or(SipError::MissingHeader("From tag"))?,
            remote: to.to_string(),
            remote_tag: response.to_tag().ok_or(SipError::MissingHeader("To tag"))?,
            remote_target: response.contact().ok_or(SipError::MissingHeader("Contact"))?.uri,
            route_set,
            local_contact: invite.header("Contact").ok_or(SipError::MissingHeader("Contact"))?.to_string(),
            local_cseq: invite.cseq().ok_or(SipError::MissingHeader("CSeq"))?.0,
            remote_cseq: None,
        })
    }

    /// The callee's dialog, from the INVITE it answers with `local_tag`; its
    /// own requests start at a random CSeq.
    pub fn as_callee(
        invite: &Message,
        local_tag: &str,
        local_contact: &str,
        rng: &mut impl Rng,
    ) -> Result<Dialog, SipError> {
        let to = invite.to().ok_or(SipError::MissingHeader("To"))?;
        let local =
            if to.tag().is_some() { to.to_string_value() } else { format!("{};tag={local_tag}", to.to_string_value()) };
        Ok(Dialog {
            call_id: invite.call_id().ok_or(SipError::MissingHeader("Call-ID"))?.to_string(),
            local,
            local_tag: local_tag.to_string(),
            remote: invite.header("From").ok_or(SipError::MissingHeader("From"))?.to_string(),
            remote_tag: invite.from_tag().ok_or(SipError::MissingHeader("From tag"))?,
            remote_target: invite.contact().ok_or(SipError::MissingHeader("Contact"))?.uri,
            route_set: invite.record_route(),
            local_contact: local_contact.to_string(),
            local_cseq: u32::from(rng.next_u32() as u16),
            remote_cseq: invite.cseq().map(|(n, _)| n),
        })
    }

    /// A new request inside the dialog with the next CSeq; `via` is the full
    /// Via value (with a fresh branch).
    pub fn request(&mut self, method: Method, via: &str) -> Message {
        self.local_cseq += 1;
        self.build(method, self.local_cseq, via)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_cseq` (§13.2.2.4): its
    /// own transaction, so its own branch.
    pub fn ack(&self, invite_cseq: u32, via: &str) -> Message {
        self.build(Method::Ack, invite_cseq, via)
    }

    fn build(&self, method: Method, cseq: u32, via: &str) -> Message {
        let mut request = Message::request(method.clone(), self.remote_target.clone())
            .with_header("Via", via)
            .with_header("Max-Forwards", "70")
            .with_header("From", self.local.clone())
            .with_header("To", self.remote.clone())
            .with_header("Call-ID", self.call_id.clone())
            .with_header("CSeq", format!("{cseq} {}", method.as_str()));
        for route in &self.route_set {
            request.add_header("Route", route.clone());
        }
        request
    }

    /// Whether an incoming request belongs to this dialog.
    pub fn matches(&self, request: &Message) -> bool {
        request.call_id() == Some(self.call_id.as_str())
            && request.from_tag().as_deref() == Some(self.remote_tag.as_str())
            && request.to_tag().as_deref() == Some(self.local_tag.as_str())
    }

    /// Records the CSeq of an incoming in-dialog request; `false` when it is
    /// lower than one already seen (§12.2.2: answer 500). Equal is a
    /// retransmission and accepted.
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> bool {
        match self.remote_cseq {
            Some(seen) if cseq < seen => false,
            _ => {
                self.remote_cseq = Some(cseq);
                true
            }
        }
    }

    /// The peer's Contact changed (target refresh by re-INVITE or UPDATE).
    pub fn refresh_target(&mut self, request: &Message) {
        if let Some(contact) = request.contact() {
            self.remote_target = contact.uri;
        }
    }
}
