//! The client transactions of a node's one SIP endpoint, socket-free: every
//! request a handler (a call, the trunk watch, `pound phone`) sends, but an
//! ACK, runs as a [`ClientTransaction`] here, so that handlers are RFC 3261's
//! transaction users. The table retransmits (timers A and E), absorbs what
//! RFC 3261 §17.1 absorbs (retransmitted non-2xx finals, which it
//! acknowledges itself, late provisionals, retransmitted non-INVITE finals)
//! and hands the handler one [`ClientEvent`] per response it passes up, and
//! for timer B or F and a transport that could not send.
//!
//! A 2xx to INVITE goes up as often as it comes (RFC 6026's Accepted state):
//! the ACK for it is the handler's (§13.2.2.4), sent past this table.
//!
//! A transaction outlives its handler: a call that is dropped while its BYE
//! or CANCEL is unanswered still has it retransmitted until it is answered or
//! times out; only the events are dropped.
//!
//! Driving: [`ClientTransactions::start`] and the `handle_*` inputs with the
//! current time; then send everything [`ClientTransactions::poll_transmit`]
//! returns before handing out [`ClientTransactions::poll_event`] (an ACK for
//! a challenge leaves before the request that answers it), and call
//! [`ClientTransactions::handle_timeout`] at [`ClientTransactions::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::endpoint::HandlerId;
use super::{ClientTransaction, Message, Method, Timers, TransactionEvent};
use crate::vocab::Transmit;

/// Names a client transaction (RFC 3261 §17.1.3): the branch of the
/// request's top Via and its method. A CANCEL shares its INVITE's branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub branch: String,
    pub method: Method,
}

impl TransactionKey {
    /// The transaction `request` starts; `None` without a Via branch.
    pub fn of_request(request: &Message) -> Option<TransactionKey> {
        let branch = request.top_via()?.branch.filter(|branch| !branch.is_empty())?;
        Some(TransactionKey { branch, method: request.method()?.clone() })
    }

    /// The transaction `response` answers: its top Via branch and its CSeq method.
    pub fn of_response(response: &Message) -> Option<TransactionKey> {
        let branch = response.top_via()?.branch?;
        Some(TransactionKey { branch, method: response.cseq()?.1 })
    }
}

/// What a transaction tells its handler.
#[derive(Debug)]
pub struct ClientEvent {
    pub handler: HandlerId,
    pub key: TransactionKey,
    pub event: TransactionEvent,
}

/// A message the table sends: a request, a retransmission of it, or the ACK
/// for a non-2xx final. `path` is whatever the caller gave [`ClientTransactions::start`]
/// to say how it goes (the transport, a TLS peer's name).
#[derive(Debug)]
pub struct Outgoing<P> {
    pub key: TransactionKey,
    pub path: P,
    pub transmit: Transmit<Message>,
}

/// What became of a response handed to [`ClientTransactions::handle_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// Its transaction took it.
    Taken,
    /// It names a live transaction of this handler but comes from elsewhere
    /// than where the request went: the transaction ignores it, and the
    /// handler may count it as foreign.
    Foreign(HandlerId),
    /// No transaction of this Call-ID has its branch and method: a stray.
    Unknown,
}

/// Where and how a transaction's messages go.
#[derive(Debug, Clone)]
pub struct Hop<P> {
    pub destination: SocketAddr,
    /// Whatever else the caller needs to send (the transport, a TLS peer's name).
    pub path: P,
    /// TCP or TLS: the transport retransmits, the transaction does not.
    pub reliable: bool,
    pub timers: Timers,
}

struct Entry<P> {
    /// The key it was started under, kept rather than parsed again from the
    /// request at every response and timer.
    key: TransactionKey,
    /// `None` once the handler is gone: the transaction runs on, silently.
    handler: Option<HandlerId>,
    call_id: String,
    hop: Hop<P>,
    transaction: ClientTransaction,
    /// The transaction's timer as `deadlines` holds it.
    deadline: Option<Instant>,
}

/// The table. Transactions are kept in the order they started, so that what
/// falls due at one instant leaves in one order, run after run.
///
/// Indexed by deadline and by handler: a node at rate keeps thousands of
/// transactions alive (an answered INVITE's lingers 32 s for retransmitted
/// 2xx), and finding the next timer or a handler's transactions by walking
/// them all cost every timer and every call's end as much as the whole table.
pub struct ClientTransactions<P> {
    keys: HashMap<TransactionKey, u64>,
    live: BTreeMap<u64, Entry<P>>,
    /// Every live transaction's next timer.
    deadlines: BTreeSet<(Instant, u64)>,
    /// The live transactions of each handler that is still there.
    handlers: HashMap<HandlerId, Vec<u64>>,
    next: u64,
    transmits: VecDeque<Outgoing<P>>,
    events: VecDeque<ClientEvent>,
}

impl<P> Default for ClientTransactions<P> {
    fn default() -> Self {
        ClientTransactions {
            keys: HashMap::new(),
            live: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            handlers: HashMap::new(),
            next: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }
}

impl<P: Clone> ClientTransactions<P> {
    /// `handler` sends `request` through `hop`. An ACK (which has no
    /// transaction), a request without a branch, or one whose transaction is
    /// already running, is sent once as it is; every other request starts a
    /// transaction, and the request is its first transmit.
    pub fn start(&mut self, now: Instant, handler: HandlerId, request: Message, hop: Hop<P>) {
        let key = TransactionKey::of_request(&request);
        let runs = key.as_ref().is_some_and(|key| key.method != Method::Ack && !self.keys.contains_key(key));
        let Some(key) = key.clone().filter(|_| runs) else {
            let key = key.unwrap_or(TransactionKey { branch: String::new(), method: Method::Ack });
            if key.method != Method::Ack {
                tracing::warn!(?key, "a request without a branch of its own is sent without a transaction");
            }
            let transmit = Transmit { destination: hop.destination, contents: request };
            self.transmits.push_back(Outgoing { key, path: hop.path, transmit });
            return;
        };
        let call_id = request.call_id().unwrap_or_default().to_string();
        let transaction = ClientTransaction::new(request, hop.reliable, hop.timers, now);
        let id = self.next;
        self.next += 1;
        self.keys.insert(key.clone(), id);
        self.live.insert(id, Entry { key, handler: Some(handler), call_id, hop, transaction, deadline: None });
        self.handlers.entry(handler).or_default().push(id);
        self.collect(id);
    }

    /// A response from `from`. Matched by branch, method and Call-ID; taken
    /// only from where its request went.
    pub fn handle_response(&mut self, now: Instant, from: SocketAddr, response: Message) -> Matched {
        let Some(id) = TransactionKey::of_response(&response).and_then(|key| self.keys.get(&key).copied()) else {
            return Matched::Unknown;
        };
        let Some(entry) = self.live.get_mut(&id) else { return Matched::Unknown };
        if response.call_id() != Some(entry.call_id.as_str()) || !entry.transaction.matches(&response) {
            return Matched::Unknown;
        }
        if from != entry.hop.destination {
            return entry.handler.map_or(Matched::Unknown, Matched::Foreign);
        }
        entry.transaction.handle_response(now, response);
        self.collect(id);
        Matched::Taken
    }

    /// Fires whichever transaction timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<u64> = self.deadlines.iter().take_while(|(at, _)| *at <= now).map(|(_, id)| *id).collect();
        // In the order they started, as the table keeps them.
        due.sort_unstable();
        for id in due {
            if let Some(entry) = self.live.get_mut(&id) {
                entry.transaction.handle_timeout(now);
            }
            self.collect(id);
        }
    }

    /// The transport could not send a message of the transaction `key`.
    pub fn handle_transport_error(&mut self, key: &TransactionKey) {
        let Some(id) = self.keys.get(key).copied() else { return };
        if let Some(entry) = self.live.get_mut(&id) {
            entry.transaction.handle_transport_error();
        }
        self.collect(id);
    }

    /// `handler` is gone: its transactions run to their end, and their
    /// events go nowhere.
    pub fn forget(&mut self, handler: HandlerId) {
        for id in self.handlers.remove(&handler).unwrap_or_default() {
            if let Some(entry) = self.live.get_mut(&id) {
                entry.handler = None;
            }
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing<P>> {
        self.transmits.pop_front()
    }

    /// The next event for a handler.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Transactions that have not ended.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no transaction runs.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Moves what transaction `id` produced to the queues, and forgets it once it has ended.
    fn collect(&mut self, id: u64) {
        let Some(entry) = self.live.get_mut(&id) else { return };
        while let Some(contents) = entry.transaction.poll_transmit() {
            let transmit = Transmit { destination: entry.hop.destination, contents };
            self.transmits.push_back(Outgoing { key: entry.key.clone(), path: entry.hop.path.clone(), transmit });
        }
        while let Some(event) = entry.transaction.poll_event() {
            if let Some(handler) = entry.handler {
                self.events.push_back(ClientEvent { handler, key: entry.key.clone(), event });
            }
        }
        let deadline = entry.transaction.poll_timeout().filter(|_| !entry.transaction.is_terminated());
        if deadline != entry.deadline {
            if let Some(at) = entry.deadline {
                self.deadlines.remove(&(at, id));
            }
            if let Some(at) = deadline {
                self.deadlines.insert((at, id));
            }
            entry.deadline = deadline;
        }
        if !entry.transaction.is_terminated() {
            return;
        }
        if let Some(handler) = entry.handler
            && let Some(ids) = self.handlers.get_mut(&handler)
        {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.handlers.remove(&handler);
            }
        }
        if let Some(entry) = self.live.remove(&id) {
            self.keys.remove(&entry.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CALL: HandlerId = HandlerId(1);
    const PEER: &str = "192.0.2.9:5060";

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    fn hop(reliable: bool) -> Hop<()> {
        Hop { destination: peer(), path: (), reliable, timers: Timers::default() }
    }

    fn request(method: Method, branch: &str) -> Message {
        Message::request(method.clone(), format!("sip:callee@{PEER}"))
            .with_header("Via", format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport"))
            .with_header("From", "<sip:pound@192.0.2.1>;tag=ours")
            .with_header("To", "<sip:callee@192.0.2.9>")
            .with_header("Call-ID", "call-1")
            .with_header("CSeq", format!("1 {}", method.as_str()))
    }

    fn reply(request: &Message, status: u16) -> Message {
        Message::response_to(request, status, Some("theirs"))
    }

    fn drain(table: &mut ClientTransactions<()>) -> (Vec<Message>, Vec<ClientEvent>) {
        let sent = std::iter::from_fn(|| table.poll_transmit()).map(|out| out.transmit.contents).collect();
        (sent, std::iter::from_fn(|| table.poll_event()).collect())
    }

    fn statuses(events: &[ClientEvent]) -> Vec<Option<u16>> {
        events
            .iter()
            .map(|event| match &event.event {
                TransactionEvent::Provisional(r) | TransactionEvent::Final(r) => r.status(),
                TransactionEvent::Timeout | TransactionEvent::TransportError => None,
            })
            .collect()
    }

    /// A table that has sent `request` (a fresh one of `method`) and nothing else yet.
    fn started(method: Method, branch: &str, reliable: bool) -> (Instant, ClientTransactions<()>, Message) {
        let t0 = Instant::now();
        let mut table = ClientTransactions::default();
        let request = request(method, branch);
        table.start(t0, CALL, request.clone(), hop(reliable));
        assert_eq!(drain(&mut table).0.len(), 1, "the request leaves once at the start");
        (t0, table, request)
    }

    /// Steps from deadline to deadline until `end`, counting what goes out.
    fn run_until(table: &mut ClientTransactions<()>, end: Instant) -> (usize, Vec<ClientEvent>) {
        let (mut sent, mut events) = (0, Vec::new());
        while let Some(at) = table.poll_timeout().filter(|at| *at <= end) {
            table.handle_timeout(at);
            let (out, happened) = drain(table);
            sent += out.len();
            events.extend(happened);
        }
        (sent, events)
    }

    #[test]
    fn provisionals_and_2xx_to_invite_go_up_every_time_a_retransmitted_non_2xx_is_acked_here() {
        let (t0, mut table, invite) = started(Method::Invite, "z9hG4bKi1", false);
        for _ in 0..2 {
            assert_eq!(table.handle_response(t0, peer(), reply(&invite, 180)), Matched::Taken);
        }
        for _ in 0..2 {
            assert_eq!(table.handle_response(t0, peer(), reply(&invite, 200)), Matched::Taken);
        }
        let (sent, events) = drain(&mut table);
        assert!(sent.is_empty(), "the ACK for a 2xx is the handler's: {sent:?}");
        assert_eq!(statuses(&events), [Some(180), Some(180), Some(200), Some(200)]);
        assert!(events.iter().all(|e| e.handler == CALL && e.key == TransactionKey::of_request(&invite).unwrap()));

        // A second INVITE is refused: its 486 is acknowledged here, and again for each retransmission.
        let second = request(Method::Invite, "z9hG4bKi2");
        table.start(t0, CALL, second.clone(), hop(false));
        drain(&mut table);
        table.handle_response(t0, peer(), reply(&second, 486));
        table.handle_response(t0, peer(), reply(&second, 486));
        let (sent, events) = drain(&mut table);
        assert!(sent.len() == 2 && sent.iter().all(|m| m.method() == Some(&Method::Ack)), "{sent:?}");
        assert_eq!(statuses(&events), [Some(486)], "the retransmission is absorbed");
    }

    #[test]
    fn timer_b_reaches_the_handler_as_an_event() {
        let (t0, mut table, _) = started(Method::Invite, "z9hG4bKlost", false);
        let (sent, events) = run_until(&mut table, t0 + Duration::from_secs(100));
        assert_eq!(sent, 6, "timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s");
        let [event] = &events[..] else { panic!("{events:?}") };
        assert!(matches!(event.event, TransactionEvent::Timeout));
        assert_eq!((event.handler, &event.key.branch), (CALL, &"z9hG4bKlost".to_string()));
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn a_dropped_handlers_bye_is_retransmitted_until_answered_and_its_events_go_nowhere() {
        let (t0, mut table, bye) = started(Method::Bye, "z9hG4bKbye", false);
        table.forget(CALL);
        let (sent, events) = run_until(&mut table, t0 + Duration::from_secs(2));
        assert_eq!(sent, 2, "timer E goes on: 0.5 and 1.5 s");
        assert!(events.is_empty());
        assert_eq!(table.handle_response(t0 + Duration::from_secs(2), peer(), reply(&bye, 200)), Matched::Taken);
        let (sent, events) = drain(&mut table);
        assert!(sent.is_empty() && events.is_empty());
        let (sent, _) = run_until(&mut table, t0 + Duration::from_secs(100));
        assert_eq!(sent, 0, "answered: nothing more goes out");
        assert!(table.is_empty(), "timer K ended it");
    }

    #[test]
    fn a_cancel_is_its_own_transaction_on_its_invites_branch() {
        let t0 = Instant::now();
        let mut table = ClientTransactions::default();
        let invite = request(Method::Invite, "z9hG4bKsame");
        let cancel = request(Method::Cancel, "z9hG4bKsame");
        table.start(t0, CALL, invite.clone(), hop(true));
        table.start(t0, CALL, cancel.clone(), hop(true));
        assert_eq!(drain(&mut table).0.len(), 2);
        assert_eq!(table.len(), 2);
        table.handle_response(t0, peer(), reply(&cancel, 200));
        table.handle_response(t0, peer(), reply(&invite, 487));
        let (sent, events) = drain(&mut table);
        assert_eq!(sent.len(), 1, "the ACK for the 487");
        let methods: Vec<_> =
            events.iter().map(|e| (e.key.method.clone(), statuses(std::slice::from_ref(e)))).collect();
        assert_eq!(methods, [(Method::Cancel, vec![Some(200)]), (Method::Invite, vec![Some(487)])]);
        assert!(table.is_empty(), "a reliable transport has nothing to absorb");
    }

    #[test]
    fn responses_from_elsewhere_or_of_another_call_are_not_taken() {
        let (t0, mut table, invite) = started(Method::Invite, "z9hG4bKi", false);
        let stranger: SocketAddr = "198.51.100.7:5060".parse().unwrap();
        assert_eq!(table.handle_response(t0, stranger, reply(&invite, 486)), Matched::Foreign(CALL));
        let mut other_call = reply(&invite, 486);
        other_call.set_header("Call-ID", "call-2");
        assert_eq!(table.handle_response(t0, peer(), other_call), Matched::Unknown);
        let mut other_branch = reply(&invite, 486);
        other_branch.set_header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx");
        assert_eq!(table.handle_response(t0, peer(), other_branch), Matched::Unknown);
        assert!(drain(&mut table).1.is_empty());
        assert_eq!(table.handle_response(t0, peer(), reply(&invite, 180)), Matched::Taken);
        table.forget(CALL);
        assert_eq!(table.handle_response(t0, stranger, reply(&invite, 486)), Matched::Unknown);
    }

    #[test]
    fn an_ack_and_a_second_start_of_a_running_transaction_are_sent_once_without_a_transaction() {
        let t0 = Instant::now();
        let mut table = ClientTransactions::default();
        let options = request(Method::Options, "z9hG4bKo");
        table.start(t0, CALL, request(Method::Ack, "z9hG4bKa"), hop(false));
        table.start(t0, CALL, options.clone(), hop(false));
        table.start(t0, CALL, options, hop(false));
        assert_eq!(drain(&mut table).0.len(), 3);
        assert_eq!(table.len(), 1);
        let (sent, _) = run_until(&mut table, t0 + Duration::from_millis(600));
        assert_eq!(sent, 1, "one transaction retransmits, once");
    }

    #[test]
    fn the_indexes_follow_every_transaction_to_its_end() {
        let t0 = Instant::now();
        let mut table = ClientTransactions::default();
        let other = HandlerId(2);
        let invite = request(Method::Invite, "z9hG4bKix");
        let bye = request(Method::Bye, "z9hG4bKbx");
        table.start(t0, CALL, invite.clone(), hop(false));
        table.start(t0 + Duration::from_millis(100), other, bye.clone(), hop(false));
        drain(&mut table);
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_millis(500)), "the INVITE's timer A first");
        table.handle_response(t0, peer(), reply(&invite, 180));
        assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_millis(600)), "a provisional stops timer A");
        table.forget(other);
        table.handle_response(t0 + Duration::from_secs(1), peer(), reply(&bye, 200));
        table.handle_response(t0 + Duration::from_secs(1), peer(), reply(&invite, 200));
        let (_, events) = drain(&mut table);
        assert!(events.iter().all(|e| e.handler == CALL), "the forgotten handler hears nothing");
        assert_eq!(table.handlers.keys().collect::<Vec<_>>(), [&CALL], "the forgotten handler is unlisted");
        run_until(&mut table, t0 + Duration::from_secs(100));
        assert!(table.is_empty(), "timers K and M ended both");
        assert!(table.deadlines.is_empty() && table.handlers.is_empty() && table.keys.is_empty());
    }

    #[test]
    fn a_transport_error_reaches_the_handler() {
        let t0 = Instant::now();
        let mut table = ClientTransactions::default();
        let register = request(Method::Register, "z9hG4bKr");
        table.start(t0, CALL, register.clone(), hop(true));
        let out = table.poll_transmit().unwrap();
        table.handle_transport_error(&out.key);
        let (_, events) = drain(&mut table);
        assert!(matches!(events[..], [ClientEvent { event: TransactionEvent::TransportError, .. }]));
        assert!(table.is_empty());
    }
}
