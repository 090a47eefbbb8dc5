use super::*;

fn trackers(n: u16) -> Vec<Arc<Tracker>> {
    (1..=n)
        .map(|i| Arc::new(Tracker::new(SocketAddr::from(([10, 0, 0, i as u8], 8012)))))
        .collect()
}

fn ip(g: &InFlight) -> u8 {
    match g.tracker().addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(_) => 0,
    }
}

// Knative TestFirstAvailable.
#[test]
fn first_available_fills_the_lowest_endpoint_first() {
    let t = trackers(3);
    let p = FirstAvailable;
    assert!(p.pick(&[], 1, &[]).is_none());
    let a = p.pick(&t, 1, &[]).unwrap();
    assert_eq!(ip(&a), 1);
    let b = p.pick(&t, 1, &[]).unwrap();
    assert_eq!(ip(&b), 2);
    let c = p.pick(&t, 1, &[]).unwrap();
    assert_eq!(ip(&c), 3);
    assert!(p.pick(&t, 1, &[]).is_none(), "every endpoint is full");
    drop(b);
    assert_eq!(ip(&p.pick(&t, 1, &[]).unwrap()), 2);
}

// Knative TestRoundRobin.
#[test]
fn round_robin_cycles_and_skips_full_endpoints() {
    let t = trackers(3);
    let p = RoundRobin::default();
    let a = p.pick(&t, 1, &[]).unwrap();
    let b = p.pick(&t, 1, &[]).unwrap();
    assert_eq!((ip(&a), ip(&b)), (1, 2));
    drop(a);
    let c = p.pick(&t, 1, &[]).unwrap();
    assert_eq!(ip(&c), 3);
    // Wraps around to 1 (free again), skipping nothing.
    let d = p.pick(&t, 1, &[]).unwrap();
    assert_eq!(ip(&d), 1);
    assert!(p.pick(&t, 1, &[]).is_none());
    drop(b);
    assert_eq!(ip(&p.pick(&t, 1, &[]).unwrap()), 2);
}

#[test]
fn round_robin_with_room_spreads_evenly() {
    let t = trackers(4);
    let p = RoundRobin::default();
    let mut counts = [0; 5];
    for _ in 0..40 {
        counts[ip(&p.pick(&t, 10, &[]).unwrap()) as usize] += 1;
    }
    assert_eq!(&counts[1..], &[10, 10, 10, 10]);
}

// Knative TestRandomChoice2.
#[test]
fn p2c_picks_the_only_endpoint_and_the_less_loaded_of_two() {
    let p = PowerOfTwoChoices;
    let one = trackers(1);
    assert_eq!(ip(&p.pick(&one, 0, &[]).unwrap()), 1);
    let two = trackers(2);
    let held: Vec<_> = (0..3).map(|_| two[0].reserve(0).unwrap()).collect();
    for _ in 0..20 {
        // With two endpoints both are compared; the idle one always wins.
        let g = p.pick(&two, 0, &[]).unwrap();
        assert_eq!(ip(&g), 2);
    }
    drop(held);
}

// Knative TestRandomChoice_TwoTrackersDistribution.
#[test]
fn p2c_splits_sequential_load_between_two_equal_endpoints() {
    let p = PowerOfTwoChoices;
    let two = trackers(2);
    let mut first = 0;
    for _ in 0..1000 {
        let g = p.pick(&two, 0, &[]).unwrap();
        if ip(&g) == 1 {
            first += 1;
        }
    }
    // Ties are a coin flip; 1000 flips land within 400..600 except with negligible odds.
    assert!((400..=600).contains(&first), "{first}");
}

#[test]
fn p2c_keeps_in_flight_balanced_among_many() {
    let p = PowerOfTwoChoices;
    let t = trackers(5);
    let held: Vec<_> = (0..100).map(|_| p.pick(&t, 0, &[]).unwrap()).collect();
    let loads: Vec<usize> = t.iter().map(|t| t.in_flight()).collect();
    assert_eq!(loads.iter().sum::<usize>(), 100);
    // p2c keeps the spread tight; random choice would commonly exceed this.
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(max - min <= 6, "{loads:?}");
    drop(held);
    assert!(t.iter().all(|t| t.in_flight() == 0));
}

#[test]
fn avoided_endpoints_are_skipped_unless_nothing_else_is_left() {
    let t = trackers(2);
    let avoid = [t[0].addr];
    for policy in [
        &FirstAvailable as &dyn Policy,
        &RoundRobin::default(),
        &PowerOfTwoChoices,
    ] {
        assert_eq!(ip(&policy.pick(&t, 0, &avoid).unwrap()), 2);
        assert_eq!(ip(&policy.pick(&t[..1], 0, &avoid).unwrap()), 1);
    }
}

#[test]
fn balancer_chooses_the_policy_by_container_concurrency() {
    let b = Balancer::default();
    let t = trackers(3);
    // CC 2: first available fills .1 twice before .2.
    let held: Vec<_> = (0..3)
        .map(|_| b.policy(2).pick(&t, 2, &[]).unwrap())
        .collect();
    assert_eq!(held.iter().map(ip).collect::<Vec<_>>(), vec![1, 1, 2]);
    // CC 0: p2c, no per-endpoint limit.
    let held: Vec<_> = (0..9)
        .map(|_| b.policy(0).pick(&t, 0, &[]).unwrap())
        .collect();
    assert_eq!(held.len(), 9);
}
