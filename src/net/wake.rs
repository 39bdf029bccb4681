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

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;

/// The flags and the task's own waker, shared by the inputs' wakers.
struct Shared {
    woken: AtomicU8,
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
        self.shared.woken.fetch_or(self.flag, Ordering::AcqRel);
        self.shared.task.wake();
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
        let shared = Arc::new(Shared { woken: AtomicU8::new(u8::MAX), task: AtomicWaker::new() });
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
        let woken = self.shared.woken.fetch_and(!flag, Ordering::AcqRel) & flag != 0;
        woken.then(|| Context::from_waker(&self.wakers[input]))
    }

    /// Input `input` returned something: poll it again next time.
    pub(super) fn again(&self, input: usize) {
        self.shared.woken.fetch_or(1 << input, Ordering::AcqRel);
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

    #[test]
    fn an_input_is_polled_again_only_after_it_woke_the_task() {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let task = Waker::from(counter.clone());
        let inputs = Inputs::<2>::new();
        inputs.register(&Context::from_waker(&task));
        // First poll: both inputs, then neither until one wakes.
        let first = inputs.take(0).expect("input 0 at first").waker().clone();
        assert!(inputs.take(1).is_some());
        assert!(inputs.take(0).is_none() && inputs.take(1).is_none());
        first.wake();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(inputs.take(1).is_none(), "only the input that woke");
        assert!(inputs.take(0).is_some());
        assert!(inputs.take(0).is_none(), "taken once");
        inputs.again(1);
        assert!(inputs.take(1).is_some(), "an input that returned something is polled again");
    }
}
