//! The order in which a request tries deployments: each pool of the fallback chain
//! orders its own deployments by its strategy; ejected deployments go last, tried only
//! when every healthy one failed. Pure: health and randomness come in as arguments.

use super::health::HealthView;
use crate::route::{DeploymentId, PoolId, RouteTable, Strategy};

/// What ordering knows of a deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub health: HealthView,
    /// Input plus output price per million tokens, in micro-dollars.
    pub price: u64,
}

/// The deployments of `pool` and its fallbacks in the order to try them.
pub fn order(
    routes: &RouteTable,
    pool: PoolId,
    candidate: &dyn Fn(DeploymentId) -> Candidate,
    random: &mut dyn FnMut() -> f64,
) -> Vec<DeploymentId> {
    let mut out: Vec<DeploymentId> = Vec::with_capacity(4);
    let chain = routes
        .pool(pool)
        .map(|p| p.chain.as_slice())
        .unwrap_or_default();
    for p in chain.iter().filter_map(|i| routes.pool(*i)) {
        let start = out.len();
        for d in &p.deployments {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        let own = &mut out[start..];
        match p.strategy {
            Strategy::Priority => {}
            Strategy::Cheapest => own.sort_by_key(|d| candidate(*d).price),
            Strategy::LeastLatency => own.sort_by(|a, b| {
                // Unmeasured deployments first, so every one gets a sample.
                let key = |d: DeploymentId| candidate(d).health.latency_us.unwrap_or(0.0);
                key(*a).total_cmp(&key(*b))
            }),
            Strategy::Weighted => {
                // Efraimidis-Spirakis: sorting by u^(1/w) draws by weight without
                // replacement, so the first pick is weighted and the rest follow.
                let weight = |d: DeploymentId| {
                    p.deployments
                        .iter()
                        .position(|x| *x == d)
                        .and_then(|i| p.weights.get(i))
                        .map_or(1.0, |w| f64::from(*w))
                };
                let mut keyed: Vec<(f64, DeploymentId)> = own
                    .iter()
                    .map(|d| (random().powf(1.0 / weight(*d)), *d))
                    .collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (slot, (_, d)) in own.iter_mut().zip(keyed) {
                    *slot = d;
                }
            }
        }
    }
    // Stable: healthy deployments keep their order, ejected ones move to the end.
    out.sort_by_key(|d| candidate(*d).health.ejected);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Pool;

    fn pool(id: &str, deployments: Vec<usize>, strategy: Strategy, weights: Vec<u32>) -> Pool {
        let deployments: Vec<DeploymentId> = deployments.into_iter().map(DeploymentId).collect();
        Pool {
            id: id.into(),
            api: crate::route::Api::Chat,
            candidates: deployments.clone(),
            deployments,
            fallback: None,
            strategy,
            weights,
            chain: Vec::new(),
        }
    }

    /// [`order`] over these pools, by index.
    fn order(
        pools: &[Pool],
        pool: usize,
        candidate: &dyn Fn(usize) -> Candidate,
        random: &mut dyn FnMut() -> f64,
    ) -> Vec<usize> {
        let routes = RouteTable {
            rules: Vec::new(),
            pools: pools.to_vec(),
            aliases: Vec::new(),
        };
        super::order(&routes, PoolId(pool), &|d| candidate(d.0), random)
            .into_iter()
            .map(|d| d.0)
            .collect()
    }

    fn healthy(latency: Option<f64>, price: u64) -> Candidate {
        Candidate {
            health: HealthView {
                ejected: false,
                latency_us: latency,
            },
            price,
        }
    }

    fn chained(mut pools: Vec<Pool>) -> Vec<Pool> {
        for (i, p) in pools.iter_mut().enumerate() {
            p.chain = vec![PoolId(i)];
        }
        pools
    }

    #[test]
    fn priority_keeps_order_and_follows_the_fallback_chain() {
        let mut pools = chained(vec![
            pool("local", vec![0, 1], Strategy::Priority, vec![]),
            pool("frontier", vec![2, 0], Strategy::Priority, vec![]),
        ]);
        pools[0].chain = vec![PoolId(0), PoolId(1)];
        let order = order(&pools, 0, &|_| healthy(None, 0), &mut || 0.5);
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn ejected_deployments_go_last() {
        let pools = chained(vec![pool("p", vec![0, 1, 2], Strategy::Priority, vec![])]);
        let candidate = |d: usize| Candidate {
            health: HealthView {
                ejected: d == 0,
                latency_us: None,
            },
            price: 0,
        };
        assert_eq!(order(&pools, 0, &candidate, &mut || 0.5), vec![1, 2, 0]);
    }

    #[test]
    fn cheapest_and_least_latency_sort_their_pool() {
        let pools = chained(vec![
            pool("cheap", vec![0, 1, 2], Strategy::Cheapest, vec![]),
            pool("fast", vec![0, 1, 2], Strategy::LeastLatency, vec![]),
        ]);
        let prices = [30, 10, 20];
        let latencies = [Some(500.0), Some(900.0), None];
        let candidate = |d: usize| healthy(latencies[d], prices[d]);
        assert_eq!(order(&pools, 0, &candidate, &mut || 0.5), vec![1, 2, 0]);
        assert_eq!(order(&pools, 1, &candidate, &mut || 0.5), vec![2, 0, 1]);
    }

    #[test]
    fn weighted_picks_in_proportion_to_weight() {
        let pools = chained(vec![pool("w", vec![0, 1], Strategy::Weighted, vec![3, 1])]);
        let mut state: u64 = 7;
        let mut random = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut first = [0u32; 2];
        for _ in 0..10_000 {
            let o = order(&pools, 0, &|_| healthy(None, 0), &mut random);
            assert_eq!(o.len(), 2);
            first[o[0]] += 1;
        }
        let share = f64::from(first[0]) / 10_000.0;
        assert!(
            (share - 0.75).abs() < 0.03,
            "share of the weight-3 deployment: {share}"
        );
    }
}
