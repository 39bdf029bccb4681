//! The conversation once answered: keys, prompts, the deadlines that end a
//! silent call, the decision and the end of the call. One `impl Call` split
//! from `mod.rs` by job; the module shares the call's state and imports.

use super::*;

impl Call {
    pub(super) fn on_digit(&mut self, now: Instant, key: MediaKey) {
        let MediaKey { digit, source, latency, detail } = key;
        if self.phase != Phase::Talking || !self.config.dialplan.accepts(source) {
            return;
        }
        let Some(verdict) = self.digits.press(now, digit, source) else { return };
        if let Some(media) = self.media.as_mut() {
            media.key_pressed();
        }
        let digit = self.digits.shown(digit);
        tracing::info!(call_id = self.call_id(), digit = %digit, source = source.as_str(), "key");
        let at_ms = self.answered_at.map_or(0, |answered| now.saturating_duration_since(answered).as_millis());
        let evidence = detail.evidence(digit, source, u64::try_from(at_ms).unwrap_or(u64::MAX));
        if self.evidence.len() < MAX_EVIDENCE {
            self.evidence.push(evidence.clone());
        }
        self.events.push_back(CallEvent::Digit { digit, source, latency, evidence: Box::new(evidence) });
        if let Some(media) = self.media.as_mut() {
            media.stop();
        }
        self.timers.stop(Timer::Input);
        match verdict {
            Verdict::Pending => self.timers.set(Timer::Input, now + self.config.dialplan.input_timeout),
            Verdict::Expected => {
                self.decide(Outcome::Verified, Some((source, now)));
                self.close(now, self.config.prompts.confirmation.clone());
            }
            Verdict::Fraud => {
                self.decide(Outcome::FraudReported, Some((source, now)));
                self.close(now, self.config.prompts.fraud.clone());
            }
            Verdict::Wrong => {
                self.wrong_entries += 1;
                if self.wrong_entries >= self.config.dialplan.max_attempts {
                    self.decide(Outcome::WrongInput, Some((source, now)));
                    self.hang_up(now);
                } else {
                    let notice = match self.config.code {
                        Some(_) => self.config.prompts.wrong_code.clone(),
                        None => self.config.prompts.wrong_key.clone(),
                    };
                    if let (Some(notice), Some(media)) = (notice, self.media.as_mut()) {
                        media.play(notice);
                    }
                    self.prompt_plays = 0;
                    self.play_main_prompt();
                }
            }
        }
    }

    /// A key from `end.source` has ended: its duration completes the latest
    /// entry from that source, if that one is still open (a key the collector
    /// dropped as a repeat from another path has no entry of its own).
    pub(super) fn on_key_end(&mut self, end: KeyEnd) {
        let Some(entry) = self.evidence.iter_mut().rev().find(|e| e.source == end.source) else { return };
        if entry.duration_ms.is_some() || entry.rfc4733.is_some_and(|r| r.end_received) {
            return;
        }
        entry.duration_ms = end.duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if let Some(relay) = entry.rfc4733.as_mut() {
            relay.end_received = true;
        }
    }

    /// A SIT or a voicemail box in the callee's audio decides the call at
    /// once, unless a key already did: pound hangs up without playing
    /// further prompts, so a box records nothing. In early media (before
    /// the answer) pound cancels the INVITE instead.
    pub(super) fn on_heard(&mut self, now: Instant, heard: Heard) {
        if !matches!(self.phase, Phase::Inviting | Phase::Talking) || self.outcome.is_some() {
            return;
        }
        let detail = heard.detail();
        tracing::info!(call_id = self.call_id(), %detail, "recognised in the callee's audio");
        self.detail = Some(detail);
        self.decide(heard.outcome(), None);
        match self.phase {
            Phase::Inviting => self.send_cancel(now),
            _ => self.hang_up(now),
        }
    }

    pub(super) fn play_main_prompt(&mut self) {
        let prompt = match self.config.code {
            Some(_) => &self.config.prompts.code,
            None => &self.config.prompts.main,
        };
        if let Some(media) = self.media.as_mut() {
            media.play(prompt.clone());
            self.prompt_plays += 1;
        }
    }

    pub(super) fn on_prompt_finished(&mut self, now: Instant) {
        match self.phase {
            Phase::Talking => self.timers.set(Timer::Input, now + self.config.dialplan.input_timeout),
            Phase::Closing => self.hang_up(now),
            _ => {}
        }
    }

    pub(super) fn check_deadlines(&mut self, now: Instant) {
        match self.phase {
            Phase::Inviting if self.timers.is_expired(Timer::Ring, now) => {
                tracing::info!(call_id = self.call_id(), "ring timeout");
                self.decide(Outcome::NoAnswer, None);
                self.send_cancel(now);
            }
            Phase::Canceling if self.timers.is_expired(Timer::CancelGiveUp, now) => {
                self.detail = Some("no final response after CANCEL".into());
                self.finish(now);
            }
            Phase::Talking | Phase::Closing => {
                if self.media_silence_deadline().is_some_and(|t| now >= t) {
                    self.probe_liveness();
                } else if self.timers.is_expired(Timer::Talk, now) {
                    self.decide(Outcome::NoInput, None);
                    self.detail.get_or_insert_with(|| "maximum call duration".into());
                    self.hang_up(now);
                } else if self.timers.is_expired(Timer::Closing, now) {
                    self.hang_up(now);
                } else if self.timers.is_expired(Timer::Input, now) {
                    self.timers.stop(Timer::Input);
                    self.digits.clear_entry();
                    if self.prompt_plays < self.config.dialplan.prompt_repeats {
                        self.play_main_prompt();
                    } else {
                        // A wrong key followed by silence is the callee's
                        // answer, not an absent one.
                        let outcome = if self.wrong_entries > 0 { Outcome::WrongInput } else { Outcome::NoInput };
                        self.decide(outcome, None);
                        self.hang_up(now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Silence is what a listening callee with VAD or DTX sends, so it
    /// decides nothing by itself: only a dialog that no longer answers ends
    /// the call early. The deadline is off by default (dialplan
    /// `media_timeout_ms = 0`) and fires once per call.
    pub(super) fn media_silence_deadline(&self) -> Option<Instant> {
        let timeout = self.config.dialplan.media_timeout?;
        if self.phase != Phase::Talking || self.liveness_tx.is_some() {
            return None;
        }
        let media = self.media.as_ref()?;
        if media.description().direction != Direction::SendRecv {
            // On hold the callee legitimately sends nothing.
            return None;
        }
        let last = media.last_packet_at().max(self.answered_at)?;
        Some(last + timeout)
    }

    pub(super) fn decide(&mut self, outcome: Outcome, digit: Option<(DtmfSource, Instant)>) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
            if let Some((source, at)) = digit {
                self.dtmf_source = Some(source);
                self.digit_at = Some(at);
            }
            self.events.push_back(CallEvent::Decided { outcome, key: digit.map(|(source, _)| source) });
        }
    }

    pub(super) fn close(&mut self, now: Instant, prompt: Option<Arc<Prompt>>) {
        match (prompt, self.media.as_mut()) {
            (Some(prompt), Some(media)) => {
                media.play(prompt);
                self.phase = Phase::Closing;
                self.timers.stop(Timer::Input);
                self.timers.set(Timer::Closing, now + CLOSING_LIMIT);
            }
            _ => self.hang_up(now),
        }
    }

    pub(super) fn fail(&mut self, now: Instant, detail: String) {
        tracing::warn!(call_id = self.call_id(), %detail, "call failed");
        self.detail.get_or_insert(detail);
        self.decide(Outcome::Failed, None);
        self.hang_up(now);
    }

    pub(super) fn finish(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        // Every path decides before it ends; one that did not is a failure,
        // announced like any other decision.
        self.decide(Outcome::Failed, None);
        self.phase = Phase::Done;
        let since_start = |t: Instant| t.saturating_duration_since(self.started).as_millis() as u64;
        let report = CallReport {
            outcome: self.outcome.unwrap_or(Outcome::Failed),
            sip_status: self.sip_status,
            dtmf_source: self.dtmf_source,
            digits: self.digits.digits().to_string(),
            duration_ms: since_start(now),
            call_id: self.call_id().to_string(),
            answered_ms: self.answered_at.map(since_start),
            digit_ms: self.digit_at.map(since_start),
            detail: self.detail.clone(),
            foreign_rtp_packets: self.early_rtp + self.media.as_ref().map_or(0, |m| m.rtp_stats().foreign),
            foreign_sip_messages: self.foreign_sip,
            srtp: self.media.as_ref().and_then(MediaSession::srtp_suite),
            srtp_rejected_packets: self.media.as_ref().map_or(0, MediaSession::srtp_rejected),
            evidence: self.evidence.clone(),
        };
        tracing::info!(call_id = self.call_id(), outcome = report.outcome.as_str(), "call finished");
        self.events.push_back(CallEvent::Finished(report));
    }
}
