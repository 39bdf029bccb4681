//! A call the engine has placed, which ends on the wire properly whatever
//! happens to the code watching it.
//!
//! The call runs as its own task. Aborting that task would drop the call
//! without a CANCEL or BYE: the callee would keep ringing, or sit in a live
//! call nobody serves. So nothing aborts it: [`PlacedCall::end`] asks the
//! call to end (the machine sends CANCEL or BYE and waits for the answer),
//! and dropping a `PlacedCall` does the same, so a verification task that
//! panics or is torn down still leaves a call that finishes by itself. The
//! engine waits for every call task before it returns: each holds a clone of
//! the engine's `alive` sender (mini-redis's shutdown-complete pattern).

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;

use crate::call::{CallEvent, CallReport};
use crate::net::{CallSetup, NetError, run_call};

/// The running call task; see the module docs.
pub(super) struct PlacedCall {
    task: JoinHandle<Result<CallReport, NetError>>,
    end: watch::Sender<bool>,
}

impl PlacedCall {
    /// Places the call; its events arrive on the returned receiver as the
    /// call makes them. `alive` is held until the call task ends.
    pub(super) fn place(
        mut setup: CallSetup,
        alive: mpsc::Sender<()>,
    ) -> (PlacedCall, mpsc::UnboundedReceiver<CallEvent>) {
        let (end, ended) = watch::channel(false);
        setup.cancel = Some(ended);
        let (events, progress) = mpsc::unbounded_channel();
        let call_span = tracing::info_span!("call", call_id = tracing::field::Empty);
        let recorder = call_span.clone();
        let task = tokio::spawn(
            async move {
                let _alive = alive;
                run_call(setup, move |event| {
                    if let CallEvent::Calling { call_id } = event {
                        recorder.record("call_id", call_id.as_str());
                    }
                    // Nobody listening any more (the watcher is gone): the call
                    // was told to end and goes on doing so.
                    let _ = events.send(event.clone());
                })
                .await
            }
            .instrument(call_span),
        );
        (PlacedCall { task, end }, progress)
    }

    /// Asks the call to end now (CANCEL before the answer, BYE after it).
    pub(super) fn end(&self) {
        self.end.send_replace(true);
    }

    /// Waits for the call to be over.
    pub(super) async fn finished(&mut self) -> Result<Result<CallReport, NetError>, JoinError> {
        (&mut self.task).await
    }
}

impl Drop for PlacedCall {
    fn drop(&mut self) {
        // A call already over ignores this; a running one ends on the wire.
        self.end();
    }
}
