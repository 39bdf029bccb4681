//! Which of a task's inputs woke it.
//!
//! A tokio wake-up says only that the task should run, not why. A driver
//! that polls every input on every wake-up pays for all of them each time:
//! a held call wakes 50 times a second for its RTP clock alone, and
//! polling its two SIP channels, its stop signal and its RTP socket each
//! time, to find them empty, cost more than sending its packet (issue 10's
//! profile). Each input is polled here with a waker of its own that flags
//! it before waking the task, so an input is polled again only once it has
//! woken (or after it returned something: there may be more).
//!
//! An input may also be deferred: its waker flags it without waking the
//! task, which then polls it the next time something else wakes it. The
//! driver defers RTP while its machine's next deadline is near (see
//! `driver::RTP_DEFERRAL`), so that a call hearing audio wakes once per
//! packet it sends rather than once per packet sent and once per packet heard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;

/// The flags and the task's own waker, shared by the inputs' wakers.
struct Shared {
    woken: AtomicU8,
    /// Inputs whose wakers flag them without waking the task.
    deferred: AtomicU8,
    task: AtomicWaker,
}

/// An input's waker: flags the input, then wakes the task.
struct InputWaker {
    shared: Arc<Shared>,
    flag: u8,
}

impl Wake for InputWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The flag is set before the task can run: a task that registers and
        // then reads the flags sees every wake-up that reached it.
        self.shared.woken.fetch_or(self.flag, Ordering::SeqCst);
        // Sequentially consistent with `defer`'s store and `take`'s read: a
        // wake-up that reads its input as deferred flagged it before the
        // task stopped deferring it, so the task's next `take` sees the flag.
        if self.shared.deferred.load(Ordering::SeqCst) & self.flag == 0 {
            self.shared.task.wake();
        }
    }
}

/// Wake flags for `N` inputs (at most 8).
pub(super) struct Inputs<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
}

impl<const N: usize> Inputs<N> {
    /// Every input flagged: each is polled once, which registers its waker.
    pub(super) fn new() -> Self {
        const { assert!(N <= 8, "one bit per input") };
        let shared =
            Arc::new(Shared { woken: AtomicU8::new(u8::MAX), deferred: AtomicU8::new(0), task: AtomicWaker::new() });
        let wakers =
            std::array::from_fn(|i| Waker::from(Arc::new(InputWaker { shared: shared.clone(), flag: 1 << i })));
        Inputs { shared, wakers }
    }

    /// The task is being polled with `task`'s waker: the inputs wake it.
    /// Before any [`Inputs::take`] of the poll.
    pub(super) fn register(&self, task: &Context<'_>) {
        self.shared.task.register(task.waker());
    }

    /// The context to poll input `input` with, if it may have something
    /// (woken since it was last polled); its flag is cleared.
    pub(super) fn take(&self, input: usize) -> Option<Context<'_>> {
        let flag = 1 << input;
        let woken = self.shared.woken.fetch_and(!flag, Ordering::SeqCst) & flag != 0;
        woken.then(|| Context::from_waker(&self.wakers[input]))
    }

    /// Input `input` returned something: poll it again next time.
    pub(super) fn again(&self, input: usize) {
        self.shared.woken.fetch_or(1 << input, Ordering::SeqCst);
    }

    /// Whether input `input`'s wake-ups only flag it (`true`) or also wake
    /// the task. Set before the inputs are taken for a poll: a wake-up that
    /// came while it was deferred is then found by that poll's `take`.
    pub(super) fn defer(&self, input: usize, deferred: bool) {
        let flag = 1 << input;
        match deferred {
            true => self.shared.deferred.fetch_or(flag, Ordering::SeqCst),
            false => self.shared.deferred.fetch_and(!flag, Ordering::SeqCst),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the task's wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Counter {
        fn wake_ups(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Two inputs of a task whose wake-ups are counted, registered with it.
    fn counted_task() -> (Arc<Counter>, Waker, Inputs<2>) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let inputs = Inputs::<2>::new();
        inputs.register(&Context::from_waker(&task));
        (counter, task, inputs)
    }

    #[test]
    fn an_input_is_polled_again_only_after_it_woke_the_task() {
        let (counter, _task, inputs) = counted_task();
        // First poll: both inputs, then neither until one wakes.
        let first = inputs.take(0).expect("input 0 at first").waker().clone();
        assert!(inputs.take(1).is_some());
        assert!(inputs.take(0).is_none() && inputs.take(1).is_none());
        first.wake();
        assert_eq!(counter.wake_ups(), 1, "the task is woken");
        assert!(inputs.take(1).is_none(), "only the input that woke");
        assert!(inputs.take(0).is_some());
        assert!(inputs.take(0).is_none(), "taken once");
        inputs.again(1);
        assert!(inputs.take(1).is_some(), "an input that returned something is polled again");
    }

    #[test]
    fn a_deferred_input_is_flagged_without_waking_the_task_until_it_is_no_longer_deferred() {
        let (counter, task, inputs) = counted_task();
        let deferred = inputs.take(0).expect("input 0 at first").waker().clone();
        let prompt = inputs.take(1).expect("input 1 at first").waker().clone();
        inputs.defer(0, true);
        deferred.wake_by_ref();
        assert_eq!(counter.wake_ups(), 0, "a deferred input does not wake the task");
        prompt.wake_by_ref();
        assert_eq!(counter.wake_ups(), 1, "another input still does");
        // The task runs: it registers again, then takes its inputs.
        inputs.register(&Context::from_waker(&task));
        assert!(inputs.take(0).is_some(), "the deferred wake-up is found at the next poll");
        assert!(inputs.take(1).is_some());
        inputs.defer(0, false);
        deferred.wake_by_ref();
        assert_eq!(counter.wake_ups(), 2, "no longer deferred, it wakes the task");
        assert!(inputs.take(0).is_some());
    }
}
