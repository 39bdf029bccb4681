//! RFC 3261 §17.1 client transactions as socket-free state machines, with the RFC 6026 Accepted state.
//!
//! The caller hands in responses, transport failures and the current time, sends whatever
//! [`ClientTransaction::poll_transmit`] returns, passes [`ClientTransaction::poll_event`] results up to
//! the dialog, and calls [`ClientTransaction::handle_timeout`] at [`ClientTransaction::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::message::{Message, Method};

/// Timer D on an unreliable transport: long enough to absorb every retransmission of a final response
/// (RFC 3261 §17.1.1.2 asks for at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

/// The RFC 3261 §17.1.1.1 timer values everything else is derived from.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// The round-trip estimate: first retransmission interval; 64·T1 is the transaction timeout.
    pub t1: Duration,
    /// The longest retransmission interval of a non-INVITE request.
    pub t2: Duration,
    /// How long the network may hold a message: timer K.
    pub t4: Duration,
}

impl Default for Timers {
    /// The RFC 3261 values: 500 ms, 4 s, 5 s.
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// What a client transaction tells the layer above it.
#[derive(Debug)]
pub enum TransactionEvent {
    /// A 1xx response. Every one is passed up, retransmissions included.
    Provisional(Message),
    /// A final response. For INVITE, retransmitted 2xx responses are passed up again so that the dialog
    /// can re-send its ACK; other retransmitted finals are absorbed.
    Final(Message),
    /// No final response arrived in time (timer B or F).
    Timeout,
    /// The transport could not send the request.
    TransportError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// INVITE sent, nothing heard yet.
    Calling,
    /// Non-INVITE sent, nothing heard yet.
    Trying,
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); retransmissions of it are absorbed.
    Completed,
    /// An INVITE got a 2xx (RFC 6026): further 2xx are passed up until timer M.
    Accepted,
    Terminated,
}

/// One client transaction: an INVITE transaction (§17.1.1) or a non-INVITE one (§17.1.2).
#[derive(Debug)]
pub struct ClientTransaction {
    request: Message,
    branch: String,
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: State,
    /// The ACK for a non-2xx final response, re-sent when that response is retransmitted.
    ack: Option<Message>,
    /// Timer A or E: when the request goes out again, and the interval that led there.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F: when to give up waiting for a response.
    give_up: Option<Instant>,
    /// Timer D, K or M: when to stop absorbing retransmitted responses and end.
    linger: Option<Instant>,
    transmit: VecDeque<Message>,
    events: VecDeque<TransactionEvent>,
}

impl ClientTransaction {
    /// Starts a transaction for `request`, which is the first thing [`poll_transmit`](Self::poll_transmit)
    /// returns. INVITE makes an INVITE transaction, any other method a non-INVITE one; an ACK (which has
    /// no transaction of its own) is sent once and the transaction ends at once. `reliable` is true for
    /// TCP and TLS, which retransmit by themselves.
    ///
    /// The request's top Via must carry the branch (RFC 3261 §8.1.1.7) that responses are matched on.
    pub fn new(request: Message, reliable: bool, timers: Timers, now: Instant) -> Self {
        let branch = request.top_via().and_then(|via| via.branch).unwrap_or_default();
        if branch.is_empty() {
            tracing::warn!("client transaction for a request without a Via branch: no response will match it");
        }
        let method = request.method().cloned();
        let invite = method == Some(Method::Invite);
        let mut transaction = ClientTransaction {
            request: request.clone(),
            branch,
            invite,
            reliable,
            timers,
            state: if invite { State::Calling } else { State::Trying },
            ack: None,
            retransmit: None,
            give_up: None,
            linger: None,
            transmit: VecDeque::from([request]),
            events: VecDeque::new(),
        };
        if method == Some(Method::Ack) {
            transaction.state = State::Terminated;
            return transaction;
        }
        if !reliable {
            transaction.retransmit = now.checked_add(timers.t1).map(|at| (at, timers.t1));
        }
        transaction.give_up = now.checked_add(timers.t1.saturating_mul(64));
        transaction
    }

    /// The branch of the request's top Via, which identifies the transaction.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// Whether `response` belongs to this transaction (RFC 3261 §17.1.3): same top Via branch and the
    /// same method in CSeq.
    pub fn matches(&self, response: &Message) -> bool {
        !response.is_request()
            && !self.branch.is_empty()
            && response.top_via().and_then(|via| via.branch).is_some_and(|branch| branch == self.branch)
            && response.cseq().is_some_and(|(_, method)| Some(&method) == self.request.method())
    }

    /// Feeds a response in. Responses that do not [`match`](Self::matches) are ignored.
    pub fn handle_response(&mut self, now: Instant, response: Message) {
        let Some(status) = response.status() else { return };
        if self.state == State::Terminated || !(100..=699).contains(&status) || !self.matches(&response) {
            return;
        }
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        match self.state {
            State::Calling | State::Trying | State::Proceeding if provisional => {
                self.state = State::Proceeding;
                // An INVITE that is ringing waits as long as the caller wants (it sends CANCEL);
                // a non-INVITE keeps retransmitting and still times out (§17.1.2.2).
                if self.invite {
                    self.retransmit = None;
                    self.give_up = None;
                }
                self.events.push_back(TransactionEvent::Provisional(response));
            }
            State::Calling | State::Proceeding if self.invite && success => {
                self.state = State::Accepted;
                self.retransmit = None;
                self.give_up = None;
                self.linger = now.checked_add(self.timers.t1.saturating_mul(64));
                self.events.push_back(TransactionEvent::Final(response));
            }
            State::Calling | State::Proceeding if self.invite => {
                let ack = self.ack_for(&response);
                self.transmit.push_back(ack.clone());
                self.ack = Some(ack);
                self.events.push_back(TransactionEvent::Final(response));
                self.complete(now, TIMER_D);
            }
            State::Trying | State::Proceeding => {
                self.events.push_back(TransactionEvent::Final(response));
                self.complete(now, self.timers.t4);
            }
            State::Accepted if success => self.events.push_back(TransactionEvent::Final(response)),
            State::Completed if self.invite && status >= 300 => {
                if let Some(ack) = &self.ack {
                    self.transmit.push_back(ack.clone());
                }
            }
            // Late provisionals, non-2xx after a 2xx, and retransmitted non-INVITE finals are absorbed.
            _ => {}
        }
    }

    /// Fires whichever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.linger.is_some_and(|at| at <= now) {
            self.terminate();
            return;
        }
        if self.give_up.is_some_and(|at| at <= now) {
            self.events.push_back(TransactionEvent::Timeout);
            self.terminate();
            return;
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            self.transmit.push_back(self.request.clone());
            let next = if self.invite {
                interval.saturating_mul(2)
            } else if self.state == State::Proceeding {
                self.timers.t2
            } else {
                interval.saturating_mul(2).min(self.timers.t2)
            };
            self.retransmit = now.checked_add(next).map(|at| (at, next));
        }
    }

    /// Reports that the transport failed to send. Before a final response this ends the transaction
    /// with [`TransactionEvent::TransportError`]; afterwards the layer above already has its answer and
    /// the transaction just ends.
    pub fn handle_transport_error(&mut self) {
        if matches!(self.state, State::Calling | State::Trying | State::Proceeding) {
            self.events.push_back(TransactionEvent::TransportError);
        }
        self.terminate();
    }

    /// The next message to send: the request and its retransmissions, and the ACK for a non-2xx final
    /// response. Still drained after the transaction has terminated.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmit.pop_front()
    }

    /// The next event for the layer above. Still drained after the transaction has terminated.
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit.map(|(at, _)| at), self.give_up, self.linger].into_iter().flatten().min()
    }

    /// Whether the transaction has ended; it then ignores all input.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    fn complete(&mut self, now: Instant, linger: Duration) {
        self.state = State::Completed;
        self.retransmit = None;
        self.give_up = None;
        // A reliable transport never delivers a retransmitted response, so there is nothing to absorb.
        if self.reliable {
            self.terminate();
        } else {
            self.linger = now.checked_add(linger);
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit = None;
        self.give_up = None;
        self.linger = None;
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
    fn ack_for(&self, response: &Message) -> Message {
        let request = &self.request;
        let mut ack = Message::request(Method::Ack, request.uri().unwrap_or_default());
        if let Some(via) = request.header_values("Via").first() {
            ack.add_header("Via", *via);
        }
        for route in request.header_lines("Route") {
            ack.add_header("Route", route);
        }
        ack.add_header("Max-Forwards", "70");
        for (name, source) in [("From", request), ("To", response), ("Call-ID", request)] {
            if let Some(value) = source.header(name) {
                ack.add_header(name, value);
            }
        }
        if let Some((number, _)) = request.cseq() {
            ack.add_header("CSeq", format!("{number} ACK"));
        }
        ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRANCH: &str = "z9hG4bK74bf9";

    fn invite() -> Message {
        let mut invite = Message::request(Method::Invite, "sip:+14155550100@trunk.example.net;user=phone")
            .with_header("Via", format!("SIP/2.0/UDP 192.0.2.10:5060;branch={BRANCH};rport"))
            .with_header("Max-Forwards", "70")
            .with_header("Route", "<sip:p1.example.net;lr>, <sip:p2.example.net;lr>")
            .with_header("Route", "<sip:p3.example.net;lr>")
            .with_header("From", "\"Pound\" <sip:verify@pound.example.com>;tag=9fxced76sl")
            .with_header("To", "<sip:+14155550100@trunk.example.net;user=phone>")
            .with_header("Call-ID", "3848276298220188511@192.0.2.10")
            .with_header("CSeq", "7 INVITE")
            .with_header("Contact", "<sip:verify@192.0.2.10:5060>");
        invite.set_body("application/sdp", b"v=0\r\n".to_vec());
        invite
    }

    fn options() -> Message {
        Message::request(Method::Options, "sip:trunk.example.net")
            .with_header("Via", format!("SIP/2.0/UDP 192.0.2.10:5060;branch={BRANCH}"))
            .with_header("From", "<sip:verify@pound.example.com>;tag=1")
            .with_header("To", "<sip:trunk.example.net>")
            .with_header("Call-ID", "opt-1")
            .with_header("CSeq", "1 OPTIONS")
    }

    fn reply(request: &Message, status: u16) -> Message {
        Message::response_to(request, status, Some("as83kd9bs"))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_millis((s * 1000.0).round() as u64)
    }

    /// Steps simulated time from deadline to deadline up to `end`, returning when each request went
    /// out again (relative to `start`) and every event.
    fn run(tx: &mut ClientTransaction, start: Instant, end: Duration) -> (Vec<Duration>, Vec<TransactionEvent>) {
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        while let Some(at) = tx.poll_timeout().filter(|at| *at <= start + end) {
            tx.handle_timeout(at);
            while let Some(message) = tx.poll_transmit() {
                assert_eq!(message.method(), tx.request().method(), "only the request is retransmitted");
                sent.push(at - start);
            }
            events.extend(std::iter::from_fn(|| tx.poll_event()));
        }
        (sent, events)
    }

    fn drain(tx: &mut ClientTransaction) -> (Vec<Message>, Vec<TransactionEvent>) {
        (std::iter::from_fn(|| tx.poll_transmit()).collect(), std::iter::from_fn(|| tx.poll_event()).collect())
    }

    #[test]
    fn the_request_goes_out_first() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), false, Timers::default(), start);
        assert_eq!(tx.branch(), BRANCH);
        assert_eq!(tx.poll_transmit().unwrap().to_bytes(), invite().to_bytes());
        assert!(tx.poll_transmit().is_none());
        assert!(tx.poll_event().is_none());
    }

    #[test]
    fn timer_a_doubles_until_timer_b_gives_up_at_32_seconds() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), false, Timers::default(), start);
        drain(&mut tx);
        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert_eq!(sent, [0.5, 1.5, 3.5, 7.5, 15.5, 31.5].map(secs));
        assert!(matches!(events[..], [TransactionEvent::Timeout]));
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn timers_follow_t1() {
        let start = Instant::now();
        let timers = Timers { t1: Duration::from_millis(100), ..Timers::default() };
        let mut tx = ClientTransaction::new(invite(), false, timers, start);
        drain(&mut tx);
        let (sent, events) = run(&mut tx, start, secs(100.0));
        // Timer B is 64·T1 = 6.4 s, just after the retransmission at 6.3 s.
        assert_eq!(sent, [0.1, 0.3, 0.7, 1.5, 3.1, 6.3].map(secs));
        assert!(matches!(events[..], [TransactionEvent::Timeout]));
        let mut tx = ClientTransaction::new(invite(), true, timers, start);
        assert_eq!(tx.poll_timeout(), Some(start + secs(6.4)));
        tx.handle_timeout(start + secs(6.39));
        assert!(!tx.is_terminated());
    }

    #[test]
    fn a_reliable_transport_gets_no_retransmissions() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), true, Timers::default(), start);
        drain(&mut tx);
        assert_eq!(tx.poll_timeout(), Some(start + secs(32.0)));
        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert!(sent.is_empty());
        assert!(matches!(events[..], [TransactionEvent::Timeout]));
    }

    #[test]
    fn provisional_responses_stop_a_and_b_and_are_all_passed_up() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), false, Timers::default(), start);
        drain(&mut tx);
        let (sent, _) = run(&mut tx, start, secs(1.0));
        assert_eq!(sent, [secs(0.5)]);

        tx.handle_response(start + secs(1.0), reply(&invite(), 100));
        tx.handle_response(start + secs(2.0), reply(&invite(), 180));
        tx.handle_response(start + secs(3.0), reply(&invite(), 180));
        let (transmitted, events) = drain(&mut tx);
        assert!(transmitted.is_empty());
        let statuses: Vec<_> = events
            .iter()
            .map(|event| match event {
                TransactionEvent::Provisional(response) => response.status(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(statuses, [Some(100), Some(180), Some(180)]);
        // Ringing goes on for as long as the caller wants: no timer runs.
        assert_eq!(tx.poll_timeout(), None);
        assert!(!tx.is_terminated());
    }

    #[test]
    fn a_non_2xx_final_is_acked_and_absorbed_until_timer_d() {
        let start = Instant::now();
        let request = invite();
        let mut tx = ClientTransaction::new(request.clone(), false, Timers::default(), start);
        drain(&mut tx);
        tx.handle_response(start + secs(0.2), reply(&request, 180));
        let busy = reply(&request, 486);
        tx.handle_response(start + secs(1.0), busy.clone());

        let (transmitted, events) = drain(&mut tx);
        assert!(
            matches!(&events[..], [TransactionEvent::Provisional(_), TransactionEvent::Final(r)] if r.status() == Some(486))
        );
        let [ack] = &transmitted[..] else { panic!("{transmitted:?}") };
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.uri(), request.uri());
        assert_eq!(ack.header_values("Via"), [format!("SIP/2.0/UDP 192.0.2.10:5060;branch={BRANCH};rport")]);
        assert_eq!(
            ack.header_values("Route"),
            ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"]
        );
        assert_eq!(ack.header("Max-Forwards"), Some("70"));
        assert_eq!(ack.header("From"), request.header("From"));
        assert_eq!(ack.header("To"), busy.header("To"));
        assert_eq!(ack.to_tag().as_deref(), Some("as83kd9bs"));
        assert_eq!(ack.call_id(), request.call_id());
        assert_eq!(ack.cseq(), Some((7, Method::Ack)));
        assert!(ack.body().is_empty());
        assert_eq!(ack.header("Content-Type"), None);
        assert_eq!(ack.header("Contact"), None);
        // The ACK is a message a peer can read.
        assert!(Message::parse(&ack.to_bytes()).is_ok());

        // A retransmitted 486 gets the same ACK again and is not passed up.
        tx.handle_response(start + secs(1.5), busy.clone());
        let (again, events) = drain(&mut tx);
        assert_eq!(again.iter().map(Message::to_bytes).collect::<Vec<_>>(), [ack.to_bytes()]);
        assert!(events.is_empty());

        assert_eq!(tx.poll_timeout(), Some(start + secs(33.0)));
        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert!(sent.is_empty() && events.is_empty());
        assert!(tx.is_terminated());
        tx.handle_response(start + secs(40.0), busy);
        assert_eq!(drain(&mut tx).0.len(), 0);
    }

    #[test]
    fn over_a_reliable_transport_timer_d_is_zero() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), true, Timers::default(), start);
        drain(&mut tx);
        tx.handle_response(start + secs(1.0), reply(&invite(), 603));
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
        let (transmitted, events) = drain(&mut tx);
        assert_eq!(transmitted.len(), 1);
        assert_eq!(transmitted[0].method(), Some(&Method::Ack));
        assert!(matches!(&events[..], [TransactionEvent::Final(r)] if r.status() == Some(603)));
    }

    #[test]
    fn retransmitted_2xx_are_passed_up_until_timer_m() {
        let start = Instant::now();
        let request = invite();
        let mut tx = ClientTransaction::new(request.clone(), false, Timers::default(), start);
        drain(&mut tx);
        let ok = reply(&request, 200);
        tx.handle_response(start + secs(2.0), ok.clone());
        // The ACK for a 2xx belongs to the dialog, not the transaction.
        let (transmitted, events) = drain(&mut tx);
        assert!(transmitted.is_empty());
        assert!(matches!(&events[..], [TransactionEvent::Final(r)] if r.status() == Some(200)));
        assert_eq!(tx.poll_timeout(), Some(start + secs(34.0)));

        tx.handle_response(start + secs(2.5), ok.clone());
        tx.handle_response(start + secs(2.6), reply(&request, 180));
        tx.handle_response(start + secs(2.7), reply(&request, 500));
        tx.handle_response(start + secs(3.5), ok.clone());
        let (transmitted, events) = drain(&mut tx);
        assert!(transmitted.is_empty());
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|event| matches!(event, TransactionEvent::Final(r) if r.status() == Some(200))));

        tx.handle_timeout(start + secs(33.9));
        assert!(!tx.is_terminated());
        tx.handle_timeout(start + secs(34.0));
        assert!(tx.is_terminated());
        tx.handle_response(start + secs(35.0), ok);
        assert!(tx.poll_event().is_none());
    }

    #[test]
    fn timer_e_doubles_up_to_t2_until_timer_f() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(options(), false, Timers::default(), start);
        drain(&mut tx);
        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert_eq!(sent, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5].map(secs));
        assert!(matches!(events[..], [TransactionEvent::Timeout]));
        assert!(tx.is_terminated());

        let timers = Timers { t2: Duration::from_secs(1), ..Timers::default() };
        let mut tx = ClientTransaction::new(options(), false, timers, start);
        drain(&mut tx);
        let (sent, _) = run(&mut tx, start, secs(4.0));
        assert_eq!(sent, [0.5, 1.5, 2.5, 3.5].map(secs));
    }

    #[test]
    fn a_proceeding_non_invite_retransmits_every_t2_and_still_times_out() {
        let start = Instant::now();
        let request = options();
        let mut tx = ClientTransaction::new(request.clone(), false, Timers::default(), start);
        drain(&mut tx);
        let (sent, _) = run(&mut tx, start, secs(0.7));
        assert_eq!(sent, [secs(0.5)]);
        tx.handle_response(start + secs(0.7), reply(&request, 100));
        tx.handle_response(start + secs(0.8), reply(&request, 100));
        let (_, events) = drain(&mut tx);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|event| matches!(event, TransactionEvent::Provisional(_))));

        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert_eq!(sent, [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5].map(secs));
        assert!(matches!(events[..], [TransactionEvent::Timeout]));
    }

    #[test]
    fn a_non_invite_final_is_absorbed_until_timer_k() {
        let start = Instant::now();
        let request = options();
        let mut tx = ClientTransaction::new(request.clone(), false, Timers::default(), start);
        drain(&mut tx);
        let ok = reply(&request, 200);
        tx.handle_response(start + secs(1.0), ok.clone());
        let (transmitted, events) = drain(&mut tx);
        assert!(transmitted.is_empty());
        assert!(matches!(&events[..], [TransactionEvent::Final(r)] if r.status() == Some(200)));
        assert_eq!(tx.poll_timeout(), Some(start + secs(6.0)));

        tx.handle_response(start + secs(2.0), ok);
        tx.handle_response(start + secs(2.1), reply(&request, 404));
        assert!(drain(&mut tx).1.is_empty());
        let (sent, events) = run(&mut tx, start, secs(100.0));
        assert!(sent.is_empty() && events.is_empty());
        assert!(tx.is_terminated());
    }

    #[test]
    fn over_a_reliable_transport_timer_k_is_zero() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(options(), true, Timers::default(), start);
        drain(&mut tx);
        assert_eq!(tx.poll_timeout(), Some(start + secs(32.0)));
        tx.handle_response(start + secs(0.1), reply(&options(), 404));
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
        let (transmitted, events) = drain(&mut tx);
        assert!(transmitted.is_empty());
        assert!(matches!(&events[..], [TransactionEvent::Final(r)] if r.status() == Some(404)));
    }

    #[test]
    fn responses_of_other_transactions_are_ignored() {
        let start = Instant::now();
        let request = invite();
        let mut tx = ClientTransaction::new(request.clone(), false, Timers::default(), start);
        drain(&mut tx);
        let before = tx.poll_timeout();

        let mut other_branch = reply(&request, 486);
        other_branch.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKother");
        let mut cancel_response = reply(&request, 200);
        cancel_response.set_header("CSeq", "7 CANCEL");
        let mut no_via = reply(&request, 180);
        no_via.remove_header("Via");
        let a_request = Message::request(Method::Bye, "sip:x@y").with_header("Via", request.header("Via").unwrap());
        for stray in [other_branch, cancel_response, no_via, a_request] {
            assert!(!tx.matches(&stray), "{stray:?}");
            tx.handle_response(start + secs(0.1), stray);
        }
        assert!(tx.matches(&reply(&request, 180)));
        assert_eq!(drain(&mut tx).1.len(), 0);
        assert_eq!(tx.poll_timeout(), before);
        assert!(!tx.is_terminated());
    }

    #[test]
    fn a_request_without_a_branch_matches_nothing() {
        let mut request = options();
        request.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5060");
        let tx = ClientTransaction::new(request.clone(), false, Timers::default(), Instant::now());
        assert_eq!(tx.branch(), "");
        assert!(!tx.matches(&reply(&request, 200)));
    }

    #[test]
    fn a_transport_error_ends_the_transaction() {
        let start = Instant::now();
        let mut tx = ClientTransaction::new(invite(), false, Timers::default(), start);
        drain(&mut tx);
        tx.handle_transport_error();
        tx.handle_transport_error();
        assert!(matches!(drain(&mut tx).1[..], [TransactionEvent::TransportError]));
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);

        // After a final response the layer above already has its answer.
        let mut tx = ClientTransaction::new(options(), false, Timers::default(), start);
        tx.handle_response(start, reply(&options(), 200));
        drain(&mut tx);
        tx.handle_transport_error();
        assert!(tx.is_terminated());
        assert!(tx.poll_event().is_none());
    }

    #[test]
    fn an_ack_is_sent_once_without_a_transaction() {
        let ack = Message::request(Method::Ack, "sip:a@b")
            .with_header("Via", "SIP/2.0/UDP h;branch=z9hG4bKack")
            .with_header("CSeq", "7 ACK");
        let mut tx = ClientTransaction::new(ack, false, Timers::default(), Instant::now());
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.poll_transmit().and_then(|m| m.method().cloned()), Some(Method::Ack));
        assert!(tx.poll_transmit().is_none());
    }
}
