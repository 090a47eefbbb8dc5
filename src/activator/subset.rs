//! Activator subsetting: which of a revision's pods this activator sends to, as Knative slices them.
//!
//! With N activators in a revision's path (its public Endpoints), each takes a disjoint slice of
//! the pods, so that the pods together never see more than containerConcurrency per pod. The
//! rules are Knative's (`pkg/activator/net/throttler.go`, ≥ v1.11): pods sorted by their
//! `ip:port` *string*; `count / n` pods each from the front; the `count % n` pods at the tail go
//! one each to the lowest indices; with fewer pods than activators, activator `i` shares pod
//! `i % pods` with others. Slicing applies only when containerConcurrency is set.

use crate::revisions::Subset;

/// The indices (into `sorted`, sorted as [`sort_like_knative`] does) of the pods this activator
/// uses.
pub(crate) fn assign(
    pods: usize,
    subset: Option<Subset>,
    container_concurrency: u32,
) -> Vec<usize> {
    let all = || (0..pods).collect();
    let Some(Subset { index, count }) = subset else {
        return all();
    };
    if container_concurrency == 0 || pods <= 1 || count <= 1 || index >= count {
        return all();
    }
    if count > pods {
        return vec![index % pods];
    }
    let size = pods / count;
    let mut mine: Vec<usize> = (index * size..index * size + size).collect();
    let remnants = pods % count;
    if index < remnants {
        mine.push(pods - remnants + index);
    }
    mine
}

/// Sorts `items` by the `ip:port` text of `addr`, Knative's order, so that activators agree on
/// the slices whatever order their pods arrived in.
pub(crate) fn sort_like_knative<T>(items: &mut [T], addr: impl Fn(&T) -> std::net::SocketAddr) {
    items.sort_by_cached_key(|t| addr(t).to_string());
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn at(index: usize, count: usize) -> Option<Subset> {
        Some(Subset { index, count })
    }

    #[test]
    fn knative_worked_cases() {
        // 6 pods, 4 activators: slices of 1, remnants 2 for indices 0 and 1.
        assert_eq!(assign(6, at(0, 4), 42), [0, 4]);
        assert_eq!(assign(6, at(1, 4), 42), [1, 5]);
        assert_eq!(assign(6, at(2, 4), 42), [2]);
        assert_eq!(assign(6, at(3, 4), 42), [3]);
        // 3 pods, 5 activators: round robin, pods shared.
        assert_eq!(assign(3, at(0, 5), 10), [0]);
        assert_eq!(assign(3, at(3, 5), 10), [0]);
        assert_eq!(assign(3, at(4, 5), 10), [1]);
        // 4 pods, 2 activators: two each.
        assert_eq!(assign(4, at(0, 2), 1), [0, 1]);
        assert_eq!(assign(4, at(1, 2), 1), [2, 3]);
        // 20 pods, 3 activators: 6 each, remnants 18 and 19 to indices 0 and 1.
        assert_eq!(assign(20, at(0, 3), 1).len(), 7);
        assert_eq!(assign(20, at(1, 3), 1), [6, 7, 8, 9, 10, 11, 19]);
        assert_eq!(assign(20, at(2, 3), 1), [12, 13, 14, 15, 16, 17]);
    }

    #[test]
    fn every_pod_is_used_exactly_once_when_pods_outnumber_activators() {
        for pods in 1..40 {
            for count in 1..=pods {
                let mut seen = vec![0; pods];
                for index in 0..count {
                    for p in assign(pods, at(index, count), 1) {
                        seen[p] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{pods} pods, {count} activators"
                );
            }
        }
    }

    #[test]
    fn unknown_index_one_activator_one_pod_or_unlimited_concurrency_take_everything() {
        assert_eq!(assign(3, None, 1), [0, 1, 2]);
        assert_eq!(assign(3, at(0, 1), 1), [0, 1, 2]);
        assert_eq!(assign(1, at(1, 2), 1), [0]);
        assert_eq!(assign(4, at(1, 2), 0), [0, 1, 2, 3]);
        assert_eq!(assign(0, at(1, 2), 1), Vec::<usize>::new());
        // An index that does not fit the count (never published by Knative) uses everything.
        assert_eq!(assign(4, at(2, 2), 1), [0, 1, 2, 3]);
    }

    #[test]
    fn order_is_the_address_text() {
        let mut addrs: Vec<SocketAddr> = ["10.0.0.2:8012", "10.0.0.10:8012", "10.0.0.1:8013"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        sort_like_knative(&mut addrs, |a| *a);
        let text: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        // Byte order: '0' sorts before ':', so 10.0.0.10 comes before 10.0.0.1.
        assert_eq!(text, ["10.0.0.10:8012", "10.0.0.1:8013", "10.0.0.2:8012"]);
    }
}
