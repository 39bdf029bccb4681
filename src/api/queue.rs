//! The create path's queue limit (`api.queue_limit`, issue 10): how many
//! `POST /v1/verifications` may wait for the store at once. Past it a
//! request is answered `429 queue_full` with `Retry-After` at once, instead
//! of joining a queue so long that its client gives up (and, having given
//! up, retries on top of it).
//!
//! A request holds its [`QueueSlot`] from the moment it needs the store
//! until its answer is built, and gives it back when the slot is dropped:
//! on success, on every error, and when hyper drops the handler's future
//! because its client went away, so no path can leak a place.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The places of the create path's queue.
#[derive(Debug)]
pub struct StoreQueue {
    waiting: Arc<AtomicUsize>,
    /// 0: no limit.
    limit: usize,
}

/// One create request's place in the queue, given back on drop.
#[derive(Debug)]
pub struct QueueSlot {
    waiting: Arc<AtomicUsize>,
}

impl StoreQueue {
    /// A queue of at most `limit` requests (0: no limit).
    pub fn new(limit: usize) -> StoreQueue {
        StoreQueue { waiting: Arc::new(AtomicUsize::new(0)), limit }
    }

    /// A place, unless `limit` requests hold one already.
    pub fn enter(&self) -> Option<QueueSlot> {
        let limit = self.limit;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (limit == 0 || held < limit).then_some(held + 1))
            .ok()
            .map(|_| QueueSlot { waiting: self.waiting.clone() })
    }

    /// Requests holding a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_limit_plus_one_is_refused_until_a_place_comes_free() {
        let queue = StoreQueue::new(2);
        let first = queue.enter().expect("1 of 2");
        let second = queue.enter().expect("2 of 2");
        assert!(queue.enter().is_none(), "a third must be refused");
        assert_eq!(queue.waiting(), 2);
        drop(first);
        let third = queue.enter().expect("the first's place is free again");
        assert!(queue.enter().is_none());
        drop((second, third));
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn no_limit_admits_every_request() {
        let queue = StoreQueue::new(0);
        let slots: Vec<QueueSlot> = (0..10_000).map(|_| queue.enter().expect("no limit")).collect();
        assert_eq!(queue.waiting(), 10_000);
        drop(slots);
        assert_eq!(queue.waiting(), 0);
    }

    /// What a handler does with its place: holds it across the store's
    /// answer, whatever that answer is.
    async fn handle(queue: &StoreQueue, store: impl Future<Output = Result<(), ()>>) -> Result<(), &'static str> {
        let _slot = queue.enter().ok_or("queue_full")?;
        store.await.map_err(|()| "store error")
    }

    #[tokio::test]
    async fn the_place_comes_back_after_success_and_after_an_error() {
        let queue = StoreQueue::new(1);
        assert_eq!(handle(&queue, async { Ok(()) }).await, Ok(()));
        assert_eq!(queue.waiting(), 0);
        assert_eq!(handle(&queue, async { Err(()) }).await, Err("store error"));
        assert_eq!(queue.waiting(), 0);
        assert_eq!(handle(&queue, async { Ok(()) }).await, Ok(()), "the place is free for the next request");
    }

    /// A client that disconnects makes hyper drop the handler's future
    /// while it waits for the store: its place must come back then.
    #[tokio::test(start_paused = true)]
    async fn the_place_comes_back_when_the_waiting_request_is_dropped() {
        let queue = Arc::new(StoreQueue::new(1));
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move {
                handle(&queue, async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(queue.waiting(), 1, "the request waits in the queue");
        assert_eq!(handle(&queue, async { Ok(()) }).await, Err("queue_full"));
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(queue.waiting(), 0);
        assert_eq!(handle(&queue, async { Ok(()) }).await, Ok(()));
    }
}
