//! The one loop every socket-free machine runs in: send what it asks (SIP,
//! then RTP), hand its events out, sleep until its next deadline, and feed
//! it whichever input comes first (SIP from the endpoint, RTP, the timer, a
//! stop signal).

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::endpoint::SipHandle;
use crate::sip::Message;
use crate::vocab::Transmit;

/// A machine as the driver sees it: inputs with the current time, outputs polled.
pub(super) trait Machine {
    type Event;

    fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message);
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

/// Runs `machine` until `on_event` breaks with the result.
pub(super) async fn drive<M: Machine, R>(
    machine: &mut M,
    sip: &mut SipHandle,
    rtp: Option<&UdpSocket>,
    mut stop: Option<watch::Receiver<bool>>,
    mut on_event: impl FnMut(M::Event) -> ControlFlow<R>,
) -> R {
    let mut datagram = vec![0u8; RTP_BUFFER];
    let mut endpoint_open = true;
    loop {
        let now = Instant::now();
        while let Some(Transmit { destination: to, contents: message }) = machine.poll_sip() {
            if let Err(e) = sip.send(&message, to).await {
                tracing::warn!(%to, error = %e, "SIP send failed");
                machine.handle_transport_error(Instant::now(), Some(to), &e.to_string());
            }
        }
        if let Some(rtp) = rtp {
            while let Some(Transmit { destination: to, contents: packet }) = machine.poll_rtp(now) {
                // Media is best effort: a lost packet is a lost 20 ms, nothing more.
                let _ = rtp.send_to(packet, to).await;
            }
        }
        while let Some(event) = machine.poll_event() {
            if let ControlFlow::Break(result) = on_event(event) {
                return result;
            }
        }
        let deadline = machine.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            incoming = sip.recv(), if endpoint_open => match incoming {
                Some(incoming) => machine.handle_sip(Instant::now(), incoming.from, incoming.message),
                None => {
                    endpoint_open = false;
                    machine.handle_transport_error(Instant::now(), None, "the SIP endpoint closed");
                }
            },
            received = recv_rtp(rtp, &mut datagram) => {
                if let Ok((n, from)) = received {
                    machine.handle_rtp(Instant::now(), from, &datagram[..n]);
                }
            }
            _ = sleep_until(deadline) => machine.handle_timeout(Instant::now()),
            _ = stopped(&mut stop) => {
                stop = None;
                machine.handle_stop(Instant::now());
            }
        }
    }
}

async fn recv_rtp(rtp: Option<&UdpSocket>, buffer: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match rtp {
        Some(rtp) => rtp.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the signal turns true; never without a signal, or once
/// its sender is gone without stopping.
async fn stopped(signal: &mut Option<watch::Receiver<bool>>) {
    if let Some(receiver) = signal
        && receiver.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
