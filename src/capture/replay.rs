//! `pound replay`: the call machine run again from a capture, in simulated
//! time, with no socket. Each recorded input goes to a fresh machine,
//! configured and seeded as the captured one was, at the instant it came;
//! what the machine sends is checked against what the captured one sent. The
//! same capture gives the same report every time, and the report the call
//! gave when the machine has not changed since.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::pcap::{self, Datagram, PcapError};
use super::snapshot::SnapshotError;
use super::{CONTROL_PORT, CaptureHeader, Control, FORMAT, TransactionEnd};
use crate::call::{Call, CallEvent, CallReport};
use crate::sip::{Message, Method, TransactionEvent, TransactionKey};

/// A replayed call runs on its own timers after its capture ends (one cut at
/// its size limit) for at most this long.
const PAST_THE_CAPTURE: Duration = Duration::from_secs(4 * 3600);

/// Bounds a machine that keeps asking to be woken without ending.
const MAX_WAKEUPS_PAST_THE_CAPTURE: usize = 1_000_000;

/// Headers a replay cannot reproduce: the digest response needs the trunk's
/// password and the PASSporT the STIR key, neither of which a capture holds.
const UNREPRODUCIBLE_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "identity", "y"];

/// What a replay gave.
#[derive(Debug)]
pub struct Replayed {
    pub report: CallReport,
    pub header: CaptureHeader,
    /// SIP messages and RTP packets the replayed machine sent.
    pub sip_sent: usize,
    pub rtp_sent: usize,
    /// The first place where the replayed machine sent something other
    /// than the captured one did; `None` when everything matched.
    pub divergence: Option<String>,
    /// The capture ended before the call did (cut at its size limit, or the
    /// node stopped): the rest ran on the machine's own timers.
    pub ran_past_capture: bool,
}

/// Why a file could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("not a pound capture: its first record is not pound's capture header")]
    NotACapture,
    #[error("capture format {0} is not one this pound reads ({FORMAT})")]
    Format(u32),
    #[error("the capture header is unreadable: {0}")]
    Header(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("record {index}: {reason}")]
    Record { index: usize, reason: String },
    #[error("the capture ends before the call does, and the call does not end by itself")]
    Unfinished,
}

/// Replays the capture in `bytes`.
pub fn replay(bytes: &[u8]) -> Result<Replayed, ReplayError> {
    let datagrams = pcap::read(bytes)?;
    let (first, records) = datagrams.split_first().ok_or(ReplayError::NotACapture)?;
    let header = read_header(first)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&header.seed, &mut seed).map_err(|e| ReplayError::Header(format!("seed: {e}")))?;
    let config = header.call.config()?;
    let (local_sip, local_rtp) = (config.local_sip, config.local_rtp);
    let transaction_timeout = 64 * config.timers.t1;
    let control = first.from;
    let base = Instant::now();
    let mut run = Run {
        call: Call::with_rng(config, base, StdRng::from_seed(seed)),
        expected_sip: records
            .iter()
            .filter(|d| d.from == local_sip && d.to != control)
            .map(|d| &d.payload[..])
            .collect(),
        expected_rtp: records.iter().filter(|d| d.from == local_rtp).map(|d| &d.payload[..]).collect(),
        sip_sent: 0,
        rtp_sent: 0,
        divergence: None,
        report: None,
        unanswered: Vec::new(),
        transaction_timeout,
    };
    run.drain(base);
    let mut stray_response = false;
    for (index, record) in records.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        if run.report.is_some() {
            break;
        }
        let bad = |reason: String| ReplayError::Record { index, reason };
        let since_start =
            record.at_ns.checked_sub(header.started_unix_ns).ok_or_else(|| bad("before the call started".into()))?;
        let now = base + Duration::from_nanos(since_start);
        if record.from == control && record.to == control {
            let input: Control = serde_json::from_slice(&record.payload).map_err(|e| bad(e.to_string()))?;
            match input {
                Control::Timeout => run.call.handle_timeout(now),
                Control::Stop => run.call.cancel(now),
                Control::TransportError { reason } => run.call.handle_transport_error(&reason),
                Control::Transaction { branch, method, event } => {
                    let key = TransactionKey { branch, method: Method::parse(&method) };
                    let event = match event {
                        TransactionEnd::Timeout => TransactionEvent::Timeout,
                        TransactionEnd::TransportError => TransactionEvent::TransportError,
                    };
                    run.answered(&key);
                    run.call.handle_transaction(now, &key, event);
                }
                Control::StrayResponse => {
                    stray_response = true;
                    continue;
                }
            }
        } else if record.to == local_sip {
            let message = Message::parse(&record.payload).map_err(|e| bad(format!("SIP: {e}")))?;
            if message.is_request() || std::mem::take(&mut stray_response) {
                run.call.handle_sip(now, record.from, message);
            } else {
                let key = TransactionKey::of_response(&message)
                    .ok_or_else(|| bad("a response with no Via branch or CSeq".into()))?;
                let event = match message.status() {
                    Some(status) if status < 200 => TransactionEvent::Provisional(message),
                    _ => {
                        run.answered(&key);
                        TransactionEvent::Final(message)
                    }
                };
                run.call.handle_transaction(now, &key, event);
            }
        } else if record.to == local_rtp {
            run.call.handle_rtp(now, record.from, &record.payload);
        } else if record.from == local_rtp {
            // Its time is the `now` the captured driver polled the media with
            // (later, under load, than the input before it): polling at the
            // same instant sends the same packets between the same inputs.
        } else {
            // What the machine sent: checked as the replay sends it.
            continue;
        }
        run.drain(now);
    }
    let mut ran_past_capture = false;
    for _ in 0..MAX_WAKEUPS_PAST_THE_CAPTURE {
        if run.report.is_some() {
            break;
        }
        ran_past_capture = true;
        // Past the capture no answer comes: what the captured endpoint would
        // have said of a request still unanswered is that it timed out.
        let call_deadline = run.call.poll_timeout();
        let unanswered = run.unanswered.iter().min_by_key(|(at, _)| *at).cloned();
        let now = match (call_deadline, unanswered) {
            (deadline, Some((at, key))) if deadline.is_none_or(|d| at <= d) => {
                run.answered(&key);
                run.call.handle_transaction(at, &key, TransactionEvent::Timeout);
                at
            }
            (Some(deadline), _) => {
                run.call.handle_timeout(deadline);
                deadline
            }
            (None, _) => return Err(ReplayError::Unfinished),
        };
        if now.duration_since(base) > PAST_THE_CAPTURE {
            return Err(ReplayError::Unfinished);
        }
        run.drain(now);
    }
    let report = run.report.ok_or(ReplayError::Unfinished)?;
    let mut divergence = run.divergence;
    if divergence.is_none() && !ran_past_capture {
        let (sip, rtp) = (run.expected_sip.len(), run.expected_rtp.len());
        if sip + rtp > 0 {
            divergence =
                Some(format!("the capture has {sip} SIP messages and {rtp} RTP packets more than the replay sent"));
        }
    }
    Ok(Replayed { report, header, sip_sent: run.sip_sent, rtp_sent: run.rtp_sent, divergence, ran_past_capture })
}

fn read_header(first: &Datagram) -> Result<CaptureHeader, ReplayError> {
    if first.from != first.to || first.from.port() != CONTROL_PORT {
        return Err(ReplayError::NotACapture);
    }
    let value: serde_json::Value = serde_json::from_slice(&first.payload).map_err(|_| ReplayError::NotACapture)?;
    match value.get("pound_capture").and_then(serde_json::Value::as_u64) {
        Some(format) if format == u64::from(FORMAT) => {}
        Some(format) => return Err(ReplayError::Format(u32::try_from(format).unwrap_or(u32::MAX))),
        None => return Err(ReplayError::NotACapture),
    }
    serde_json::from_value(value).map_err(|e| ReplayError::Header(e.to_string()))
}

/// The machine being replayed and what it is checked against.
struct Run<'a> {
    call: Call,
    expected_sip: VecDeque<&'a [u8]>,
    expected_rtp: VecDeque<&'a [u8]>,
    sip_sent: usize,
    rtp_sent: usize,
    divergence: Option<String>,
    report: Option<CallReport>,
    /// Requests the replayed machine sent with no final answer yet, and when
    /// their transaction would time out (timer B or F).
    unanswered: Vec<(Instant, TransactionKey)>,
    transaction_timeout: Duration,
}

impl Run<'_> {
    /// The transaction `key` has its final answer (or its end).
    fn answered(&mut self, key: &TransactionKey) {
        self.unanswered.retain(|(_, pending)| pending != key);
    }

    /// Takes everything the machine has to send and say, in the driver's order.
    fn drain(&mut self, now: Instant) {
        while let Some(transmit) = self.call.poll_sip() {
            self.sip_sent += 1;
            if let Some(key) = TransactionKey::of_request(&transmit.contents).filter(|k| k.method != Method::Ack) {
                self.unanswered.push((now + self.transaction_timeout, key));
            }
            let sent = transmit.contents.to_bytes();
            let expected = self.expected_sip.pop_front();
            if self.divergence.is_none()
                && let Some(expected) = expected
                && let Some(line) = first_difference(&sent, expected)
            {
                self.divergence = Some(format!("SIP message {} differs from the capture's at {line}", self.sip_sent));
            }
        }
        while let Some(transmit) = self.call.poll_rtp(now) {
            self.rtp_sent += 1;
            let expected = self.expected_rtp.pop_front();
            if self.divergence.is_none() && expected.is_some_and(|e| e != transmit.contents) {
                self.divergence = Some(format!("RTP packet {} differs from the capture's", self.rtp_sent));
            }
        }
        while let Some(event) = self.call.poll_event() {
            if let CallEvent::Finished(report) = event {
                self.report = Some(report);
            }
        }
    }
}

/// Where two SIP messages differ, by header name (never a value: they hold
/// numbers), ignoring the headers a replay cannot reproduce.
fn first_difference(sent: &[u8], captured: &[u8]) -> Option<String> {
    let comparable = |bytes: &[u8]| -> Vec<Vec<u8>> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines: Vec<Vec<u8>> = head
            .split("\r\n")
            .filter(|line| {
                let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
                !UNREPRODUCIBLE_HEADERS.contains(&name.as_str())
            })
            .map(|line| line.as_bytes().to_vec())
            .collect();
        lines.push(body.as_bytes().to_vec());
        lines
    };
    let (sent, captured) = (comparable(sent), comparable(captured));
    if sent == captured {
        return None;
    }
    let index = sent.iter().zip(&captured).position(|(a, b)| a != b).unwrap_or(sent.len().min(captured.len()));
    Some(match (index, sent.get(index)) {
        (0, _) => "the start line".to_string(),
        (i, _) if i + 1 >= sent.len() && i + 1 >= captured.len() => "the body".to_string(),
        (_, Some(line)) => {
            let name = String::from_utf8_lossy(line).split(':').next().unwrap_or("").trim().to_string();
            format!("header {name}")
        }
        (_, None) => "the end of the headers".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn differences_are_named_by_header_and_unreproducible_headers_are_ignored() {
        let a = b"INVITE sip:x SIP/2.0\r\nVia: a\r\nAuthorization: one\r\nCall-ID: 1\r\n\r\nbody";
        let b = b"INVITE sip:x SIP/2.0\r\nVia: a\r\nAuthorization: two\r\nCall-ID: 1\r\n\r\nbody";
        assert_eq!(first_difference(a, b), None);
        let c = b"INVITE sip:x SIP/2.0\r\nVia: a\r\nCall-ID: 2\r\n\r\nbody";
        assert_eq!(first_difference(a, c).as_deref(), Some("header Call-ID"));
        let d = b"INVITE sip:y SIP/2.0\r\nVia: a\r\nCall-ID: 1\r\n\r\nbody";
        assert_eq!(first_difference(a, d).as_deref(), Some("the start line"));
        let e = b"INVITE sip:x SIP/2.0\r\nVia: a\r\nCall-ID: 1\r\n\r\nother";
        assert_eq!(first_difference(a, e).as_deref(), Some("the body"));
    }

    #[test]
    fn files_that_are_not_pound_captures_are_refused() {
        assert!(matches!(replay(b"not a pcap"), Err(ReplayError::Pcap(PcapError::NotPcap))));
        assert!(matches!(replay(&pcap::global_header()), Err(ReplayError::NotACapture)));
        let any: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let mut file = pcap::global_header().to_vec();
        file.extend(pcap::record(0, any, any, br#"{"pound_capture":99}"#));
        assert!(matches!(replay(&file), Err(ReplayError::Format(99))));
        let mut file = pcap::global_header().to_vec();
        file.extend(pcap::record(0, any, any, br#"{"pound_capture":1,"seed":"00"}"#));
        assert!(matches!(replay(&file), Err(ReplayError::Header(_))));
    }
}
