//! Per-revision breaker: a FIFO semaphore for capacity plus a bounded count of waiters.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Semaphore;

/// Capacity meaning "no limit" (container concurrency 0 with at least one endpoint).
pub(crate) const UNLIMITED: usize = 1 << 30;

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue already holds `queue_depth` waiters.
    #[error("pending request queue full")]
    QueueFull,
    /// The revision was removed (deleted in the API, dropped from the config): nothing will
    /// ever be admitted again.
    #[error("revision deleted")]
    Gone,
}

/// Revision-wide admission: at most `capacity` permits out, at most `queue_depth` waiting.
///
/// Waiters are served in arrival order (tokio's semaphore is fair) and woken by
/// [`Breaker::set_capacity`] itself, never by polling.
#[derive(Debug)]
pub(crate) struct Breaker {
    sem: Semaphore,
    /// Written only by the throttler's writer task.
    capacity: AtomicUsize,
    /// Permits to retire as they are released: capacity shrank below what is held.
    debt: AtomicUsize,
    waiting: AtomicUsize,
}

/// One unit of capacity; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Breaker>,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Self {
            sem: Semaphore::new(0),
            capacity: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Takes a permit, waiting in line if there is no capacity. Fails at once when
    /// `queue_depth` requests are already waiting, and at once for every waiter when the breaker
    /// is closed. Cancel-safe: dropping the future leaves the queue.
    pub(crate) async fn acquire(self: &Arc<Self>, queue_depth: usize) -> Result<Permit, Refused> {
        if let Ok(p) = self.sem.try_acquire() {
            p.forget();
            return Ok(self.permit());
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= queue_depth {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        match self.sem.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(Refused::Gone),
        }
        Ok(self.permit())
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            breaker: self.clone(),
        }
    }

    /// Requests waiting for capacity now (the queue depth a new request's trace records).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The capacity set last ([`UNLIMITED`] for no limit).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }

    /// Ends the revision: every waiter, now and later, is refused with [`Refused::Gone`].
    /// Permits already held stay valid until dropped.
    pub(crate) fn close(&self) {
        self.sem.close();
    }

    /// Sets the capacity. Raising it wakes waiters at once, oldest first; lowering it never
    /// cancels held permits, it retires them as they come back. Single writer only.
    pub(crate) fn set_capacity(&self, new: usize) {
        let old = self.capacity.swap(new, Ordering::AcqRel);
        if new > old {
            let mut add = new - old;
            // Cancel retirement debt before handing out new permits.
            let _ = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    let take = d.min(add);
                    Some(d - take)
                })
                .map(|d| add -= d.min(add));
            if add > 0 {
                self.sem.add_permits(add);
            }
        } else if old > new {
            let delta = old - new;
            let forgotten = self.sem.forget_permits(delta);
            if delta > forgotten {
                self.debt.fetch_add(delta - forgotten, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let b = &self.breaker;
        let paid = b
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if !paid {
            b.sem.add_permits(1);
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
