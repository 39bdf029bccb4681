use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdp").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const FIXTURES: [&str; 11] = [
    "answer-pcmu-te101.sdp",
    "answer-pcma-only.sdp",
    "answer-te96.sdp",
    "answer-opus.sdp",
    "answer-ipv6.sdp",
    "answer-port0.sdp",
    "answer-g729-only.sdp",
    "reinvite-hold-sendonly.sdp",
    "reinvite-inactive.sdp",
    "reinvite-hold-c0.sdp",
    "offer-audio-video.sdp",
];

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn offer(codecs: &[Codec]) -> Offer {
    Offer {
        session_id: 4_242_424_242,
        session_version: 7,
        address: v4(192, 0, 2, 1),
        port: 40_000,
        direction: Direction::SendRecv,
        codecs: codecs.to_vec(),
        srtp: SrtpPolicy::Off,
        crypto: Vec::new(),
    }
}

const ALL: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::Opus];

#[test]
fn offer_has_every_line_and_parses_back() {
    let sdp = offer(&ALL).to_sdp();
    let lines: Vec<&str> = sdp.split_terminator("\r\n").collect();
    assert!(sdp.ends_with("\r\n") && !sdp.replace("\r\n", "").contains('\n'), "CRLF only: {sdp:?}");
    assert_eq!(
        lines,
        [
            "v=0",
            "o=pound 4242424242 7 IN IP4 192.0.2.1",
            "s=pound",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 8 111 101 110",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 useinbandfec=1",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=rtpmap:110 telephone-event/48000",
            "a=fmtp:110 0-16",
            "a=ptime:20",
            "a=sendrecv",
        ]
    );
    let back = parse_offer(&sdp).unwrap();
    assert_eq!(
        back,
        RemoteOffer {
            address: v4(192, 0, 2, 1),
            port: 40_000,
            formats: vec![
                (0, Some(Codec::Pcmu)),
                (8, Some(Codec::Pcma)),
                (111, Some(Codec::Opus)),
                (101, None),
                (110, None)
            ],
            telephone_events: vec![(101, 8000), (110, 48000)],
            direction: Direction::SendRecv,
            secure: false,
            crypto: vec![],
            session_id: 4_242_424_242,
            other_media: vec![],
        }
    );
}

#[test]
fn offer_without_opus_over_ipv6() {
    let mut offer = offer(&[Codec::Pcma, Codec::Pcmu, Codec::Pcma]);
    offer.address = IpAddr::V6("2001:db8::1".parse().unwrap());
    offer.direction = Direction::SendOnly;
    let sdp = offer.to_sdp();
    for expected in
        ["o=pound 4242424242 7 IN IP6 2001:db8::1\r\n", "c=IN IP6 2001:db8::1\r\n", "m=audio 40000 RTP/AVP 8 0 101\r\n"]
    {
        assert!(sdp.contains(expected), "{expected:?} missing from {sdp}");
    }
    assert!(!sdp.contains("opus") && !sdp.contains("48000") && !sdp.contains(":110"), "{sdp}");
    let back = parse_offer(&sdp).unwrap();
    assert_eq!(back.address, offer.address);
    assert_eq!(back.direction, Direction::SendOnly);
    assert_eq!(back.formats, [(8, Some(Codec::Pcma)), (0, Some(Codec::Pcmu)), (101, None)]);
}

fn media(
    address: IpAddr,
    port: u16,
    codec: Codec,
    payload_type: u8,
    event: Option<(u8, u32)>,
    direction: Direction,
) -> MediaDescription {
    MediaDescription {
        address,
        port,
        codec,
        payload_type,
        telephone_event: event.map(|e| e.0),
        telephone_event_rate: event.map(|e| e.1),
        direction,
        srtp: None,
    }
}

#[test]
fn answers_from_real_peers() {
    let ours = offer(&ALL);
    let cases = [
        (
            "answer-pcmu-te101.sdp",
            media(v4(192, 0, 2, 20), 18230, Codec::Pcmu, 0, Some((101, 8000)), Direction::SendRecv),
        ),
        ("answer-pcma-only.sdp", media(v4(198, 51, 100, 7), 40016, Codec::Pcma, 8, None, Direction::SendRecv)),
        // Media-level c= wins over the session's.
        ("answer-te96.sdp", media(v4(203, 0, 113, 6), 26548, Codec::Pcmu, 0, Some((96, 8000)), Direction::SendRecv)),
        // telephone-event/48000 goes with Opus even though 101 comes first.
        ("answer-opus.sdp", media(v4(192, 0, 2, 44), 31000, Codec::Opus, 111, Some((110, 48000)), Direction::SendRecv)),
        (
            "answer-ipv6.sdp",
            media("2001:db8::20".parse().unwrap(), 5004, Codec::Pcmu, 0, Some((101, 8000)), Direction::SendRecv),
        ),
    ];
    for (name, expected) in cases {
        assert_eq!(parse_answer(&fixture(name), &ours), Ok(expected), "{name}");
    }
}

#[test]
fn answer_codec_must_be_one_we_offered() {
    let pcmu_only = offer(&[Codec::Pcmu]);
    assert_eq!(parse_answer(&fixture("answer-pcma-only.sdp"), &pcmu_only), Err(SdpError::NoCommonCodec));
    assert_eq!(parse_answer(&fixture("answer-g729-only.sdp"), &offer(&ALL)), Err(SdpError::NoCommonCodec));
    // The IPv6 answer lists PCMU first; with only PCMA offered, PCMA is taken.
    let got = parse_answer(&fixture("answer-ipv6.sdp"), &offer(&[Codec::Pcma])).unwrap();
    assert_eq!((got.codec, got.payload_type), (Codec::Pcma, 8));
    // Only a telephone-event at another rate: still taken.
    let sdp = fixture("answer-opus.sdp").replace(" 111 101 110", " 101 0").replace("rtpmap:111", "rtpmap:112");
    let got = parse_answer(&sdp, &offer(&ALL)).unwrap();
    assert_eq!((got.codec, got.telephone_event, got.telephone_event_rate), (Codec::Pcmu, Some(101), Some(8000)));
    let sdp = fixture("answer-opus.sdp").replace(" 111 101 110", " 111 101");
    let got = parse_answer(&sdp, &offer(&ALL)).unwrap();
    assert_eq!((got.codec, got.telephone_event, got.telephone_event_rate), (Codec::Opus, Some(101), Some(8000)));
}

#[test]
fn refused_missing_and_unsupported_audio() {
    let ours = offer(&ALL);
    assert_eq!(parse_answer(&fixture("answer-port0.sdp"), &ours), Err(SdpError::Rejected));
    let video_only =
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n";
    assert_eq!(parse_answer(video_only, &ours), Err(SdpError::NoAudio));
    assert_eq!(parse_offer(video_only), Err(SdpError::NoAudio));
    let srtp = fixture("answer-pcmu-te101.sdp").replace("RTP/AVP", "RTP/SAVP");
    assert_eq!(parse_answer(&srtp, &ours), Err(SdpError::UnsupportedTransport("RTP/SAVP".into())));
    assert_eq!(parse_offer(&srtp), Err(SdpError::UnsupportedTransport("RTP/SAVP".into())));
    assert_eq!(parse_offer(&fixture("answer-port0.sdp")), Err(SdpError::Rejected));
    let no_c = fixture("answer-pcmu-te101.sdp").replace("c=IN IP4 192.0.2.20\r\n", "");
    assert_eq!(parse_answer(&no_c, &ours), Err(SdpError::Missing("c=")));
    let no_o = fixture("answer-pcmu-te101.sdp").replace("o=- 1718203040 1718203041 IN IP4 192.0.2.20\r\n", "");
    assert_eq!(parse_answer(&no_o, &ours), Err(SdpError::Missing("o=")));
}

#[test]
fn hold_offers_and_directions() {
    let cases = [
        ("reinvite-hold-sendonly.sdp", Direction::SendOnly, v4(192, 0, 2, 20)),
        ("reinvite-inactive.sdp", Direction::Inactive, v4(192, 0, 2, 20)),
        // RFC 2543 hold: c=0.0.0.0 and no direction means the peer will not receive.
        ("reinvite-hold-c0.sdp", Direction::SendOnly, v4(0, 0, 0, 0)),
        // Session-level a=recvonly applies to the audio section.
        ("offer-audio-video.sdp", Direction::RecvOnly, v4(192, 0, 2, 77)),
    ];
    for (name, direction, address) in cases {
        let offer = parse_offer(&fixture(name)).unwrap();
        assert_eq!((offer.direction, offer.address), (direction, address), "{name}");
    }
    let base = fixture("answer-pcmu-te101.sdp");
    let ours = offer(&ALL);
    let direction = |sdp: &str| parse_answer(sdp, &ours).unwrap().direction;
    // Media level wins over session level; session level over the default.
    let session_level = base.replace("a=sendrecv\r\n", "").replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    assert_eq!(direction(&session_level), Direction::Inactive);
    assert_eq!(direction(&session_level.replace("a=ptime:20", "a=ptime:20\r\na=recvonly")), Direction::RecvOnly);
    assert_eq!(direction(&base.replace("a=sendrecv\r\n", "")), Direction::SendRecv);
    // An unspecified address takes away receiving, in IPv4 and IPv6.
    assert_eq!(direction(&base.replace("192.0.2.20\r\nt=", "0.0.0.0\r\nt=")), Direction::SendOnly);
    let v6_hold = base.replace("c=IN IP4 192.0.2.20", "c=IN IP6 ::").replace("a=sendrecv", "a=recvonly");
    assert_eq!(direction(&v6_hold), Direction::Inactive);
}

#[test]
fn answering_an_offer() {
    let here = v4(192, 0, 2, 99);
    let remote = parse_offer(&offer(&ALL).to_sdp()).unwrap();
    // The offer's order wins over the order of `accept`.
    let (sdp, media) = answer(&remote, here, 30_000, &[Codec::Opus, Codec::Pcma], 5, 6, None).unwrap();
    assert_eq!(
        media,
        MediaDescription {
            address: v4(192, 0, 2, 1),
            port: 40_000,
            codec: Codec::Pcma,
            payload_type: 8,
            telephone_event: Some(101),
            telephone_event_rate: Some(8000),
            direction: Direction::SendRecv,
            srtp: None,
        }
    );
    assert_eq!(
        sdp,
        "v=0\r\no=pound 5 6 IN IP4 192.0.2.99\r\ns=pound\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n\
         m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    // pound reads the answer back as the callee meant it.
    let ours = offer(&ALL);
    let back = parse_answer(&sdp, &ours).unwrap();
    assert_eq!((back.address, back.port, back.codec, back.telephone_event), (here, 30_000, Codec::Pcma, Some(101)));

    // Opus takes the telephone-event at 48 kHz.
    let (sdp, media) = answer(&remote, here, 30_000, &[Codec::Opus], 5, 6, None).unwrap();
    assert_eq!((media.payload_type, media.telephone_event, media.telephone_event_rate), (111, Some(110), Some(48000)));
    assert!(
        sdp.contains("m=audio 30000 RTP/AVP 111 110\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n")
    );
    assert_eq!(parse_answer(&sdp, &ours).unwrap().telephone_event_rate, Some(48000));

    // No telephone-event at the codec's rate: none in the answer.
    let mut no_te = remote.clone();
    no_te.telephone_events.retain(|e| e.1 != 8000);
    let (sdp, media) = answer(&no_te, here, 30_000, &[Codec::Pcmu], 5, 6, None).unwrap();
    assert_eq!(media.telephone_event, None);
    assert!(sdp.contains("m=audio 30000 RTP/AVP 0\r\n") && !sdp.contains("telephone-event"), "{sdp}");

    assert_eq!(answer(&remote, here, 30_000, &[], 5, 6, None), Err(SdpError::NoCommonCodec));
    let g729 = parse_offer(&fixture("answer-g729-only.sdp")).unwrap();
    assert_eq!(answer(&g729, here, 30_000, &ALL, 5, 6, None), Err(SdpError::NoCommonCodec));
}

#[test]
fn answer_mirrors_the_direction() {
    let here = v4(192, 0, 2, 99);
    let cases = [
        (Direction::SendRecv, "a=sendrecv"),
        (Direction::SendOnly, "a=recvonly"),
        (Direction::RecvOnly, "a=sendonly"),
        (Direction::Inactive, "a=inactive"),
    ];
    for (offered, answered) in cases {
        let mut ours = offer(&[Codec::Pcmu]);
        ours.direction = offered;
        let remote = parse_offer(&ours.to_sdp()).unwrap();
        let (sdp, media) = answer(&remote, here, 30_000, &ALL, 1, 1, None).unwrap();
        assert!(sdp.ends_with(&format!("{answered}\r\n")), "{offered:?}: {sdp}");
        assert_eq!(media.direction, offered);
    }
    // A hold re-INVITE is answered recvonly.
    let hold = parse_offer(&fixture("reinvite-hold-sendonly.sdp")).unwrap();
    let (sdp, media) = answer(&hold, here, 30_000, &ALL, 1, 2, None).unwrap();
    assert!(sdp.contains("a=recvonly\r\n"));
    assert_eq!((media.codec, media.direction), (Codec::Pcmu, Direction::SendOnly));
    let hold = parse_offer(&fixture("reinvite-hold-c0.sdp")).unwrap();
    let (sdp, media) = answer(&hold, here, 30_000, &ALL, 1, 2, None).unwrap();
    assert!(sdp.contains("a=recvonly\r\n"));
    assert_eq!((media.codec, media.address), (Codec::Pcma, v4(0, 0, 0, 0)));
}

#[test]
fn other_media_are_refused_in_place() {
    let remote = parse_offer(&fixture("offer-audio-video.sdp")).unwrap();
    assert_eq!(remote.port, 7078);
    assert_eq!(
        remote.formats,
        [(96, Some(Codec::Opus)), (0, Some(Codec::Pcmu)), (8, Some(Codec::Pcma)), (101, None), (97, None)]
    );
    assert_eq!(remote.telephone_events, [(101, 48000), (97, 8000)]);
    assert_eq!(
        remote.other_media,
        [OtherMedia { index: 1, media: "video".into(), proto: "RTP/AVP".into(), format: "96".into() }]
    );
    let here = v4(192, 0, 2, 99);
    let (sdp, media) = answer(&remote, here, 30_000, &ALL, 1, 1, None).unwrap();
    assert_eq!((media.codec, media.payload_type, media.telephone_event), (Codec::Opus, 96, Some(101)));
    assert!(sdp.contains("m=audio 30000 RTP/AVP 96 101\r\n"), "{sdp}");
    assert!(sdp.ends_with("a=sendonly\r\nm=video 0 RTP/AVP 96\r\n"), "{sdp}");

    // An SRTP audio stream without a usable key, ahead of the plain one, is refused in its place.
    let two = fixture("offer-audio-video.sdp")
        .replace("t=0 0\r\n", "t=0 0\r\nm=audio 7076 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n");
    let remote = parse_offer(&two).unwrap();
    assert_eq!(remote.other_media.iter().map(|m| m.index).collect::<Vec<_>>(), [0, 2]);
    let (sdp, _) = answer(&remote, here, 30_000, &[Codec::Pcmu], 1, 1, None).unwrap();
    let m_lines: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines, ["m=audio 0 RTP/SAVP 0", "m=audio 30000 RTP/AVP 0 97", "m=video 0 RTP/AVP 96"]);
}

#[test]
fn lf_line_endings_and_odd_but_valid_forms() {
    let lf = fixture("answer-pcmu-te101.sdp").replace("\r\n", "\n");
    assert_eq!(parse_answer(&lf, &offer(&ALL)).unwrap().port, 18230);
    // Port with a count, multicast TTL, lower-case encoding name, repeated PT, trailing blank lines.
    let odd = "v=0\no=- 1 1 IN IP4 192.0.2.9\ns=-\nc=IN IP4 233.252.0.1/127\nt=0 0\n\
               m=audio 5000/2 RTP/AVP 97 97 0\na=rtpmap:97 pcma/8000/1\n\n\n";
    let got = parse_offer(odd).unwrap();
    assert_eq!((got.address, got.port), (v4(233, 252, 0, 1), 5000));
    assert_eq!(got.formats, [(97, Some(Codec::Pcma)), (0, Some(Codec::Pcmu))]);
    // Stereo G.711 and Opus at the wrong clock rate are not codecs pound speaks.
    let wrong = odd.replace("pcma/8000/1", "PCMA/8000/2") + "a=rtpmap:0 opus/8000\n";
    assert_eq!(parse_offer(&wrong).unwrap().formats, [(97, None), (0, None)]);
}

#[test]
fn malformed_bodies_are_errors() {
    let base = fixture("answer-pcmu-te101.sdp");
    let ours = offer(&ALL);
    let malformed = |sdp: &str| match parse_answer(sdp, &ours) {
        Err(SdpError::Malformed { line, .. }) => line,
        other => panic!("{other:?} for {sdp:?}"),
    };
    assert_eq!(parse_answer("", &ours), Err(SdpError::Missing("v=")));
    assert_eq!(malformed("v=1\r\n"), 1);
    assert_eq!(malformed("\r\nhello\r\n"), 2);
    assert_eq!(malformed(&base.replace("s=Asterisk", "s = Asterisk")), 3);
    assert_eq!(malformed(&base.replace("s=Asterisk", "S=Asterisk")), 3);
    assert_eq!(malformed(&base.replace(" 1718203041 ", " ")), 2);
    assert_eq!(malformed(&base.replace("1718203040", "99999999999999999999")), 2);
    assert_eq!(malformed(&base.replace("t=0 0", "t=0 0\r\no=- 1 1 IN IP4 192.0.2.1")), 6);
    assert_eq!(malformed(&base.replace("c=IN IP4 192.0.2.20", "c=IN IP4 pbx.example.com")), 4);
    assert_eq!(malformed(&base.replace("c=IN IP4 192.0.2.20", "c=IN IP6 192.0.2.20")), 4);
    assert_eq!(malformed(&base.replace("c=IN IP4 192.0.2.20", "c=IN IP4")), 4);
    assert_eq!(malformed(&base.replace("18230", "70000")), 6);
    assert_eq!(malformed(&base.replace("RTP/AVP 0 101", "RTP/AVP")), 6);
    assert_eq!(malformed(&base.replace("RTP/AVP 0 101", "RTP/AVP 0 128")), 6);
    assert_eq!(malformed(&base.replace("RTP/AVP 0 101", "RTP/AVP 0 x")), 6);
    assert_eq!(malformed(&base.replace("telephone-event/8000", "telephone-event")), 8);
    assert_eq!(malformed(&base.replace("telephone-event/8000", "telephone-event/0")), 8);
    assert_eq!(malformed(&base.replace("rtpmap:101 ", "rtpmap:300 ")), 8);
    assert_eq!(malformed(&base.replace("PCMU/8000", "PCMU/8000/1/1")), 7);
    assert_eq!(malformed(&base.replace("PCMU/8000", "/8000")), 7);
}

#[test]
fn size_is_bounded() {
    let base = fixture("answer-pcmu-te101.sdp");
    let padding = "a=x-pad:0123456789012345678901234567890123456789\r\n";
    let mut big = base.clone();
    while big.len() + padding.len() <= MAX_SDP_LEN {
        big.push_str(padding);
    }
    assert!(parse_answer(&big, &offer(&ALL)).is_ok(), "{} bytes", big.len());
    big.push_str(padding);
    assert_eq!(parse_answer(&big, &offer(&ALL)), Err(SdpError::TooLarge { len: big.len() }));
    assert!(matches!(parse_offer(&"v=0\n".repeat(10_000)), Err(SdpError::TooLarge { .. })));
}

/// Parses `bytes` every way pound does; only a panic can fail this.
fn parse_everything(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = parse_answer(text, &offer(&ALL));
    if let Ok(remote) = parse_offer(text) {
        let _ = answer(&remote, v4(192, 0, 2, 99), 30_000, &ALL, 1, 1, None);
    }
}

#[test]
fn truncated_and_corrupted_bodies_never_panic() {
    for name in FIXTURES {
        let body = fixture(name);
        let bytes = body.as_bytes();
        for cut in 0..=bytes.len() {
            parse_everything(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            for value in [b'\0', b' ', b'\n', b'=', b'/', b'0', b'9', b'a', b':', 0xC3] {
                let mut corrupt = bytes.to_vec();
                corrupt[i] = value;
                parse_everything(&corrupt);
            }
        }
    }
}

#[test]
fn random_bodies_never_panic() {
    // Random lines of plausible types and tokens, so that the parser gets past
    // the line structure and into every field parser.
    let types = ["o=", "c=", "m=", "a=", "s=", "t=", "a=rtpmap:", "m=audio "];
    #[rustfmt::skip]
    let tokens = [
        "IN", "IP4", "IP6", "0", "8", "96", "101", "111", "127", "128", "65535", "99999999999999999999", "RTP/AVP",
        "RTP/SAVP", "audio", "video", "PCMU/8000", "pcma/8000/1", "opus/48000/2", "telephone-event/8000",
        "telephone-event/48000", "G729/8000", "/", "//", "0.0.0.0", "::", "192.0.2.1", "2001:db8::1/64", "sendonly",
        "recvonly", "inactive", "sendrecv", "-", "",
    ];
    let mut seed = 0x9E37_79B9u32;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize % n
    };
    let mut parsed = 0;
    for _ in 0..3000 {
        let mut body = String::from("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
        if next(2) == 0 {
            body.push_str("c=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 0 101\r\n");
        }
        for _ in 0..next(12) {
            body.push_str(types[next(types.len())]);
            for _ in 0..next(6) {
                body.push_str(tokens[next(tokens.len())]);
                body.push(if next(4) == 0 { '/' } else { ' ' });
            }
            body.push_str("\r\n");
        }
        parse_everything(body.as_bytes());
        parsed += parse_offer(&body).is_ok() as u32;
    }
    assert!(parsed > 0, "the generator never produced a valid offer");
}

#[test]
fn errors_read_well() {
    assert_eq!(
        SdpError::Malformed { line: 3, reason: "not a type=value line" }.to_string(),
        "malformed SDP at line 3: not a type=value line"
    );
    assert_eq!(
        SdpError::TooLarge { len: 20000 }.to_string(),
        "SDP body of 20000 bytes is larger than the 16384 accepted"
    );
}

fn secure_offer(policy: SrtpPolicy) -> Offer {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    Offer { srtp: policy, crypto: offer_keys(&mut rng), ..offer(&ALL) }
}

/// RFC 4568 §5.1's example key.
const THEIR_KEY: &str = "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

#[test]
fn srtp_offers_say_savp_or_avp_and_carry_one_key_per_suite() {
    let mandatory = secure_offer(SrtpPolicy::Mandatory).to_sdp();
    assert!(mandatory.contains("m=audio 40000 RTP/SAVP 0 8 111 101 110\r\n"), "{mandatory}");
    let crypto: Vec<&str> = mandatory.lines().filter(|l| l.starts_with("a=crypto:")).collect();
    assert_eq!(crypto.len(), 3, "{mandatory}");
    for (line, prefix) in crypto.iter().zip([
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:",
        "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:",
        "a=crypto:3 AEAD_AES_128_GCM inline:",
    ]) {
        assert!(line.starts_with(prefix), "{line}");
    }
    let optional = secure_offer(SrtpPolicy::Optional).to_sdp();
    assert!(optional.contains("m=audio 40000 RTP/AVP 0 8 111 101 110\r\n"), "{optional}");
    assert_eq!(optional.matches("a=crypto:").count(), 3);
    let off = Offer { srtp: SrtpPolicy::Off, ..secure_offer(SrtpPolicy::Mandatory) }.to_sdp();
    assert!(off.contains("RTP/AVP") && !off.contains("a=crypto"), "{off}");
}

#[test]
fn srtp_answers_agree_on_one_offered_key_or_are_refused() {
    let ours = secure_offer(SrtpPolicy::Mandatory);
    let plain = fixture("answer-pcmu-te101.sdp");
    let savp = |crypto: &str| format!("{}a={crypto}\r\n", plain.replace("RTP/AVP", "RTP/SAVP"));
    let media = parse_answer(&savp(THEIR_KEY), &ours).unwrap();
    let keys = media.srtp.expect("SRTP agreed");
    assert_eq!(keys.local, ours.crypto[0].key);
    assert_eq!(Some(keys.remote), crypto::parse_crypto(THEIR_KEY).map(|c| c.key));
    // Our tag under another suite, and a tag we never offered.
    let wrong_suite = THEIR_KEY.replace("crypto:1", "crypto:2");
    assert_eq!(parse_answer(&savp(&wrong_suite), &ours), Err(SdpError::NoCrypto));
    assert_eq!(parse_answer(&savp(&THEIR_KEY.replace("crypto:1", "crypto:7")), &ours), Err(SdpError::NoCrypto));
    // No key: mandatory refuses, optional takes plain RTP, but never RTP/SAVP without a key.
    assert_eq!(parse_answer(&plain, &ours), Err(SdpError::NoCrypto));
    let optional = secure_offer(SrtpPolicy::Optional);
    assert_eq!(parse_answer(&plain, &optional).unwrap().srtp, None);
    assert_eq!(parse_answer(&plain.replace("RTP/AVP", "RTP/SAVP"), &optional), Err(SdpError::NoCrypto));
    // Best effort: keys on RTP/AVP.
    let avp_with_key = format!("{plain}a={THEIR_KEY}\r\n");
    assert!(parse_answer(&avp_with_key, &optional).unwrap().srtp.is_some());
    // SRTP off: RTP/SAVP is refused, keys on RTP/AVP ignored.
    assert_eq!(parse_answer(&savp(THEIR_KEY), &offer(&ALL)), Err(SdpError::UnsupportedTransport("RTP/SAVP".into())));
    assert_eq!(parse_answer(&avp_with_key, &offer(&ALL)).unwrap().srtp, None);
}

#[test]
fn srtp_offers_are_answered_by_policy() {
    let secure = parse_offer(&secure_offer(SrtpPolicy::Mandatory).to_sdp()).unwrap();
    assert!(secure.secure);
    assert_eq!(secure.crypto, secure_offer(SrtpPolicy::Mandatory).crypto);
    assert_eq!(choose_crypto(&secure, SrtpPolicy::Off), Err(SdpError::UnsupportedTransport("RTP/SAVP".into())));
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Mandatory] {
        assert_eq!(choose_crypto(&secure, policy).unwrap().map(|c| c.tag), Some(1), "{policy:?}");
    }
    let plain = parse_offer(&offer(&ALL).to_sdp()).unwrap();
    assert_eq!(choose_crypto(&plain, SrtpPolicy::Mandatory), Err(SdpError::NoCrypto));
    assert_eq!(choose_crypto(&plain, SrtpPolicy::Optional), Ok(None));
    // The answer repeats the tag of the line it takes, with the answerer's own key.
    let here = v4(192, 0, 2, 99);
    let mine = crate::srtp::MasterKey::from_bytes(crate::srtp::Suite::AesCm128HmacSha1_32, &[9; 30]).unwrap();
    let line = Crypto { tag: 2, key: mine.clone() };
    let (sdp, media) = answer(&secure, here, 30_000, &ALL, 1, 1, Some(line.clone())).unwrap();
    assert!(sdp.contains("m=audio 30000 RTP/SAVP 0 101\r\n"), "{sdp}");
    assert!(sdp.contains(&format!("a={}\r\n", line.to_attribute())), "{sdp}");
    assert_eq!(sdp.matches("a=crypto:").count(), 1);
    let keys = media.srtp.unwrap();
    assert_eq!((keys.local, keys.remote), (mine.clone(), secure.crypto[1].key.clone()));
    assert_eq!(answer(&secure, here, 30_000, &ALL, 1, 1, None), Err(SdpError::UnsupportedTransport("RTP/SAVP".into())));
    let unknown = Crypto { tag: 9, key: mine };
    assert_eq!(answer(&secure, here, 30_000, &ALL, 1, 1, Some(unknown)), Err(SdpError::NoCrypto));
}
