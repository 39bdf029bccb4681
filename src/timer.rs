//! A machine's named deadlines (quinn's `TimerTable`): at most one per kind,
//! the next deadline is their minimum, and each fires by name. A leaf: the
//! socket-free machines of every layer use it.

use std::marker::PhantomData;
use std::time::Instant;

/// Deadlines indexed by a machine's timer enum `T` (`N` kinds, `T` → index).
#[derive(Debug, Clone)]
pub struct TimerTable<T, const N: usize> {
    deadlines: [Option<Instant>; N],
    kind: PhantomData<T>,
}

impl<T: Copy + Into<usize>, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        TimerTable { deadlines: [None; N], kind: PhantomData }
    }
}

impl<T: Copy + Into<usize>, const N: usize> TimerTable<T, N> {
    /// Arms `timer` for `at`, replacing its previous deadline.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.deadlines[timer.into()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        self.deadlines[timer.into()] = None;
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.deadlines = [None; N];
    }

    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines[timer.into()]
    }

    pub fn is_set(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed and due by `now`.
    pub fn is_expired(&self, timer: T, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Copy)]
    enum Kind {
        Ring,
        Input,
    }

    impl From<Kind> for usize {
        fn from(kind: Kind) -> usize {
            kind as usize
        }
    }

    #[test]
    fn the_next_deadline_is_the_earliest_armed_one() {
        let t0 = Instant::now();
        let mut timers = TimerTable::<Kind, 2>::default();
        assert_eq!(timers.next(), None);
        timers.set(Kind::Input, t0 + Duration::from_secs(5));
        timers.set(Kind::Ring, t0 + Duration::from_secs(9));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(5)));
        assert!(timers.is_expired(Kind::Input, t0 + Duration::from_secs(5)));
        assert!(!timers.is_expired(Kind::Ring, t0 + Duration::from_secs(5)));
        timers.stop(Kind::Input);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(9)));
        timers.set(Kind::Ring, t0 + Duration::from_secs(1));
        assert_eq!(timers.get(Kind::Ring), Some(t0 + Duration::from_secs(1)), "re-arming replaces");
        timers.stop_all();
        assert!(!timers.is_set(Kind::Ring) && timers.next().is_none());
    }
}
