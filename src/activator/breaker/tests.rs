use std::time::Duration;

use super::*;

fn breaker(capacity: usize) -> Arc<Breaker> {
    let b = Arc::new(Breaker::new());
    b.set_capacity(capacity);
    b
}

#[tokio::test(start_paused = true)]
async fn breaker_admits_up_to_capacity_then_queues() {
    let b = breaker(2);
    let p1 = b.acquire(10).await.unwrap();
    let _p2 = b.acquire(10).await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire(10).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.waiting(), 1);
    assert!(!waiter.is_finished());
    drop(p1);
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn breaker_rejects_when_queue_is_full() {
    let b = breaker(0);
    let _w1 = tokio::spawn({
        let b = b.clone();
        async move { b.acquire(1).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.acquire(1).await.err(), Some(Refused::QueueFull));
}

#[tokio::test(start_paused = true)]
async fn closing_refuses_every_waiter_at_once_and_keeps_held_permits() {
    let b = breaker(1);
    let held = b.acquire(10).await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.acquire(10).await.map(|_| ()) })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(b.waiting(), 3);
    b.close();
    for w in waiters {
        assert_eq!(w.await.unwrap(), Err(Refused::Gone));
    }
    assert_eq!(b.acquire(10).await.err(), Some(Refused::Gone));
    // Returning a permit to a closed breaker is harmless.
    drop(held);
    assert_eq!(b.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn breaker_releases_waiters_in_arrival_order_when_capacity_appears() {
    let b = breaker(0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (b, tx) = (b.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let p = b.acquire(10).await.unwrap();
            tx.send(i).unwrap();
            // Hold briefly so that the order observed is the order admitted.
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(p);
        }));
        tokio::task::yield_now().await;
    }
    assert_eq!(b.waiting(), 5);
    b.set_capacity(1);
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(rx.recv().await.unwrap());
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_the_queue() {
    let b = breaker(0);
    let w = tokio::spawn({
        let b = b.clone();
        async move { b.acquire(1).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.waiting(), 1);
    w.abort();
    let _ = w.await;
    assert_eq!(b.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn shrinking_capacity_retires_permits_as_they_return() {
    let b = breaker(3);
    let p1 = b.acquire(10).await.unwrap();
    let p2 = b.acquire(10).await.unwrap();
    // One permit is free, two are held: shrinking to 1 forgets the free one and owes one.
    b.set_capacity(1);
    drop(p1);
    // The debt took p1's permit back: nothing is free while p2 is held.
    assert!(b.sem.try_acquire().is_err());
    drop(p2);
    let p3 = b.acquire(10).await.unwrap();
    assert!(b.sem.try_acquire().is_err());
    drop(p3);
    // Growing again cancels nothing owed and adds permits.
    b.set_capacity(4);
    let held: Vec<_> = [0; 4]
        .iter()
        .map(|_| b.sem.try_acquire().unwrap())
        .collect();
    assert_eq!(held.len(), 4);
    assert!(b.sem.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn growing_capacity_cancels_outstanding_debt_first() {
    let b = breaker(2);
    let p1 = b.acquire(10).await.unwrap();
    let p2 = b.acquire(10).await.unwrap();
    b.set_capacity(0);
    b.set_capacity(1);
    drop(p1);
    drop(p2);
    // Capacity 1: exactly one permit circulates.
    let _p = b.acquire(10).await.unwrap();
    assert!(b.sem.try_acquire().is_err());
}
