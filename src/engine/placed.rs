//! A call the engine has placed, which ends on the wire properly whatever
//! happens to the code watching it.
//!
//! The call runs as its own task. Aborting that task would drop the call
//! without a CANCEL or BYE: the callee would keep ringing, or sit in a live
//! call nobody serves. So nothing aborts it: [`PlacedCall::end`] asks the
//! call to end (the machine sends CANCEL or BYE and waits for the answer),
//! and dropping a `PlacedCall` does the same, so a verification task that
//! panics or is torn down still leaves a call that finishes by itself. The
//! engine waits for every call task before it returns: each holds a clone of
//! the engine's `alive` sender (mini-redis's shutdown-complete pattern).

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;

use crate::call::{CallEvent, CallReport};
use crate::net::{CallSetup, Endpoint, NetError, run_call};

/// The running call task; see the module docs.
pub(super) struct PlacedCall {
    task: JoinHandle<Result<CallReport, NetError>>,
    end: watch::Sender<bool>,
}

impl PlacedCall {
    /// Places the call; its events arrive on the returned receiver as the
    /// call makes them. `alive` is held until the call task ends.
    pub(super) fn place(
        endpoint: Endpoint,
        mut setup: CallSetup,
        alive: mpsc::Sender<()>,
    ) -> (PlacedCall, mpsc::UnboundedReceiver<CallEvent>) {
        let (end, ended) = watch::channel(false);
        setup.cancel = Some(ended);
        let (events, progress) = mpsc::unbounded_channel();
        let call_span = tracing::info_span!("call", call_id = tracing::field::Empty);
        let recorder = call_span.clone();
        let task = tokio::spawn(
            async move {
                let _alive = alive;
                run_call(&endpoint, setup, move |event| {
                    if let CallEvent::Calling { call_id } = event {
                        recorder.record("call_id", call_id.as_str());
                    }
                    // Nobody listening any more (the watcher is gone): the call
                    // was told to end and goes on doing so.
                    let _ = events.send(event.clone());
                })
                .await
            }
            .instrument(call_span),
        );
        (PlacedCall { task, end }, progress)
    }

    /// Asks the call to end now (CANCEL before the answer, BYE after it).
    pub(super) fn end(&self) {
        self.end.send_replace(true);
    }

    /// Waits for the call to be over.
    pub(super) async fn finished(&mut self) -> Result<Result<CallReport, NetError>, JoinError> {
        (&mut self.task).await
    }
}

impl Drop for PlacedCall {
    fn drop(&mut self) {
        // A call already over ignores this; a running one ends on the wire.
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::call::Prompts;
    use crate::dialplan::Dialplan;
    use crate::media::codec::Codec;
    use crate::net::{PhoneSetup, run_phone};
    use crate::phone::{PhoneConfig, PhoneEvent, PressVia};
    use crate::sip::Timers;
    use crate::vocab::Transport;

    /// A phone that rings forever; its events on the returned receiver.
    async fn ringing_phone() -> (SocketAddr, mpsc::UnboundedReceiver<PhoneEvent>) {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = PhoneConfig {
            local_sip: loopback,
            transport: Transport::Udp,
            local_rtp: loopback,
            press: String::new(),
            play: None,
            early_media: None,
            via: PressVia::Rfc4733,
            press_after: Duration::ZERO,
            answer_after: Duration::ZERO,
            reject: None,
            never_answer: true,
            hangup_after: None,
            silent: false,
            codecs: vec![Codec::Pcmu],
            srtp: crate::vocab::SrtpPolicy::Off,
            timers: Timers::default(),
        };
        let (ready, address) = tokio::sync::oneshot::channel();
        let (events, received) = mpsc::unbounded_channel();
        let setup = PhoneSetup { listen: loopback, calls: None, config, tls: Default::default() };
        tokio::spawn(run_phone(
            setup,
            move |address| {
                let _ = ready.send(address);
            },
            move |event| {
                let _ = events.send(event.clone());
            },
        ));
        (address.await.unwrap(), received)
    }

    fn setup(phone: SocketAddr) -> CallSetup {
        let plan = Dialplan::builtin("press-pound").unwrap().unwrap();
        let prompts = Prompts::load(&plan).unwrap();
        CallSetup {
            target: format!("sip:verify@{phone}"),
            next_hop: phone,
            peer_name: phone.ip().to_string(),
            transport: Transport::Udp,
            from_user: "pound".into(),
            from_display: None,
            asserted_identity: None,
            credentials: None,
            codecs: vec![Codec::Pcmu],
            dialplan: Arc::new(plan),
            prompts: Arc::new(prompts),
            timers: Timers::default(),
            rtp_ports: None,
            cancel: None,
            rtp_learning_packets: crate::rtp::DEFAULT_LEARNING_PACKETS,
            stir: None,
            seed: None,
            srtp: crate::vocab::SrtpPolicy::Off,
            code: None,
            capture: None,
        }
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<PhoneEvent>) -> PhoneEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("in time").expect("the phone runs")
    }

    #[tokio::test]
    async fn a_dropped_call_still_ends_on_the_wire_and_the_engine_can_wait_for_it() {
        let (phone, mut heard) = ringing_phone().await;
        let (alive, mut all_over) = mpsc::channel::<()>(1);
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
        let (call, _progress) = PlacedCall::place(endpoint, setup(phone), alive);
        assert!(matches!(next(&mut heard).await, PhoneEvent::Invited { .. }));
        // What a panicking or torn-down watcher does: let go of the call.
        drop(call);
        // The phone hears the CANCEL, and the call task ends after it.
        assert!(matches!(next(&mut heard).await, PhoneEvent::CallEnded { .. }));
        let over = tokio::time::timeout(Duration::from_secs(5), all_over.recv()).await;
        assert_eq!(over, Ok(None), "the call task still holds its token");
    }
}
