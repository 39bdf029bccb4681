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
        timer_armed = match machine.poll_timeout().map(tokio::time::Instant::from_std) {
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
