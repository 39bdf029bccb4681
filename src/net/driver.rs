//! The one loop every socket-free machine runs in: send what it asks (SIP,
//! then RTP), hand its events out, sleep until its next deadline, and feed
//! it whichever input comes first (SIP from the endpoint, RTP, the timer, a
//! stop signal), in a fixed order that alternates.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use tokio::sync::watch;

use super::endpoint::{Delivery, SipHandle};
use super::socket::Socket;
use super::wake::Inputs;
use crate::clock;
use crate::sip::{Message, TransactionEvent, TransactionKey};
use crate::vocab::Transmit;

/// A machine as the driver sees it: inputs with the current time, outputs polled.
pub(super) trait Machine {
    type Event;

    /// A request, or a response its transaction did not take (see [`Delivery::Message`]).
    fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message);
    /// News of a client transaction the machine started by sending a request.
    fn handle_transaction(&mut self, now: Instant, key: TransactionKey, event: TransactionEvent);
    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    /// Sending to `to` failed, or (`None`) the endpoint is gone; `reason` says why.
    fn handle_transport_error(&mut self, now: Instant, to: Option<SocketAddr>, reason: &str);
    /// The stop signal turned true: wind down (the driver goes on until an
    /// event says it is over).
    fn handle_stop(&mut self, now: Instant);

    fn poll_sip(&mut self) -> Option<Transmit<Message>>;
    fn poll_rtp(&mut self, now: Instant) -> Option<Transmit<&[u8]>>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_timeout(&self) -> Option<Instant>;
}

/// How long a received RTP packet may wait, when the machine's next
/// deadline is at most this far off, for the wake-up that deadline brings
/// instead of waking the call itself: a call that sends media every 20 ms
/// then hears the callee's packets at its send ticks, one wake-up for both.
/// One packetization interval: a detector running on 20 ms frames hears
/// each frame at most one frame late, and the jitter buffer (60 ms for a
/// gap) still sees packets in their order.
const RTP_DEFERRAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Largest RTP datagram read; anything longer is no G.711 or Opus frame pound sends or takes.
const RTP_BUFFER: usize = 2048;

/// The inputs polled only once they woke the driver ([`Inputs`]); the
/// timer is cheap to poll and is polled every time it is armed.
const SIP: usize = 0;
const RTP: usize = 1;
const STOP: usize = 2;

/// Runs `machine` until `on_event` breaks with the result.
pub(super) async fn drive<M: Machine, R>(
    machine: &mut M,
    sip: &mut SipHandle,
    rtp: Option<&Socket>,
    stop: Option<watch::Receiver<bool>>,
    mut on_event: impl FnMut(M::Event) -> ControlFlow<R>,
) -> R {
    let mut datagram = vec![0u8; RTP_BUFFER];
    let inputs = Inputs::<3>::new();
    // One timer and one stop future for the whole call, kept across turns:
    // a new sleep per turn is a timer-wheel insertion and removal, a new
    // wait on the signal a waiter added and dropped, 50 times a second.
    let mut timer = pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut stop = pin!(stopped(stop));
    let (mut timer_armed, mut stop_armed, mut endpoint_open) = (false, true, true);
    let mut turn = false;
    loop {
        let now = clock::now();
        while let Some(Transmit { destination: to, contents: message }) = machine.poll_sip() {
            if let Err(e) = sip.send(&message, to).await {
                tracing::warn!(%to, error = %e, "SIP send failed");
                machine.handle_transport_error(clock::now(), Some(to), &e.to_string());
            }
        }
        if let Some(rtp) = rtp {
            while let Some(Transmit { destination: to, contents: packet }) = machine.poll_rtp(now) {
                // Media is best effort: a lost packet is a lost 20 ms, nothing more.
                let _ = rtp.try_send_to(packet, to);
            }
        }
        while let Some(event) = machine.poll_event() {
            if let ControlFlow::Break(result) = on_event(event) {
                return result;
            }
        }
        let deadline = machine.poll_timeout();
        inputs.defer(RTP, deadline.is_some_and(|deadline| deadline <= now + RTP_DEFERRAL));
        timer_armed = match deadline.map(tokio::time::Instant::from_std) {
            Some(deadline) => {
                // Unchanged, it stays as it is: still pending, or (a machine
                // that fell behind) already elapsed and ready at once.
                if !timer_armed || timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                true
            }
            None => false,
        };
        // Inputs ready at once are taken in a fixed order, not a random one,
        // so that a simulation replays the same from its seed; the order
        // alternates every turn, so that a machine whose deadline is always
        // due (one that falls behind) still reads SIP and RTP, and a flood
        // of packets cannot hold back its deadlines.
        turn = !turn;
        let input = std::future::poll_fn(|cx| {
            inputs.register(cx);
            let mut poll = |source: Source| match source {
                Source::Timer if timer_armed => timer.as_mut().poll(cx).map(|()| Input::Timeout),
                Source::Stop if stop_armed => match inputs.take(STOP) {
                    Some(mut flagged) => stop.as_mut().poll(&mut flagged).map(|()| {
                        stop_armed = false;
                        Input::Stop
                    }),
                    None => Poll::Pending,
                },
                Source::Sip if endpoint_open => match inputs.take(SIP) {
                    Some(mut flagged) => sip.poll_recv(&mut flagged).map(|incoming| {
                        inputs.again(SIP);
                        Input::Sip(incoming)
                    }),
                    None => Poll::Pending,
                },
                Source::Rtp => match (rtp, inputs.take(RTP)) {
                    (Some(rtp), Some(mut flagged)) => rtp.poll_recv_from(&mut flagged, &mut datagram).map(|received| {
                        inputs.again(RTP);
                        Input::Rtp(received)
                    }),
                    _ => Poll::Pending,
                },
                _ => Poll::Pending,
            };
            let order = match turn {
                true => [Source::Timer, Source::Stop, Source::Sip, Source::Rtp],
                false => [Source::Sip, Source::Rtp, Source::Timer, Source::Stop],
            };
            order.into_iter().map(&mut poll).find(Poll::is_ready).unwrap_or(Poll::Pending)
        })
        .await;
        match input {
            Input::Timeout => machine.handle_timeout(clock::now()),
            Input::Stop => machine.handle_stop(clock::now()),
            Input::Sip(Some(Delivery::Message(incoming))) => {
                machine.handle_sip(clock::now(), incoming.from, incoming.message);
            }
            Input::Sip(Some(Delivery::Transaction(key, event))) => machine.handle_transaction(clock::now(), key, event),
            Input::Sip(None) => {
                endpoint_open = false;
                machine.handle_transport_error(clock::now(), None, "the SIP endpoint closed");
            }
            Input::Rtp(Ok((n, from))) => machine.handle_rtp(clock::now(), from, &datagram[..n]),
            Input::Rtp(Err(_)) => {}
        }
    }
}

/// What the driver waits on.
#[derive(Clone, Copy)]
enum Source {
    Timer,
    Stop,
    Sip,
    Rtp,
}

/// What woke the driver.
enum Input {
    Timeout,
    Stop,
    Sip(Option<Delivery>),
    Rtp(std::io::Result<(usize, SocketAddr)>),
}

/// Resolves when the signal turns true; never without a signal, or once
/// its sender is gone without stopping.
async fn stopped(signal: Option<watch::Receiver<bool>>) {
    if let Some(mut receiver) = signal
        && receiver.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Context;
    use std::time::Duration;

    use super::*;
    use crate::net::endpoint::Endpoint;
    use crate::net::socket::{MemoryNetwork, Network};
    use crate::sip::Timers;

    const TICK: Duration = Duration::from_millis(20);

    /// Sends one packet to `peer` every 20 ms, as a call sending media, and
    /// counts the packets it hears; over after `ticks` sends.
    struct Sender {
        peer: SocketAddr,
        next: Instant,
        due: bool,
        ticks: usize,
        heard: usize,
    }

    impl Machine for Sender {
        type Event = usize;

        fn handle_sip(&mut self, _: Instant, _: SocketAddr, _: Message) {}
        fn handle_transaction(&mut self, _: Instant, _: TransactionKey, _: TransactionEvent) {}
        fn handle_rtp(&mut self, _: Instant, _: SocketAddr, _: &[u8]) {
            self.heard += 1;
        }
        fn handle_timeout(&mut self, now: Instant) {
            if now >= self.next {
                self.due = true;
                self.next += TICK;
            }
        }
        fn handle_transport_error(&mut self, _: Instant, _: Option<SocketAddr>, _: &str) {}
        fn handle_stop(&mut self, _: Instant) {}
        fn poll_sip(&mut self) -> Option<Transmit<Message>> {
            None
        }
        fn poll_rtp(&mut self, _: Instant) -> Option<Transmit<&[u8]>> {
            std::mem::take(&mut self.due).then(|| {
                self.ticks -= 1;
                Transmit { destination: self.peer, contents: &[0x80u8; 172][..] }
            })
        }
        fn poll_event(&mut self) -> Option<usize> {
            (self.ticks == 0).then_some(self.heard)
        }
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.next)
        }
    }

    /// Counts the polls of the future it wraps: each is a wake-up of its task.
    struct Polls<F>(Pin<Box<F>>, Arc<AtomicUsize>);

    impl<F: Future> Future for Polls<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.as_mut().poll(cx)
        }
    }

    /// A call sending media every 20 ms while its callee's packets arrive
    /// halfway between its sends (in simulated time): each packet is heard,
    /// at the next send, in the same wake-up.
    #[tokio::test(start_paused = true)]
    async fn a_call_sending_media_hears_the_callee_at_its_send_ticks_without_waking_for_each_packet() {
        let network = Network::Memory(MemoryNetwork::default());
        let endpoint = Endpoint::bind_in(&network, "127.0.0.1:5060".parse().unwrap(), false).await.unwrap();
        let mut sip = endpoint.handle(crate::vocab::Transport::Udp, None, Timers::default()).unwrap();
        let rtp = network.bind_media("127.0.0.1:0".parse().unwrap()).unwrap();
        let callee = network.bind_media("127.0.0.1:0".parse().unwrap()).unwrap();
        let (rtp_at, callee_at) = (rtp.local_addr().unwrap(), callee.local_addr().unwrap());
        const SENDS: usize = 50;
        let start = clock::now();
        let mut machine = Sender { peer: callee_at, next: start + TICK, due: false, ticks: SENDS, heard: 0 };
        let polls = Arc::new(AtomicUsize::new(0));
        let call = tokio::spawn({
            let polls = polls.clone();
            async move {
                let driven = drive(&mut machine, &mut sip, Some(&rtp), None, ControlFlow::Break);
                Polls(Box::pin(driven), polls).await
            }
        });
        // Halfway between sends, one packet each, until the call's last send.
        tokio::time::sleep(TICK / 2).await;
        for _ in 0..SENDS - 1 {
            tokio::time::sleep(TICK).await;
            callee.try_send_to(&[0x80; 172], rtp_at).unwrap();
        }
        let heard = call.await.unwrap();
        assert_eq!(heard, SENDS - 1, "every packet is heard");
        let polls = polls.load(Ordering::SeqCst);
        // One wake-up per send, and the first poll; a wake-up per packet
        // heard as well would be about twice as many.
        assert!(polls <= SENDS + 2, "{polls} wake-ups for {SENDS} sends and {} packets heard", SENDS - 1);
    }
}
