//! The UAC side of digest authentication, shared by every request pound
//! sends (INVITE, BYE, REGISTER): which challenge to answer, when to give up,
//! and the header that carries the answer.

use rand::Rng;

use super::auth::{self, Credentials};
use super::{Message, Method};

/// Challenges answered per request sequence before giving up: enough for a
/// proxy and a registrar in a row plus one stale nonce.
const MAX_ANSWERS: usize = 3;

/// Answers digest challenges for one call or registration.
#[derive(Debug, Clone)]
pub struct Authenticator {
    credentials: Option<Credentials>,
    /// Nonces already answered: a second challenge with one of them means
    /// the credentials are wrong, unless the server says it was stale.
    answered: Vec<String>,
}

/// An answer to a challenge: add it to the retried request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// `Authorization` or `Proxy-Authorization`.
    pub header: &'static str,
    pub value: String,
    /// The challenge's realm, for logs.
    pub realm: String,
}

impl Authenticator {
    pub fn new(credentials: Option<Credentials>) -> Authenticator {
        Authenticator { credentials, answered: Vec::new() }
    }

    /// Forgets the nonces answered: a new request sequence (a registration
    /// refresh, a retry after a failure) may answer them again.
    pub fn start_over(&mut self) {
        self.answered.clear();
    }

    /// The answer to `response`'s strongest challenge for a request with this
    /// method and Request-URI, or `None` when there is nothing (more) to
    /// answer: no credentials, no readable challenge, or a repeated one.
    pub fn answer(
        &mut self,
        response: &Message,
        method: &Method,
        uri: &str,
        rng: &mut impl Rng,
    ) -> Option<Authorization> {
        let credentials = self.credentials.as_ref()?;
        let challenge = auth::challenges(response).into_iter().next()?;
        let repeated = self.answered.contains(&challenge.nonce) && !challenge.stale;
        if repeated || self.answered.len() >= MAX_ANSWERS {
            return None;
        }
        self.answered.push(challenge.nonce.clone());
        let cnonce = format!("{:016x}", rng.next_u64());
        Some(Authorization {
            header: auth::authorization_header(response.status().unwrap_or(401)),
            value: auth::authorize(&challenge, credentials, method, uri, &cnonce, 1),
            realm: challenge.realm,
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn challenge(status: u16, nonce: &str, stale: bool) -> Message {
        let header = if status == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let stale = if stale { ", stale=true" } else { "" };
        Message::parse(
            format!(
                "SIP/2.0 {status} Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n\
                 From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
                 {header}: Digest realm=\"carrier\", nonce=\"{nonce}\", qop=\"auth\"{stale}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(Some(Credentials { user: "u".into(), password: "p".into() }))
    }

    #[test]
    fn answers_each_nonce_once_unless_stale_and_gives_up_after_three() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut uac = authenticator();
        let first = uac.answer(&challenge(401, "n1", false), &Method::Invite, "sip:c@d", &mut rng).unwrap();
        assert_eq!((first.header, first.realm.as_str()), ("Authorization", "carrier"));
        assert!(first.value.contains("nonce=\"n1\""), "{}", first.value);
        assert_eq!(uac.answer(&challenge(401, "n1", false), &Method::Invite, "sip:c@d", &mut rng), None);
        let stale = uac.answer(&challenge(407, "n1", true), &Method::Invite, "sip:c@d", &mut rng).unwrap();
        assert_eq!(stale.header, "Proxy-Authorization");
        assert!(uac.answer(&challenge(401, "n2", false), &Method::Invite, "sip:c@d", &mut rng).is_some());
        assert_eq!(uac.answer(&challenge(401, "n3", false), &Method::Invite, "sip:c@d", &mut rng), None);
        uac.start_over();
        assert!(uac.answer(&challenge(401, "n1", false), &Method::Invite, "sip:c@d", &mut rng).is_some());
    }

    #[test]
    fn without_credentials_or_challenge_there_is_no_answer() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut anonymous = Authenticator::new(None);
        assert_eq!(anonymous.answer(&challenge(401, "n", false), &Method::Bye, "sip:c@d", &mut rng), None);
        let mut ok = challenge(401, "n", false);
        ok.remove_header("WWW-Authenticate");
        assert_eq!(authenticator().answer(&ok, &Method::Bye, "sip:c@d", &mut rng), None);
    }

    #[test]
    fn the_cnonce_comes_from_the_injected_rng() {
        let answer = |seed| {
            authenticator()
                .answer(&challenge(401, "n", false), &Method::Register, "sip:r", &mut StdRng::seed_from_u64(seed))
                .unwrap()
                .value
        };
        assert_eq!(answer(1), answer(1));
        assert_ne!(answer(1), answer(2));
    }
}
