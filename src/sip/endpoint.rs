//! Whose SIP request is this: the routing table of a node's one SIP endpoint,
//! socket-free. Every call, the trunk watch and `pound phone` are handlers
//! behind the same socket; the table learns from what each handler sends
//! and says, for every request that arrives, which handler gets it or what
//! the endpoint answers itself. Responses belong to the endpoint's client
//! transactions ([`super::transactions`]), which tell their handlers.
//!
//! - A request goes to the handler whose INVITE created the dialog: same
//!   Call-ID, and a To tag equal to that handler's From tag.
//! - Anything else is stray: an out-of-dialog OPTIONS (a trunk's keep-alive)
//!   is answered 200, an ACK is dropped (it is never answered), every other
//!   request is answered 481 (§12.2.2) — unless a catch-all handler (a UAS
//!   such as `pound phone`) takes new requests.
//!
//! The table also holds the endpoint's server transactions (§17.2), so that
//! they outlive the handler that answered: a retransmitted request is
//! answered with the final response its handler sent, for 64·T1 after it,
//! even once that call is over (a peer whose 200 to BYE was lost gets it
//! again, not a 481); a CANCEL goes to the handler of the INVITE it cancels
//! (same branch, §9.2), is answered 200 by the endpoint when that INVITE
//! already has its final response, and 481 when no INVITE matches.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{Message, Method};

/// The methods pound accepts.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, UPDATE";

/// The bodies pound understands.
pub const ACCEPT: &str = "application/sdp";

/// Names one handler behind the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub u64);

/// What becomes of an incoming message.
#[derive(Debug, Clone)]
pub enum Route {
    Deliver(HandlerId),
    /// The endpoint answers the request itself, with this response.
    Reply(Message),
    Drop,
}

/// How long a server transaction answers retransmissions with its final
/// response: 64·T1 with the default T1 of 500 ms (Timers H and J, RFC 3261
/// §17.2.1 and §17.2.2).
pub const SERVER_TRANSACTION_LIFETIME: Duration = Duration::from_secs(32);

/// Final responses kept at once. Each is kept 32 s, so this is ~250
/// transactions a second; under a flood beyond that the oldest go first, and
/// their retransmissions are handled as before (by the handler, or 481).
const ANSWERED_MAX: usize = 8192;

/// A server transaction (§17.2.3): the top Via's branch and sent-by, and
/// the method, so that another peer reusing a branch is not answered with
/// a response of someone else's call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: (String, Option<u16>),
    method: Method,
}

/// The final responses sent, to answer retransmissions, oldest first.
#[derive(Default)]
struct Answered {
    responses: HashMap<ServerKey, Message>,
    order: VecDeque<(Instant, ServerKey)>,
}

impl Answered {
    fn insert(&mut self, now: Instant, key: ServerKey, response: Message) {
        self.expire(now);
        if self.order.len() >= ANSWERED_MAX
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.responses.remove(&oldest);
        }
        if self.responses.insert(key.clone(), response).is_none() {
            self.order.push_back((now + SERVER_TRANSACTION_LIFETIME, key));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((until, _)) = self.order.front()
            && *until <= now
        {
            if let Some((_, key)) = self.order.pop_front() {
                self.responses.remove(&key);
            }
        }
    }
}

/// The server transaction of a request, or of the response to one with
/// `method`; `None` without a branch.
fn server_key(message: &Message, method: Method) -> Option<ServerKey> {
    let via = message.top_via()?;
    Some(ServerKey { branch: via.branch?, sent_by: (via.host, via.port), method })
}

/// What the table learnt from one handler, to forget it all when it leaves.
#[derive(Default)]
struct Learnt {
    call_ids: Vec<String>,
}

/// A dialog's owner and its From tag (the To tag of requests sent to it).
struct DialogOwner {
    handler: HandlerId,
    local_tag: String,
}

/// The routing table.
#[derive(Default)]
pub struct Router {
    handlers: HashMap<HandlerId, Learnt>,
    /// Call-ID → the handler whose INVITE created the dialog.
    dialogs: HashMap<String, DialogOwner>,
    catch_all: Option<HandlerId>,
    /// Final responses handlers sent, by server transaction.
    answered: Answered,
    /// INVITEs delivered and not answered finally yet: branch → handler.
    invites: HashMap<String, HandlerId>,
}

impl Router {
    /// A new handler; it receives nothing until it sends.
    pub fn add(&mut self, handler: HandlerId) {
        self.handlers.entry(handler).or_default();
    }

    /// A handler that also receives every request no dialog claims (a UAS).
    pub fn add_catch_all(&mut self, handler: HandlerId) {
        self.add(handler);
        self.catch_all = Some(handler);
    }

    /// The handler is gone: nothing reaches it any more.
    pub fn remove(&mut self, handler: HandlerId) {
        let Some(learnt) = self.handlers.remove(&handler) else { return };
        for call_id in learnt.call_ids {
            self.dialogs.remove(&call_id);
        }
        if self.catch_all == Some(handler) {
            self.catch_all = None;
        }
        self.invites.retain(|_, owner| *owner != handler);
    }

    /// `handler` sends `message`: an INVITE's Call-ID and From tag bring
    /// the dialog's requests to it.
    pub fn sent(&mut self, handler: HandlerId, message: &Message) {
        let Some(learnt) = self.handlers.get_mut(&handler) else { return };
        let (Some(method), Some(call_id)) = (message.method(), message.call_id()) else { return };
        if *method == Method::Invite
            && !self.dialogs.contains_key(call_id)
            && let Some(local_tag) = message.from_tag()
        {
            learnt.call_ids.push(call_id.to_string());
            self.dialogs.insert(call_id.to_string(), DialogOwner { handler, local_tag });
        }
    }

    /// Where the request `message` goes (a response: nowhere). `new_tag`
    /// makes the To tag of a response the endpoint sends to a request that
    /// has none.
    pub fn route(&self, message: &Message, new_tag: impl FnOnce() -> String) -> Route {
        let call_id = message.call_id().unwrap_or_default();
        let Some(method) = message.method() else { return Route::Drop };
        if let Some(owner) = self.dialogs.get(call_id)
            && message.to_tag().as_deref() == Some(owner.local_tag.as_str())
        {
            return Route::Deliver(owner.handler);
        }
        if let Some(handler) = self.catch_all {
            return Route::Deliver(handler);
        }
        match method {
            Method::Ack => Route::Drop,
            Method::Options if message.to_tag().is_none() => Route::Reply(
                Message::response_to(message, 200, Some(&new_tag()))
                    .with_header("Allow", ALLOW)
                    .with_header("Accept", ACCEPT),
            ),
            _ => Route::Reply(Message::response_to(message, 481, Some(&new_tag()))),
        }
    }

    /// A handler sends `response`: a final one answers the retransmissions
    /// of its request from now on. A 2xx to an INVITE ends the transaction
    /// at once (§17.2.1): its retransmissions are the handler's to send.
    pub fn responded(&mut self, now: Instant, response: &Message) {
        let Some(status) = response.status().filter(|status| *status >= 200) else { return };
        let Some(key) = response.cseq().and_then(|(_, method)| server_key(response, method)) else { return };
        if key.method == Method::Invite {
            self.invites.remove(&key.branch);
            if status < 300 {
                return;
            }
        }
        self.answered.insert(now, key, response.clone());
    }

    /// Where `request`, arriving at `now`, goes, with the endpoint's server
    /// transactions first (see the module docs), then [`Router::route`].
    pub fn route_at(&mut self, now: Instant, message: &Message, new_tag: impl FnOnce() -> String) -> Route {
        let Some(key) = message.method().and_then(|method| server_key(message, method.clone())) else {
            return self.route(message, new_tag);
        };
        self.answered.expire(now);
        if let Some(response) = self.answered.responses.get(&key) {
            return Route::Reply(response.clone());
        }
        if key.method == Method::Cancel {
            let invite = ServerKey { method: Method::Invite, ..key.clone() };
            if let Some(final_response) = self.answered.responses.get(&invite) {
                // Too late to cancel: the INVITE has its final answer (§9.2).
                return Route::Reply(Message::response_to(message, 200, final_response.to_tag().as_deref()));
            }
            return match self.invites.get(&key.branch) {
                Some(handler) => Route::Deliver(*handler),
                None => Route::Reply(Message::response_to(message, 481, Some(&new_tag()))),
            };
        }
        let route = self.route(message, new_tag);
        if let (Method::Invite, Route::Deliver(handler)) = (&key.method, &route) {
            let handler = *handler;
            self.invites.insert(key.branch, handler);
        }
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HandlerId = HandlerId(1);
    const B: HandlerId = HandlerId(2);
    const PHONE: HandlerId = HandlerId(3);

    fn request(method: Method, call_id: &str, branch: &str, from_tag: &str, to_tag: Option<&str>) -> Message {
        let to = match to_tag {
            Some(tag) => format!("<sip:callee@192.0.2.9>;tag={tag}"),
            None => "<sip:callee@192.0.2.9>".to_string(),
        };
        Message::request(method.clone(), "sip:callee@192.0.2.9")
            .with_header("Via", format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport"))
            .with_header("From", format!("<sip:pound@192.0.2.1>;tag={from_tag}"))
            .with_header("To", to)
            .with_header("Call-ID", call_id)
            .with_header("CSeq", format!("1 {}", method.as_str()))
    }

    fn invite(call_id: &str, branch: &str, tag: &str) -> Message {
        request(Method::Invite, call_id, branch, tag, None)
    }

    /// The callee's request inside the dialog `call_id`, addressed to `our_tag`.
    fn from_callee(method: Method, call_id: &str, our_tag: &str) -> Message {
        request(method, call_id, "z9hG4bKcallee", "callee-tag", Some(our_tag))
    }

    fn tag() -> String {
        "endpoint-tag".into()
    }

    /// Two calls, A and B, each with its INVITE sent.
    fn two_calls() -> Router {
        let mut router = Router::default();
        router.add(A);
        router.add(B);
        router.sent(A, &invite("call-a", "z9hG4bKa1", "tag-a"));
        router.sent(B, &invite("call-b", "z9hG4bKb1", "tag-b"));
        router
    }

    #[test]
    fn responses_are_for_the_transactions_not_the_router() {
        let router = two_calls();
        let ringing = Message::response_to(&invite("call-a", "z9hG4bKa1", "tag-a"), 180, Some("x"));
        assert!(matches!(router.route(&ringing, tag), Route::Drop));
    }

    #[test]
    fn requests_in_a_dialog_go_to_its_call_and_never_to_another() {
        let router = two_calls();
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-a", "tag-a"), tag), Route::Deliver(A)));
        assert!(matches!(router.route(&from_callee(Method::Info, "call-b", "tag-b"), tag), Route::Deliver(B)));
        // B's tag on A's Call-ID: no dialog has both.
        let crossed = router.route(&from_callee(Method::Bye, "call-a", "tag-b"), tag);
        assert!(matches!(crossed, Route::Reply(ref r) if r.status() == Some(481)), "{crossed:?}");
    }

    #[test]
    fn stray_requests_are_answered_481_and_stray_acks_dropped() {
        let router = two_calls();
        for method in [Method::Bye, Method::Info, Method::Invite, Method::Update] {
            let stray = from_callee(method.clone(), "call-unknown", "tag-a");
            let Route::Reply(response) = router.route(&stray, tag) else { panic!("{method:?} not answered") };
            assert_eq!(response.status(), Some(481), "{method:?}");
            assert_eq!(response.call_id(), Some("call-unknown"));
        }
        assert!(matches!(router.route(&from_callee(Method::Ack, "call-unknown", "t"), tag), Route::Drop));
        // Our own Call-ID without a To tag is no request in the dialog either.
        let untagged = request(Method::Bye, "call-a", "z9hG4bKx", "callee-tag", None);
        let Route::Reply(response) = router.route(&untagged, tag) else { panic!("not answered") };
        assert_eq!(response.status(), Some(481));
        assert_eq!(response.to_tag().as_deref(), Some("endpoint-tag"), "a To tag is added where none was");
    }

    #[test]
    fn out_of_dialog_options_are_answered_200_with_what_pound_accepts() {
        let router = Router::default();
        let ping = request(Method::Options, "ping-1", "z9hG4bKping", "trunk-tag", None);
        let Route::Reply(response) = router.route(&ping, tag) else { panic!("OPTIONS not answered") };
        assert_eq!(response.status(), Some(200));
        assert_eq!(response.header("Allow"), Some(ALLOW));
        assert_eq!(response.header("Accept"), Some(ACCEPT));
        assert_eq!(response.to_tag().as_deref(), Some("endpoint-tag"));
        // An OPTIONS inside a dialog nobody has is stray.
        let in_dead_dialog = from_callee(Method::Options, "gone", "tag-a");
        assert!(matches!(router.route(&in_dead_dialog, tag), Route::Reply(r) if r.status() == Some(481)));
    }

    #[test]
    fn a_removed_handler_receives_nothing_more() {
        let mut router = two_calls();
        router.remove(A);
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-a", "tag-a"), tag), Route::Reply(_)));
        // B is untouched, and A sending after its removal teaches nothing.
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-b", "tag-b"), tag), Route::Deliver(B)));
        router.sent(A, &invite("call-a2", "z9hG4bKa2", "tag-a2"));
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-a2", "tag-a2"), tag), Route::Reply(_)));
    }

    #[test]
    fn a_handler_cannot_take_over_another_ones_dialog() {
        let mut router = two_calls();
        router.sent(B, &invite("call-a", "z9hG4bKa1", "tag-b"));
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-a", "tag-a"), tag), Route::Deliver(A)));
    }

    #[test]
    fn options_and_register_make_no_dialog() {
        let mut router = Router::default();
        router.add(A);
        router.sent(A, &request(Method::Options, "watch", "z9hG4bKo", "w", None));
        router.sent(A, &request(Method::Register, "watch", "z9hG4bKr", "w", None));
        // Requests on their Call-ID are stray.
        let stray = request(Method::Bye, "watch", "z9hG4bKs", "trunk", Some("w"));
        assert!(matches!(router.route(&stray, tag), Route::Reply(r) if r.status() == Some(481)));
    }

    #[test]
    fn a_catch_all_takes_new_requests_but_not_others_dialogs() {
        let mut router = two_calls();
        router.add_catch_all(PHONE);
        let new_call = request(Method::Invite, "incoming", "z9hG4bKin", "caller", None);
        assert!(matches!(router.route(&new_call, tag), Route::Deliver(PHONE)));
        assert!(matches!(router.route(&from_callee(Method::Bye, "call-a", "tag-a"), tag), Route::Deliver(A)));
        router.remove(PHONE);
        assert!(matches!(router.route(&new_call, tag), Route::Reply(r) if r.status() == Some(481)));
    }

    /// The callee's BYE in call A, answered 200 by A at `now`.
    fn bye_answered(router: &mut Router, now: Instant) -> (Message, Message) {
        let bye = from_callee(Method::Bye, "call-a", "tag-a");
        assert!(matches!(router.route_at(now, &bye, tag), Route::Deliver(A)));
        let ok = Message::response_to(&bye, 200, None);
        router.responded(now, &ok);
        (bye, ok)
    }

    #[test]
    fn a_retransmitted_request_gets_the_cached_final_response_even_after_its_call_is_gone() {
        let t0 = Instant::now();
        let mut router = two_calls();
        let (bye, ok) = bye_answered(&mut router, t0);
        router.remove(A);
        let Route::Reply(again) = router.route_at(t0 + Duration::from_secs(31), &bye, tag) else {
            panic!("not answered")
        };
        assert_eq!(again.to_bytes(), ok.to_bytes(), "the same final response, not a 481");
        // Another peer reusing the branch is not answered with this call's response.
        let mut forged = bye.clone();
        forged.set_header("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcallee");
        assert!(matches!(router.route_at(t0, &forged, tag), Route::Reply(r) if r.status() == Some(481)));
        // After 64·T1 the transaction is over: the BYE is a stray.
        let late = router.route_at(t0 + SERVER_TRANSACTION_LIFETIME, &bye, tag);
        assert!(matches!(late, Route::Reply(r) if r.status() == Some(481)));
    }

    /// A UAS (catch-all) that has just been delivered an INVITE.
    fn invited_phone() -> (Instant, Router, Message) {
        let t0 = Instant::now();
        let mut router = Router::default();
        router.add_catch_all(PHONE);
        let invite = request(Method::Invite, "in", "z9hG4bKin", "caller", None);
        assert!(matches!(router.route_at(t0, &invite, tag), Route::Deliver(PHONE)));
        (t0, router, invite)
    }

    #[test]
    fn provisional_responses_and_2xx_to_invite_are_not_replayed() {
        let (t0, mut router, invite) = invited_phone();
        router.responded(t0, &Message::response_to(&invite, 180, Some("p")));
        assert!(matches!(router.route_at(t0, &invite, tag), Route::Deliver(PHONE)));
        // The UAS core retransmits its 2xx itself; the INVITE goes to it.
        router.responded(t0, &Message::response_to(&invite, 200, Some("p")));
        assert!(matches!(router.route_at(t0, &invite, tag), Route::Deliver(PHONE)));
    }

    #[test]
    fn a_cancel_goes_to_its_invites_handler_or_is_answered_by_the_endpoint() {
        let (t0, mut router, invite) = invited_phone();
        let cancel = request(Method::Cancel, "in", "z9hG4bKin", "caller", None);
        // Matched by its INVITE's branch, not by whoever takes new requests.
        router.catch_all = None;
        assert!(matches!(router.route_at(t0, &cancel, tag), Route::Deliver(PHONE)));
        // Once the INVITE has its final answer, the endpoint answers 200 itself.
        router.responded(t0, &Message::response_to(&invite, 487, Some("p")));
        let Route::Reply(ok) = router.route_at(t0, &cancel, tag) else { panic!("CANCEL not answered") };
        assert_eq!((ok.status(), ok.to_tag().as_deref()), (Some(200), Some("p")));
        // A CANCEL matching no INVITE: 481.
        let unknown = request(Method::Cancel, "x", "z9hG4bKnone", "caller", None);
        assert!(matches!(router.route_at(t0, &unknown, tag), Route::Reply(r) if r.status() == Some(481)));
        // Nor one whose INVITE's handler left before answering.
        let second = request(Method::Invite, "in2", "z9hG4bKin2", "caller", None);
        router.add_catch_all(PHONE);
        assert!(matches!(router.route_at(t0, &second, tag), Route::Deliver(PHONE)));
        router.remove(PHONE);
        let late = request(Method::Cancel, "in2", "z9hG4bKin2", "caller", None);
        assert!(matches!(router.route_at(t0, &late, tag), Route::Reply(r) if r.status() == Some(481)));
    }

    #[test]
    fn the_cache_of_final_responses_is_bounded() {
        let t0 = Instant::now();
        let mut router = Router::default();
        for n in 0..ANSWERED_MAX + 10 {
            let bye = request(Method::Bye, "c", &format!("z9hG4bK{n}"), "f", Some("t"));
            router.responded(t0, &Message::response_to(&bye, 200, None));
        }
        assert_eq!(router.answered.responses.len(), ANSWERED_MAX);
        assert_eq!(router.answered.order.len(), ANSWERED_MAX);
        let first = request(Method::Bye, "c", "z9hG4bK0", "f", Some("t"));
        assert!(matches!(router.route_at(t0, &first, tag), Route::Reply(r) if r.status() == Some(481)));
    }
}
