use std::time::Duration;

use tokio::time::{Instant, advance};

use super::{Coalescer, Decision};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn first_call_sends_and_calls_within_the_interval_coalesce() {
    let c = Coalescer::new(16);
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Send);
    for _ in 0..10_000 {
        assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Coalesced);
    }
    advance(Duration::from_millis(999)).await;
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Coalesced);
    advance(Duration::from_millis(1)).await;
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Send);
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Coalesced);
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent() {
    let c = Coalescer::new(16);
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Send);
    assert_eq!(c.offer(&"b", Instant::now(), SEC), Decision::Send);
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Coalesced);
    assert_eq!(c.offer(&"b", Instant::now(), SEC), Decision::Coalesced);
}

#[tokio::test(start_paused = true)]
async fn steady_load_sends_one_poke_per_interval() {
    let c = Coalescer::new(16);
    let mut sent = 0;
    // 10,000 calls/s for 10 s, one every 100 µs.
    for _ in 0..100_000 {
        if c.offer(&"hot", Instant::now(), SEC) == Decision::Send {
            sent += 1;
        }
        advance(Duration::from_micros(100)).await;
    }
    assert_eq!(sent, 10);
}

#[tokio::test(start_paused = true)]
async fn full_table_overflows_until_keys_expire_then_evicts_them() {
    let c = Coalescer::new(100);
    for i in 0..100 {
        assert_eq!(c.offer(&i, Instant::now(), SEC), Decision::Send);
    }
    assert_eq!(c.offer(&1000, Instant::now(), SEC), Decision::Overflow);
    // Known keys are still coalesced, not overflowed.
    assert_eq!(c.offer(&5, Instant::now(), SEC), Decision::Coalesced);
    assert_eq!(c.len(), 100);
    advance(SEC).await;
    assert_eq!(c.offer(&1000, Instant::now(), SEC), Decision::Send);
    assert_eq!(c.len(), 1, "idle keys were evicted by the sweep");
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_under_a_stream_of_distinct_keys() {
    let c = Coalescer::new(1_000);
    for i in 0..50_000u32 {
        c.offer(&i, Instant::now(), SEC);
        // 20 new keys per 10 ms: 2,000 keys per interval, twice the cap.
        if i % 20 == 0 {
            advance(Duration::from_millis(10)).await;
        }
        assert!(c.len() <= 1_000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_shorter_interval_from_a_config_reload_applies_at_once() {
    let c = Coalescer::new(16);
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Send);
    advance(Duration::from_millis(200)).await;
    assert_eq!(c.offer(&"a", Instant::now(), SEC), Decision::Coalesced);
    assert_eq!(
        c.offer(&"a", Instant::now(), Duration::from_millis(100)),
        Decision::Send
    );
}
