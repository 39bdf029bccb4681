//! DTMF carried by SIP INFO: `application/dtmf-relay` (`Signal=#`) and
//! `application/dtmf` (the key alone).

use crate::dsp::tone::key_position;
use crate::sip::Message;

/// The key an INFO request carries, if it carries one.
pub fn info_digit(request: &Message) -> Option<char> {
    let content_type = request.header("Content-Type")?.split(';').next()?.trim().to_ascii_lowercase();
    let body = std::str::from_utf8(request.body()).ok()?;
    let raw = match content_type.as_str() {
        "application/dtmf-relay" => body.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim().eq_ignore_ascii_case("signal").then(|| value.trim())
        })?,
        "application/dtmf" => body.trim(),
        _ => return None,
    };
    let key = match raw {
        "10" => '*',
        "11" => '#',
        _ if raw.chars().count() == 1 => raw.chars().next()?.to_ascii_uppercase(),
        _ => return None,
    };
    key_position(key).map(|_| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Method;

    fn info(content_type: &str, body: &str) -> Message {
        let mut m = Message::request(Method::Info, "sip:pound@127.0.0.1");
        m.set_body(content_type, body.as_bytes().to_vec());
        m
    }

    #[test]
    fn reads_both_body_formats() {
        assert_eq!(info_digit(&info("application/dtmf-relay", "Signal=#\r\nDuration=160\r\n")), Some('#'));
        assert_eq!(info_digit(&info("application/dtmf-relay", "signal= 5\nDuration=100")), Some('5'));
        assert_eq!(info_digit(&info("application/dtmf-relay", "Signal=11\r\n")), Some('#'));
        assert_eq!(info_digit(&info("application/dtmf", "#")), Some('#'));
        assert_eq!(info_digit(&info("Application/DTMF; charset=x", "a")), Some('A'));
    }

    #[test]
    fn ignores_everything_else() {
        assert_eq!(info_digit(&info("application/dtmf-relay", "Duration=160")), None);
        assert_eq!(info_digit(&info("application/dtmf", "##")), None);
        assert_eq!(info_digit(&info("application/dtmf", "x")), None);
        assert_eq!(info_digit(&info("text/plain", "#")), None);
        assert_eq!(info_digit(&Message::request(Method::Info, "sip:a@b")), None);
    }
}
