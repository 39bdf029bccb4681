//! The call's SIP side: the INVITE transaction and its answer, digest
//! retries, CANCEL, BYE, requests from the callee inside the dialog, and the
//! liveness probe. One `impl Call` split from `mod.rs` by job; the module
//! shares the call's state and imports.

use super::*;

impl Call {
    pub(super) fn on_invite_event(&mut self, now: Instant, event: TransactionEvent) {
        match event {
            TransactionEvent::Provisional(response) => {
                let status = response.status().unwrap_or(100);
                if status > 100 && !self.provisional_seen {
                    self.provisional_seen = true;
                    if matches!(status, 180 | 183) {
                        self.events.push_back(CallEvent::Ringing);
                    }
                }
                if self.phase == Phase::Canceling && self.cancel_sent_at.is_none() && status > 100 {
                    self.send_cancel(now);
                }
                if status == 183 && self.phase == Phase::Inviting {
                    self.listen_early(now, &response);
                }
            }
            TransactionEvent::Final(response) => {
                let status = response.status().unwrap_or(500);
                if self.ack.is_none() {
                    self.events.push_back(CallEvent::Response { status });
                }
                if (200..300).contains(&status) {
                    self.on_answer(now, &response);
                } else if matches!(status, 401 | 407) && self.retry_with_credentials(now, &response) {
                    self.sip_status = Some(status);
                } else {
                    self.sip_status = Some(status);
                    let outcome =
                        if self.phase == Phase::Canceling { Outcome::NoAnswer } else { Outcome::of_failure(status) };
                    if outcome == Outcome::Unreachable {
                        self.detail = response.reason().map(|r| format!("{status} {r}"));
                    }
                    self.decide(outcome, None);
                    self.finish(now);
                }
            }
            TransactionEvent::Timeout | TransactionEvent::TransportError => {
                if matches!(self.phase, Phase::Inviting | Phase::Canceling) {
                    let outcome = if self.phase == Phase::Canceling { Outcome::NoAnswer } else { Outcome::Unreachable };
                    self.detail.get_or_insert_with(|| "no final response to the INVITE".into());
                    self.decide(outcome, None);
                    self.finish(now);
                }
            }
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, response: &Message) {
        if let Some(ack) = &self.ack {
            // A retransmitted 2xx: our ACK was lost.
            self.outbox.push_back((ack.clone(), Destination::NextHop));
            return;
        }
        self.sip_status = Some(response.status().unwrap_or(200));
        let dialog = match Dialog::as_caller(&self.invite, response) {
            Ok(dialog) => dialog,
            Err(e) => {
                // Without a usable dialog we cannot even send BYE; ACK to the
                // remote's Contact is impossible too, so report and stop.
                self.detail = Some(format!("unusable 2xx: {e}"));
                self.decide(Outcome::Failed, None);
                self.finish(now);
                return;
            }
        };
        let invite_cseq = self.invite.cseq().map_or(1, |(n, _)| n);
        let ack = dialog.ack(invite_cseq, &self.via());
        self.outbox.push_back((ack.clone(), Destination::NextHop));
        self.ack = Some(ack);
        self.origins.set_remote_target(&dialog.remote_target);
        self.dialog = Some(dialog);
        self.answered_at = Some(now);
        if self.phase == Phase::Canceling || self.outcome.is_some() {
            // The 200 crossed our CANCEL: the call exists, so end it properly.
            self.decide(Outcome::NoAnswer, None);
            self.hang_up(now);
            return;
        }
        self.events.push_back(CallEvent::Answered);
        let answer = std::str::from_utf8(response.body())
            .map_err(|e| e.to_string())
            .and_then(|sdp| parse_answer(sdp, &self.offer).map_err(|e| e.to_string()));
        let inband = self.config.dialplan.accepts(DtmfSource::Inband);
        let learning = self.config.rtp_learning_packets;
        let voicemail = self.config.dialplan.voicemail;
        match answer.map(|description| MediaSession::new(now, description, inband, learning, voicemail, &mut self.rng))
        {
            Ok(Ok(media)) => {
                tracing::info!(call_id = self.call_id(), codec = ?media.description().codec, "answered");
                self.media = Some(media);
                self.phase = Phase::Talking;
                self.timers.stop(Timer::Ring);
                self.timers.set(Timer::Talk, now + self.config.dialplan.max_duration);
                self.play_main_prompt();
            }
            Ok(Err(e)) => self.fail(now, format!("media: {e}")),
            Err(e) => self.fail(now, format!("SDP answer: {e}")),
        }
    }

    /// Early media (a 183 with SDP): listened to for a SIT only. Nothing
    /// is sent, and keys before the answer never count.
    fn listen_early(&mut self, now: Instant, response: &Message) {
        if self.media.is_some() || response.body().is_empty() {
            return;
        }
        let Ok(sdp) = std::str::from_utf8(response.body()) else { return };
        let Ok(description) = parse_answer(sdp, &self.offer) else { return };
        let learning = self.config.rtp_learning_packets;
        if let Ok(media) = MediaSession::new(now, description, false, learning, None, &mut self.rng) {
            tracing::debug!(call_id = self.call_id(), "early media");
            self.media = Some(media);
        }
    }

    pub(super) fn retry_with_credentials(&mut self, now: Instant, response: &Message) -> bool {
        let Some(answer) = self.authenticator.answer(response, &Method::Invite, &self.config.target, &mut self.rng)
        else {
            return false;
        };
        let mut invite = self.invite.clone();
        let cseq = self.invite.cseq().map_or(1, |(n, _)| n) + 1;
        invite.set_header("CSeq", format!("{cseq} INVITE"));
        invite.remove_header("Authorization");
        invite.remove_header("Proxy-Authorization");
        invite.add_header(answer.header, answer.value);
        tracing::info!(call_id = self.call_id(), realm = %answer.realm, "answering challenge");
        self.send_invite(now, invite);
        true
    }

    pub(super) fn send_cancel(&mut self, now: Instant) {
        self.phase = Phase::Canceling;
        self.timers.stop(Timer::Ring);
        if !self.provisional_seen {
            // §9.1: no CANCEL before a provisional response; sent when one arrives.
            return;
        }
        let mut cancel = Message::request(Method::Cancel, self.invite.uri().unwrap_or_default().to_string());
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(value) = self.invite.header(name) {
                cancel.add_header(name, value.to_string());
            }
        }
        for route in self.invite.header_values("Route") {
            cancel.add_header("Route", route.to_string());
        }
        let cseq = self.invite.cseq().map_or(1, |(n, _)| n);
        cancel.add_header("CSeq", format!("{cseq} CANCEL"));
        cancel.add_header("Max-Forwards", "70");
        self.cancel_sent_at = Some(now);
        self.timers.set(Timer::CancelGiveUp, now + self.config.timers.t1 * CANCEL_GIVE_UP);
        self.send_request(cancel);
    }

    pub(super) fn on_bye_event(&mut self, now: Instant, event: TransactionEvent) {
        if let TransactionEvent::Final(response) = &event
            && matches!(response.status(), Some(401 | 407))
            && self.retry_bye_with_credentials(response)
        {
            return;
        }
        if matches!(event, TransactionEvent::Final(_) | TransactionEvent::Timeout | TransactionEvent::TransportError) {
            self.finish(now);
        }
    }

    pub(super) fn retry_bye_with_credentials(&mut self, response: &Message) -> bool {
        let Some(uri) = self.dialog.as_ref().map(|dialog| dialog.remote_target.clone()) else { return false };
        let Some(answer) = self.authenticator.answer(response, &Method::Bye, &uri, &mut self.rng) else {
            return false;
        };
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else { return false };
        let mut bye = dialog.request(Method::Bye, &via);
        bye.add_header(answer.header, answer.value);
        self.bye_tx = self.send_request(bye);
        true
    }

    pub(super) fn handle_request(&mut self, now: Instant, from: SocketAddr, request: Message) {
        let Some(method) = request.method().cloned() else { return };
        if method == Method::Ack {
            self.replies.acknowledged(&request);
            return;
        }
        if self.replies.retransmitted(&request, from) {
            return;
        }
        let in_dialog = self.dialog.as_ref().is_some_and(|d| d.matches(&request));
        if !in_dialog {
            self.replies.reply(now, &request, Message::response_to(&request, 481, None), from, false);
            return;
        }
        let dialog = self.dialog.as_mut().expect("matched above");
        if !dialog.accept_remote_cseq(request.cseq().map_or(0, |(n, _)| n)) {
            self.replies.reply(now, &request, Message::response_to(&request, 500, None), from, false);
            return;
        }
        match method {
            Method::Bye => {
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
                if self.outcome.is_none() {
                    self.decide(Outcome::CalleeHangup, None);
                }
                tracing::info!(call_id = self.call_id(), "callee hung up");
                self.finish(now);
            }
            Method::Info => {
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
                if let Some((digit, content_type)) = info_digit(&request) {
                    let detail = KeyDetail::Info { content_type };
                    self.on_digit(now, MediaKey { digit, source: DtmfSource::Info, latency: None, detail });
                }
            }
            Method::Invite | Method::Update => {
                let reliable = method == Method::Update;
                let (response, description) = answer_in_dialog(&request, &mut self.offer, self.media.as_ref());
                if let Some(description) = description
                    && let Some(media) = self.media.as_mut()
                {
                    media.update_remote(description);
                }
                if response.status() == Some(200) {
                    dialog.refresh_target(&request);
                    self.origins.set_remote_target(&dialog.remote_target);
                }
                let response = response.with_header("Contact", contact(&self.config));
                self.replies.reply(now, &request, response, from, method == Method::Invite && !reliable);
            }
            Method::Options => {
                let response = Message::response_to(&request, 200, None).with_header("Allow", server::ALLOW);
                self.replies.reply(now, &request, response, from, false);
            }
            Method::Cancel => {
                // Every request is answered at once, so there is nothing left to cancel.
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
            }
            Method::Other(_) => {
                self.replies.reply(now, &request, Message::response_to(&request, 501, None), from, false);
            }
            _ => {
                let response = Message::response_to(&request, 405, None).with_header("Allow", server::ALLOW);
                self.replies.reply(now, &request, response, from, false);
            }
        }
    }

    /// Asks the callee's side, inside the dialog, whether the call still
    /// exists (RFC 3261 §11 OPTIONS; any final response but 481 or 408 means
    /// it does).
    pub(super) fn probe_liveness(&mut self) {
        tracing::info!(call_id = self.call_id(), "no RTP from the callee: asking whether the dialog is alive");
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else { return };
        let options = dialog.request(Method::Options, &via);
        self.liveness_tx = self.send_request(options);
    }

    pub(super) fn on_liveness_event(&mut self, now: Instant, event: TransactionEvent) {
        let seconds = self.config.dialplan.media_timeout.map_or(0, |t| t.as_secs());
        let gone = match &event {
            TransactionEvent::Final(response) => match response.status() {
                Some(status @ (408 | 481)) => Some(format!("OPTIONS answered {status}")),
                _ => None,
            },
            TransactionEvent::Timeout => Some("OPTIONS unanswered".to_string()),
            TransactionEvent::TransportError => Some("OPTIONS undeliverable".to_string()),
            _ => return,
        };
        match gone {
            // The callee's side no longer knows the call: it ended without a
            // BYE reaching us, which is a hang-up as far as the requester is
            // concerned. A BYE would go unanswered too, so none is sent.
            Some(why) => {
                let detail = format!("no RTP from the callee for {seconds} s and the dialog is gone ({why})");
                tracing::info!(call_id = self.call_id(), %detail, "callee gone");
                self.detail.get_or_insert(detail);
                self.decide(Outcome::CalleeHangup, None);
                self.finish(now);
            }
            None => {
                self.detail.get_or_insert_with(|| format!("media timeout: no RTP from the callee for {seconds} s"));
                self.decide(Outcome::NoInput, None);
                self.hang_up(now);
            }
        }
    }

    pub(super) fn hang_up(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Ending | Phase::Done) {
            return;
        }
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else {
            self.finish(now);
            return;
        };
        if let Some(media) = self.media.as_mut() {
            media.stop();
        }
        // Only the BYE transaction's own timers matter from here on.
        self.timers.stop_all();
        let bye = dialog.request(Method::Bye, &via);
        self.bye_tx = self.send_request(bye);
        self.phase = Phase::Ending;
    }
}
