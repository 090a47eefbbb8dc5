//! Knative's `TestStats` (concurrency_reporter_test.go), on a paused clock.

use super::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    In(&'static str),
    Out(&'static str),
    Tick,
}

/// Runs `ops` at the given millisecond offsets; returns every stat sent, pokes included,
/// as (revision, average concurrency, request count).
fn run(ops: &[(u64, Op)]) -> Vec<(&'static str, f64, f64)> {
    let t0 = Instant::now();
    let tracker = Tracker::default();
    let mut guards: HashMap<&'static str, Vec<RequestGuardAt>> = HashMap::new();
    let mut sent = Vec::new();
    for (at, op) in ops {
        let now = t0 + Duration::from_millis(*at);
        match *op {
            Op::In(rev) => {
                let (state, first) = tracker.arrive(&RevisionKey::new("ns", rev), now);
                if first {
                    sent.push((rev, 1.0, 1.0));
                }
                guards.entry(rev).or_default().push(RequestGuardAt(state));
            }
            Op::Out(rev) => {
                let g = guards
                    .get_mut(rev)
                    .and_then(Vec::pop)
                    .expect("a request to end");
                g.0.depart(now);
            }
            Op::Tick => {
                for s in tracker.report(now) {
                    let rev: &'static str = Box::leak(s.key.name().to_owned().into_boxed_str());
                    sent.push((rev, s.average_concurrent_requests, s.request_count));
                }
            }
        }
    }
    sent
}

/// A guard whose departure time the test chooses.
struct RequestGuardAt(Arc<RevisionState>);

#[tokio::test(start_paused = true)]
async fn scale_from_zero_sends_a_poke_at_once() {
    assert_eq!(run(&[(0, Op::In("rev1"))]), vec![("rev1", 1.0, 1.0)]);
}

#[tokio::test(start_paused = true)]
async fn in_and_out_reports_the_poke_subtracted() {
    let got = run(&[(0, Op::In("rev1")), (0, Op::Out("rev1")), (1000, Op::Tick)]);
    assert_eq!(got, vec![("rev1", 1.0, 1.0), ("rev1", 0.0, 0.0)]);
}

#[tokio::test(start_paused = true)]
async fn scale_to_two() {
    let got = run(&[
        (0, Op::In("rev1")),
        (0, Op::In("rev1")),
        (1000, Op::Tick),
        (2000, Op::Tick),
    ]);
    assert_eq!(
        got,
        vec![("rev1", 1.0, 1.0), ("rev1", 1.0, 1.0), ("rev1", 2.0, 0.0)]
    );
}

#[tokio::test(start_paused = true)]
async fn interleaved_requests_are_time_weighted() {
    let got = run(&[
        (0, Op::In("rev1")),
        (1000, Op::Out("rev1")),
        (1000, Op::In("rev1")),
        (2000, Op::Out("rev1")),
        (2000, Op::Tick),
    ]);
    assert_eq!(got, vec![("rev1", 1.0, 1.0), ("rev1", 0.0, 1.0)]);
}

#[tokio::test(start_paused = true)]
async fn half_a_second_of_one_request_averages_one_half() {
    let got = run(&[
        (0, Op::In("rev1")),
        (1000, Op::Tick),
        (1500, Op::Out("rev1")),
        (2000, Op::Tick),
    ]);
    assert_eq!(
        got,
        vec![("rev1", 1.0, 1.0), ("rev1", 0.0, 0.0), ("rev1", 0.5, 0.0)]
    );
}

#[tokio::test(start_paused = true)]
async fn multiple_revisions_are_reported_in_one_batch() {
    let got = run(&[
        (0, Op::In("rev1")),
        (0, Op::In("rev2")),
        (0, Op::In("rev2")),
        (1000, Op::Tick),
    ]);
    assert_eq!(
        got,
        vec![
            ("rev1", 1.0, 1.0),
            ("rev2", 1.0, 1.0),
            ("rev1", 0.0, 0.0),
            ("rev2", 1.0, 1.0),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn idle_revision_is_reported_once_then_forgotten_and_poked_again() {
    let got = run(&[
        (0, Op::In("rev1")),
        (0, Op::Out("rev1")),
        (1000, Op::Tick), // raw average 0: one zero report, then forgotten
        (2000, Op::Tick), // nothing
        (2500, Op::In("rev1")),
    ]);
    assert_eq!(
        got,
        vec![("rev1", 1.0, 1.0), ("rev1", 0.0, 0.0), ("rev1", 1.0, 1.0)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_revision_with_a_request_in_flight_is_never_forgotten() {
    // A request that started before the first tick keeps the average above zero.
    let got = run(&[
        (0, Op::In("rev1")),
        (1000, Op::Tick),
        (2000, Op::Tick),
        (2500, Op::In("rev1")),
    ]);
    assert_eq!(
        got,
        vec![("rev1", 1.0, 1.0), ("rev1", 0.0, 0.0), ("rev1", 1.0, 0.0)],
        "no second poke while the first request is in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn guard_drop_records_the_departure() {
    let client_exit = CancellationToken::new();
    let client = crate::autoscaler_client::AutoscalerClient::spawn(
        crate::autoscaler_client::ClientConfig {
            url: "ws://127.0.0.1:9".into(),
            encoding: crate::config::Encoding::Protobuf,
            pod_name: "p".into(),
            send_queue: 4,
        },
        client_exit.clone(),
    );
    let reporter = ConcurrencyReporter {
        tracker: Arc::new(Tracker::default()),
        client,
    };
    let key = RevisionKey::new("ns", "rev1");
    let guard = reporter.track(&key);
    tokio::time::advance(Duration::from_millis(500)).await;
    drop(guard);
    tokio::time::advance(Duration::from_millis(500)).await;
    let stats = reporter.tracker.report(Instant::now());
    // 0.5 s of one request over 1 s, minus the poke, clamps at zero; the count nets to zero.
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].request_count, 0.0);
    let again = reporter
        .tracker
        .report(Instant::now() + Duration::from_secs(1));
    assert_eq!(again[0].average_concurrent_requests, 0.0);
    assert!(
        reporter.tracker.map.load().is_empty(),
        "idle revision forgotten"
    );
    client_exit.cancel();
}
