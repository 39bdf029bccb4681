//! `pound phone`: the simulated callee; one JSON line when ready, and one
//! for each INVITE of a new call, each key press as it begins and each call
//! that ends.

use std::net::SocketAddr;

use serde_json::json;

use crate::net::{NetError, PhoneSetup, run_phone};
use crate::phone::PhoneEvent;

/// Serves calls until killed or `setup.calls` have ended.
pub async fn run(setup: PhoneSetup) -> Result<(), NetError> {
    let print = |value: serde_json::Value| println!("{value}");
    run_phone(
        setup,
        |address: SocketAddr| print(json!({"event": "ready", "sip": address.to_string()})),
        |event| match event {
            PhoneEvent::Invited { call_id } => print(json!({"event": "invite", "call_id": call_id})),
            PhoneEvent::KeyPressed { call_id, key } => {
                print(json!({"event": "key", "call_id": call_id, "key": key.to_string()}))
            }
            PhoneEvent::CallEnded { call_id, rtp_received, srtp } => print(json!({
                "event": "call_ended",
                "call_id": call_id,
                "rtp_received": rtp_received,
                "srtp": srtp.map(|suite| suite.name()),
            })),
        },
    )
    .await
}
