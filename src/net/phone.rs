//! Runs the simulated [`Phone`] on real sockets.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::call::NetError;
use super::transport::SipSocket;
use crate::phone::{Phone, PhoneConfig, PhoneEvent};
use crate::vocab::Transport;

/// Where the phone listens and how many calls it takes.
#[derive(Debug, Clone)]
pub struct PhoneSetup {
    pub listen: SocketAddr,
    /// Stop after this many calls have ended; `None` serves until killed.
    pub calls: Option<u64>,
    /// Everything but the addresses, which are filled in once bound.
    pub config: PhoneConfig,
}

/// Binds the sockets, reports the SIP address through `on_ready`, and serves.
pub async fn run_phone(
    setup: PhoneSetup,
    on_ready: impl FnOnce(SocketAddr),
    mut on_event: impl FnMut(&PhoneEvent),
) -> Result<(), NetError> {
    let mut sip = match setup.config.transport {
        Transport::Udp => SipSocket::udp(setup.listen).await,
        Transport::Tcp => SipSocket::tcp_listen(setup.listen).await,
    }
    .map_err(|source| NetError::Io { context: format!("SIP socket on {}", setup.listen), source })?;
    let local_sip = sip.local_addr().map_err(|source| NetError::Io { context: "SIP socket".into(), source })?;
    let rtp = UdpSocket::bind(SocketAddr::new(local_sip.ip(), 0))
        .await
        .map_err(|source| NetError::Io { context: "RTP socket".into(), source })?;
    let local_rtp = rtp.local_addr().map_err(|source| NetError::Io { context: "RTP socket".into(), source })?;
    let mut phone = Phone::new(PhoneConfig { local_sip, local_rtp, ..setup.config });
    on_ready(local_sip);
    let mut ended = 0u64;
    let mut datagram = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some((message, to)) = phone.poll_sip() {
            if let Err(e) = sip.send(&message, to).await {
                tracing::debug!(%to, error = %e, "phone: SIP send failed");
            }
        }
        while let Some((packet, to)) = phone.poll_rtp(now) {
            let _ = rtp.send_to(packet, to).await;
        }
        while let Some(event) = phone.poll_event() {
            on_event(&event);
            if let PhoneEvent::CallEnded { .. } = event {
                ended += 1;
            }
        }
        if setup.calls.is_some_and(|limit| ended >= limit) && phone.active_calls() == 0 {
            return Ok(());
        }
        let deadline = phone.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            incoming = sip.recv() => {
                if let Some(incoming) = incoming {
                    phone.handle_sip(Instant::now(), incoming.from, incoming.message);
                }
            }
            received = rtp.recv_from(&mut datagram) => {
                if let Ok((n, from)) = received {
                    phone.handle_rtp(from, &datagram[..n]);
                }
            }
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => phone.handle_timeout(Instant::now()),
        }
    }
}
