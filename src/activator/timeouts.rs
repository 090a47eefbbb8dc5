//! A request's three revision timeouts as one clock that both HTTP paths consult.
//!
//! Knative's activator wraps its whole handler in one timeout handler
//! (`pkg/http/handler/timeout.go`), so every timer starts at arrival and queueing counts:
//!
//! - `timeout` (`timeoutSeconds`): the whole request; a body still streaming then is cut;
//! - `response_start_timeout` (`responseStartTimeoutSeconds`): no response head by then;
//! - `idle_timeout` (`idleTimeoutSeconds`): nothing written to the client for that long,
//!   counted from arrival until the first write, then from each write.
//!
//! Each is a 504 while no response head has gone out; later, the stream is cut. A write is
//! the final response head or a piece of body handed to the client connection. Interim 1xx
//! responses are not writes here (Knative's Go proxy counts one it relays): hyper's path never
//! sees them, and both paths must decide alike. Upgraded tunnels leave the clock once their
//! `101` is written, as Knative's hijacked connections leave its timeout writer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

use super::{error::Error, throttler::Route};

/// Longer than any request may run; caps configured durations so that adding one to an
/// instant cannot overflow (a panic on the request path).
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    Total,
    ResponseStart,
    Idle,
}

impl Expiry {
    /// The error the request ends with; all three answer the same 504.
    pub(crate) fn error(self) -> Error {
        match self {
            Self::Total => Error::RevisionTimeout,
            Self::ResponseStart => Error::ResponseStartTimeout,
            Self::Idle => Error::IdleTimeout,
        }
    }
}

/// The deadlines of one request, from its arrival. Cheap to copy; no timer of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    total: Instant,
    /// Until the response head is written; `None` when off or once it is.
    response_start: Option<Instant>,
    idle: Option<Duration>,
    /// The last write to the client; the arrival until the first.
    last_write: Instant,
}

impl Clock {
    /// The clock of a request for `route` that arrived at `start`.
    pub(crate) fn of(route: &Route, start: Instant) -> Self {
        Self::new(
            start,
            route.timeout,
            route.response_start_timeout,
            route.idle_timeout,
        )
    }

    /// A zero response-start or idle timeout is off, as in Knative (`> 0` turns one on),
    /// whatever fed the route.
    fn new(
        start: Instant,
        total: Duration,
        response_start: Option<Duration>,
        idle: Option<Duration>,
    ) -> Self {
        let on = |d: &Duration| !d.is_zero();
        Self {
            total: start + total.min(FAR),
            response_start: response_start.filter(on).map(|d| start + d.min(FAR)),
            idle: idle.filter(on).map(|d| d.min(FAR)),
            last_write: start,
        }
    }

    /// The next deadline and the timeout that runs out then. When two fall together, the
    /// total timeout wins, then the response start: the broader reason is the one logged.
    pub(crate) fn next(&self) -> (Instant, Expiry) {
        let mut next = (self.total, Expiry::Total);
        if let Some(at) = self.response_start
            && at < next.0
        {
            next = (at, Expiry::ResponseStart);
        }
        if let Some(idle) = self.idle {
            let at = self.last_write + idle;
            if at < next.0 {
                next = (at, Expiry::Idle);
            }
        }
        next
    }

    /// The response head is being written: the response-start timeout is met, and the
    /// head counts as a write.
    pub(crate) fn started(&mut self) {
        self.response_start = None;
        self.wrote();
    }

    /// Bytes are being handed to the client: the idle timeout starts over. Free when the
    /// idle timeout is off.
    pub(crate) fn wrote(&mut self) {
        if self.idle.is_some() {
            self.last_write = Instant::now();
        }
    }
}

/// A timer for a [`Clock`] polled from a body (hyper's path), armed only once the body has
/// to wait: most bodies end on their first poll, and a timer costs a heap allocation and a
/// timer-wheel entry. Writes only ever move the next deadline later, so it is not re-armed
/// on each write: when it fires early, it is re-armed for the deadline now in force.
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    timer: Option<Pin<Box<Sleep>>>,
}

impl Alarm {
    /// Ready with the timeout that ran out, if the clock's next deadline has passed;
    /// otherwise registers `cx` for it.
    pub(crate) fn poll(&mut self, clock: &Clock, cx: &mut Context<'_>) -> Poll<Expiry> {
        let (at, _) = clock.next();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        while timer.as_mut().poll(cx).is_ready() {
            let (at, expiry) = clock.next();
            if at <= timer.deadline() {
                return Poll::Ready(expiry);
            }
            timer.as_mut().reset(at);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// A clock started now, with durations in milliseconds.
    fn clock(total: u64, response_start: Option<u64>, idle: Option<u64>) -> (Instant, Clock) {
        let start = Instant::now();
        let clock = Clock::new(
            start,
            Duration::from_millis(total),
            response_start.map(Duration::from_millis),
            idle.map(Duration::from_millis),
        );
        (start, clock)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn absent_settings_leave_only_the_total_timeout() {
        let (start, mut clock) = clock(1000, None, None);
        assert_eq!(clock.next(), (start + ms(1000), Expiry::Total));
        tokio::time::advance(ms(300)).await;
        clock.started();
        clock.wrote();
        assert_eq!(clock.next(), (start + ms(1000), Expiry::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_off() {
        let (start, clock) = clock(1000, Some(0), Some(0));
        assert_eq!(clock.next(), (start + ms(1000), Expiry::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_start_timeout_counts_from_arrival_until_the_head() {
        let (start, mut clock) = clock(1000, Some(200), None);
        assert_eq!(clock.next(), (start + ms(200), Expiry::ResponseStart));
        tokio::time::advance(ms(150)).await;
        clock.started();
        assert_eq!(clock.next(), (start + ms(1000), Expiry::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_arrival_then_from_each_write() {
        let (start, mut clock) = clock(1000, Some(500), Some(200));
        assert_eq!(clock.next(), (start + ms(200), Expiry::Idle));
        tokio::time::advance(ms(150)).await;
        clock.started();
        assert_eq!(clock.next(), (start + ms(350), Expiry::Idle));
        tokio::time::advance(ms(150)).await;
        clock.wrote();
        assert_eq!(clock.next(), (start + ms(500), Expiry::Idle));
        // Near the end, the total timeout comes first again.
        tokio::time::advance(ms(650)).await;
        clock.wrote();
        assert_eq!(clock.next(), (start + ms(1000), Expiry::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn ties_name_the_broader_timeout() {
        let (start, both) = clock(300, Some(300), Some(300));
        assert_eq!(both.next(), (start + ms(300), Expiry::Total));
        let (start, both) = clock(1000, Some(300), Some(300));
        assert_eq!(both.next(), (start + ms(300), Expiry::ResponseStart));
    }

    #[tokio::test(start_paused = true)]
    async fn huge_settings_do_not_overflow() {
        let start = Instant::now();
        let huge = Clock::new(
            start,
            Duration::MAX,
            Some(Duration::MAX),
            Some(Duration::MAX),
        );
        assert_eq!(huge.next(), (start + FAR, Expiry::Total));
    }

    #[tokio::test(start_paused = true)]
    async fn the_alarm_follows_writes_and_fires_once_idle() {
        let (_, mut clock) = clock(10_000, None, Some(200));
        clock.started();
        let mut alarm = Alarm::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(alarm.poll(&clock, &mut cx).is_pending());
        // A write every 150 ms keeps it quiet, though it was armed for the first deadline.
        for _ in 0..5 {
            tokio::time::advance(ms(150)).await;
            clock.wrote();
            assert!(alarm.poll(&clock, &mut cx).is_pending());
        }
        tokio::time::advance(ms(199)).await;
        assert!(alarm.poll(&clock, &mut cx).is_pending());
        tokio::time::advance(ms(1)).await;
        assert_eq!(alarm.poll(&clock, &mut cx), Poll::Ready(Expiry::Idle));
    }
}
