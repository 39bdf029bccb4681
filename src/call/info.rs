//! DTMF carried by SIP INFO: `application/dtmf-relay` (`Signal=#`) and
//! `application/dtmf` (the key alone).

use crate::dsp::tone::key_position;
use crate::sip::Message;

const RELAY: &str = "application/dtmf-relay";
const DTMF: &str = "application/dtmf";

/// The key an INFO request carries, if it carries one, and the content type
/// that carried it.
pub fn info_digit(request: &Message) -> Option<(char, &'static str)> {
    let content_type = request.header("Content-Type")?.split(';').next()?.trim().to_ascii_lowercase();
    let body = std::str::from_utf8(request.body()).ok()?;
    let (raw, content_type) = match content_type.as_str() {
        RELAY => (
            body.lines().find_map(|line| {
                let (name, value) = line.split_once('=')?;
                name.trim().eq_ignore_ascii_case("signal").then(|| value.trim())
            })?,
            RELAY,
        ),
        DTMF => (body.trim(), DTMF),
        _ => return None,
    };
    let key = match raw {
        "10" => '*',
        "11" => '#',
        _ if raw.chars().count() == 1 => raw.chars().next()?.to_ascii_uppercase(),
        _ => return None,
    };
    key_position(key).map(|_| (key, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Method;

    fn info_digit(request: &Message) -> Option<char> {
        super::info_digit(request).map(|(digit, _)| digit)
    }

    #[test]
    fn says_which_content_type_carried_the_key() {
        assert_eq!(super::info_digit(&info("Application/DTMF-Relay", "Signal=#")), Some(('#', RELAY)));
        assert_eq!(super::info_digit(&info("application/dtmf", "5")), Some(('5', DTMF)));
    }

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
