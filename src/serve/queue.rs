//! The bounded FIFO between the HTTP handlers and the engine thread.
//!
//! Handlers push without waiting: a full queue is answered with 429 at once, so memory stays
//! bounded however many clients connect. The engine thread pops only when it has rows to give
//! (the engine holds at most one request whose candidates are not all running), so the queue's
//! length is the number of requests waiting for admission, the autoscaling signal. A plain mutex
//! and condition variable: the engine thread is a blocking thread, the handlers never wait.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A push into a full queue; gives the item back.
#[derive(Debug)]
pub struct Full<T>(pub T);

/// See the module docs.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Condvar,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> BoundedQueue<T> {
        BoundedQueue {
            items: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A panic while holding this lock cannot leave the deque half-updated.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `item`, or gives it back when the queue is full. Returns the new length.
    pub fn try_push(&self, item: T) -> Result<usize, Full<T>> {
        let mut items = self.lock();
        if items.len() >= self.capacity {
            return Err(Full(item));
        }
        items.push_back(item);
        let len = items.len();
        drop(items);
        self.ready.notify_one();
        Ok(len)
    }

    /// The oldest item, if any.
    pub fn pop(&self) -> Option<T> {
        self.lock().pop_front()
    }

    /// The oldest item, if `take` accepts it (FIFO: a refused head blocks the rest).
    pub fn pop_if(&self, take: impl FnOnce(&T) -> bool) -> Option<T> {
        let mut items = self.lock();
        if take(items.front()?) {
            items.pop_front()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Everything queued, oldest first (shutdown).
    pub fn drain(&self) -> Vec<T> {
        self.lock().drain(..).collect()
    }

    /// Waits until an item is queued, [`BoundedQueue::wake`] is called, or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let items = self.lock();
        if items.is_empty() {
            let _ = self
                .ready
                .wait_timeout(items, timeout)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Wakes a [`BoundedQueue::wait`]er (shutdown, cancellation).
    pub fn wake(&self) {
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_within_capacity_then_full() {
        let q = BoundedQueue::new(2);
        assert_eq!(q.try_push(1).ok(), Some(1));
        assert_eq!(q.try_push(2).ok(), Some(2));
        assert!(matches!(q.try_push(3), Err(Full(3))));
        assert_eq!(q.pop_if(|&x| x == 2), None, "the head is 1");
        assert_eq!(q.pop_if(|&x| x == 1), Some(1));
        assert_eq!(q.try_push(4).ok(), Some(2));
        assert_eq!(q.drain(), vec![2, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn wait_returns_when_an_item_arrives() {
        let q = std::sync::Arc::new(BoundedQueue::new(1));
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.try_push(7).ok();
        });
        let started = std::time::Instant::now();
        while q.is_empty() && started.elapsed() < Duration::from_secs(5) {
            q.wait(Duration::from_secs(5));
        }
        assert_eq!(q.pop(), Some(7));
        t.join().unwrap();
    }
}
