//! Cutting SIP messages out of a TCP byte stream (RFC 3261 §18.3): the header block ends at the first
//! empty line, and Content-Length, mandatory on streams, says where the body ends.

use super::SipError;
use super::message::{MAX_MESSAGE_BYTES, header_block_len, is_header, parse_content_length};

/// The length of the first frame at the start of `buf`.
///
/// - `Ok(None)`: the header block or the body is still incomplete; read more.
/// - `Ok(Some(n))`: the first `n` bytes are one frame. A frame that starts with `\r` is a keep-alive
///   (one or more CRLFs, RFC 5626 §3.5.1) that the caller drops; any other frame is a message for
///   [`Message::parse`](super::Message::parse).
/// - `Err`: the stream cannot be resynchronised and the connection should be closed: the header block
///   has grown past [`MAX_MESSAGE_BYTES`], or Content-Length is missing, invalid or too large.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, SipError> {
    let keep_alive = buf.chunks_exact(2).take_while(|pair| *pair == b"\r\n").count() * 2;
    if keep_alive > 0 {
        return Ok(Some(keep_alive));
    }
    let searched = &buf[..buf.len().min(MAX_MESSAGE_BYTES)];
    let Some(head_len) = header_block_len(searched) else {
        return if buf.len() >= MAX_MESSAGE_BYTES { Err(SipError::TooLarge) } else { Ok(None) };
    };
    let mut content_length = None;
    let continues = |line: &&[u8]| line.starts_with(b" ") || line.starts_with(b"\t");
    let text =
        |bytes| std::str::from_utf8(bytes).map_err(|_| SipError::Malformed("Content-Length is not UTF-8".into()));
    // After the start line. A continuation line is part of the header before it (RFC 3261 §7.3.1):
    // a folded Content-Length is read whole, exactly as `Message::parse` reads it, or a stream could
    // be cut where its messages do not end.
    let mut lines = buf[..head_len].split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        if continues(&line) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = line.split_at(colon);
        if !std::str::from_utf8(name).is_ok_and(|name| is_header(name, "Content-Length")) {
            continue;
        }
        let mut value = text(&value[1..])?.trim().to_string();
        while let Some(folded) = lines.next_if(continues) {
            let folded = text(folded)?.trim();
            if !folded.is_empty() && !value.is_empty() {
                value.push(' ');
            }
            value.push_str(folded);
        }
        let length = parse_content_length(&value)?;
        if content_length.is_some_and(|previous| previous != length) {
            return Err(SipError::Malformed("conflicting Content-Length headers".into()));
        }
        content_length = Some(length);
    }
    let length = content_length.ok_or(SipError::MissingHeader("Content-Length"))?;
    let total = head_len + 4 + length;
    if total > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge);
    }
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/sip/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    #[test]
    fn a_message_is_framed_only_once_every_byte_has_arrived() {
        let invite = fixture("invite-sdp.sip");
        for end in 0..invite.len() {
            assert_eq!(frame_len(&invite[..end]).unwrap(), None, "framed after {end} bytes");
        }
        assert_eq!(frame_len(&invite).unwrap(), Some(invite.len()));
    }

    #[test]
    fn back_to_back_messages_and_keep_alives_are_cut_apart() {
        let invite = fixture("invite-sdp.sip");
        let ok = fixture("200-ok-record-route.sip");
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&invite);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&ok);

        let mut frames = Vec::new();
        let mut rest = stream.as_slice();
        while let Some(len) = frame_len(rest).unwrap() {
            frames.push(&rest[..len]);
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(frames, [&b"\r\n\r\n"[..], &invite, b"\r\n", &ok]);
        assert_eq!(Message::parse(frames[1]).unwrap().method(), Some(&crate::sip::Method::Invite));
        assert_eq!(Message::parse(frames[3]).unwrap().status(), Some(200));
    }

    #[test]
    fn a_lone_carriage_return_waits_for_more() {
        assert_eq!(frame_len(b"").unwrap(), None);
        assert_eq!(frame_len(b"\r").unwrap(), None);
    }

    #[test]
    fn the_compact_content_length_in_any_case_frames_the_body() {
        let message = b"BYE sip:a@b SIP/2.0\r\nl:  4\r\n\r\nbodyNEXT";
        assert_eq!(frame_len(message).unwrap(), Some(message.len() - 4));
        let message = b"BYE sip:a@b SIP/2.0\r\ncontent-LENGTH : 2\r\n\r\nhi";
        assert_eq!(frame_len(message).unwrap(), Some(message.len()));
    }

    #[test]
    fn a_folded_content_length_frames_as_the_message_reads_it() {
        // Found by the fuzzer: a Content-Length folded onto a continuation line was read by
        // `Message::parse` (datagrams) but refused here, and `1` folded with `5` was framed as a
        // 1-byte body that the message reader refused, leaving the stream out of step.
        let head = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\n\
                    From: <sip:c@d>;tag=1\r\nCSeq: 9 BYE\r\nCall-ID: x\r\n";
        let folded = format!("{head}Content-Length:\r\n 5\r\n\r\nhelloNEXT");
        assert_eq!(frame_len(folded.as_bytes()).unwrap(), Some(folded.len() - 4));
        assert_eq!(Message::parse(folded.as_bytes()).unwrap().body(), b"hello");
        let split = format!("{head}Content-Length: 1\r\n\t5\r\n\r\nhelloNEXT");
        assert!(matches!(frame_len(split.as_bytes()), Err(SipError::Malformed(_))));
        assert!(Message::parse(split.as_bytes()).is_err());
    }

    #[test]
    fn content_length_must_be_present_valid_consistent_and_bounded() {
        let missing = b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n";
        assert!(matches!(frame_len(missing), Err(SipError::MissingHeader("Content-Length"))));
        for bad in ["-1", "abc", "", "1 2", "+5"] {
            let message = format!("BYE sip:a@b SIP/2.0\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(frame_len(message.as_bytes()), Err(SipError::Malformed(_))), "{bad:?}");
        }
        let conflicting = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert!(matches!(frame_len(conflicting), Err(SipError::Malformed(_))));
        let huge = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 65536\r\n\r\n";
        assert!(matches!(frame_len(huge), Err(SipError::TooLarge)));
        let overflowing = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(matches!(frame_len(overflowing), Err(SipError::TooLarge)));
    }

    #[test]
    fn a_header_block_without_end_is_refused_once_it_reaches_the_limit() {
        let mut endless = b"INVITE sip:a@b SIP/2.0\r\n".to_vec();
        while endless.len() < MAX_MESSAGE_BYTES - 20 {
            endless.extend_from_slice(b"X-Padding: yes\r\n");
        }
        assert_eq!(frame_len(&endless).unwrap(), None);
        endless.resize(MAX_MESSAGE_BYTES, b'x');
        assert!(matches!(frame_len(&endless), Err(SipError::TooLarge)));
    }

    #[test]
    fn a_body_that_would_pass_the_limit_is_refused_before_it_arrives() {
        let mut message = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 65000\r\n".to_vec();
        message.extend(std::iter::repeat_n(b"X-Padding: yes\r\n", 100).flatten());
        message.extend_from_slice(b"\r\n");
        assert!(matches!(frame_len(&message), Err(SipError::TooLarge)));
    }
}
