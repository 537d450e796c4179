//! The console's figures, from what the ledger reader returns: the overview (totals,
//! routing mix, days), latency percentiles from the rollup histograms, and each
//! budget's burn and projected exhaustion. Pure: [`crate::handler::console`] reads the
//! ledger and serves them with the page.

use serde::Serialize;

use crate::accounting::Usd;
use crate::ledger::query::{Group, day_string};
use crate::ledger::rollup::{DAY_MS, Sums, bucket_width};

/// The page, with its styles and scripts: one file, no other asset.
pub const PAGE: &str = include_str!("index.html");

/// Money as the API writes it: an exact decimal string.
fn dollars<S: serde::Serializer>(usd: &Usd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&usd.to_string())
}

/// Totals of a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub cache_hits: i64,
    pub fallbacks: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[serde(rename = "cost_usd", serialize_with = "dollars")]
    pub cost: Usd,
    #[serde(rename = "reference_cost_usd", serialize_with = "dollars")]
    pub reference: Usd,
    #[serde(rename = "savings_usd", serialize_with = "dollars")]
    pub savings: Usd,
}

impl From<&Sums> for Totals {
    fn from(s: &Sums) -> Self {
        let cost = Usd::from_pico(s.cost_pusd);
        let reference = Usd::from_pico(s.reference_cost_pusd);
        Totals {
            requests: s.requests,
            errors: s.errors,
            cache_hits: s.cache_hits,
            fallbacks: s.fallbacks,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cost,
            reference,
            savings: reference - cost,
        }
    }
}

/// Where requests went: a deployment's tier, the cache, or nowhere (refused or failed
/// before routing).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    pub destination: &'static str,
    pub requests: i64,
    #[serde(rename = "cost_usd", serialize_with = "dollars")]
    pub cost: Usd,
}

/// One day of the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub day: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub local: i64,
    pub frontier: i64,
    pub cache: i64,
    pub unrouted: i64,
}

/// The overview of a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub totals: Totals,
    pub mix: Vec<Mix>,
    pub series: Vec<Day>,
}

const DESTINATIONS: [&str; 4] = ["local", "frontier", "cache", "unrouted"];

/// Requests of a tier group by destination: cache hits apart from the tier they carry.
fn destination_counts(tier: Option<&str>, s: &Sums) -> [(usize, i64, i64); 2] {
    let routed = match tier {
        Some("local") => 0,
        Some("frontier") => 1,
        _ => 3,
    };
    [
        (routed, s.requests - s.cache_hits, s.cost_pusd),
        // A cache hit costs nothing.
        (2, s.cache_hits, 0),
    ]
}

/// The overview of `by_tier`: the ledger's sums by day and tier. Every day in `[from,
/// to)` appears, with zeros when nothing was recorded.
pub fn overview(by_tier: &[Group], from_day: i64, to_day: i64) -> Overview {
    let mut all = Sums::default();
    let mut mix = [(0i64, 0i64); 4];
    let days = usize::try_from((to_day - from_day).clamp(0, 3660)).unwrap_or(0);
    let mut series: Vec<(Sums, [i64; 4])> = vec![(Sums::default(), [0; 4]); days];
    for g in by_tier {
        all.add(&g.sums);
        let slot = g
            .day
            .and_then(|d| usize::try_from(d - from_day).ok())
            .and_then(|i| series.get_mut(i));
        let counts = destination_counts(g.group.as_deref(), &g.sums);
        if let Some((sums, per_destination)) = slot {
            sums.add(&g.sums);
            for (d, n, _) in counts {
                per_destination[d] += n;
            }
        }
        for (d, n, cost) in counts {
            mix[d].0 += n;
            mix[d].1 += cost;
        }
    }
    Overview {
        totals: Totals::from(&all),
        mix: DESTINATIONS
            .iter()
            .zip(mix)
            .map(|(destination, (requests, cost))| Mix {
                destination,
                requests,
                cost: Usd::from_pico(cost),
            })
            .collect(),
        series: series
            .iter()
            .enumerate()
            .map(|(i, (sums, d))| Day {
                day: day_string(from_day + i as i64),
                totals: Totals::from(sums),
                local: d[0],
                frontier: d[1],
                cache: d[2],
                unrouted: d[3],
            })
            .collect(),
    }
}

/// Three percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Percentiles of a histogram of `(bucket, count)` in microseconds: the nearest rank,
/// read at the middle of its bucket (within 5% of the value). `None` when empty.
pub fn percentiles(histogram: &mut [(i64, i64)]) -> Option<Percentiles> {
    histogram.sort_unstable();
    let total: i64 = histogram.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return None;
    }
    let at = |q: f64| {
        // The smallest value with at least q of the counts at or below it.
        let rank = ((q * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (bucket, n) in histogram.iter() {
            seen += n;
            if seen >= rank {
                let middle = *bucket as f64 + bucket_width(*bucket) as f64 / 2.0;
                return middle / 1000.0;
            }
        }
        0.0
    };
    Some(Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    })
}

/// The day a budget runs out: the day its recorded spend crossed the limit, or, while
/// under it, the day the period's average rate so far reaches it. `None` when it will
/// not before the period ends (or nothing was spent). `daily` is `(day, spent)`.
pub fn exhaustion_day(
    limit: Usd,
    daily: &[(i64, Usd)],
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
) -> Option<i64> {
    let mut cumulative = Usd::ZERO;
    for (day, spent) in daily {
        cumulative += *spent;
        if cumulative >= limit {
            return Some(*day);
        }
    }
    if cumulative <= Usd::ZERO {
        return None;
    }
    // At least an hour of history, so the first minutes do not project wildly.
    let elapsed = i128::from((now_ms - start_ms).max(3_600_000));
    let remaining = i128::from((limit - cumulative).pico());
    let at = i128::from(now_ms) + remaining * elapsed / i128::from(cumulative.pico());
    let at = i64::try_from(at).ok()?;
    (at < end_ms).then(|| at.div_euclid(DAY_MS))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn group(day: i64, tier: Option<&str>, requests: i64, cache_hits: i64, cost: i64) -> Group {
        Group {
            day: Some(day),
            group: tier.map(str::to_owned),
            sums: Sums {
                requests,
                cache_hits,
                cost_pusd: cost,
                reference_cost_pusd: requests * 10,
                ..Sums::default()
            },
        }
    }

    #[test]
    fn the_overview_splits_cache_hits_from_their_tier_and_fills_every_day() {
        let groups = [
            group(100, Some("local"), 10, 2, 0),
            group(100, Some("frontier"), 5, 1, 50),
            group(102, None, 3, 0, 0),
        ];
        let o = overview(&groups, 100, 103);
        assert_eq!(o.totals.requests, 18);
        assert_eq!(o.totals.cost, Usd::from_pico(50));
        assert_eq!(o.totals.savings, Usd::from_pico(180 - 50));
        let mix: Vec<_> = o.mix.iter().map(|m| (m.destination, m.requests)).collect();
        assert_eq!(
            mix,
            vec![("local", 8), ("frontier", 4), ("cache", 3), ("unrouted", 3)]
        );
        assert_eq!(o.series.len(), 3);
        assert_eq!(
            (o.series[0].local, o.series[0].frontier, o.series[0].cache),
            (8, 4, 3)
        );
        assert_eq!(o.series[1].totals.requests, 0);
        assert_eq!(o.series[2].unrouted, 3);
        assert_eq!(o.series[2].day, day_string(102));
    }

    #[test]
    fn percentiles_take_the_nearest_rank_at_the_bucket_middle() {
        // 90 answers in the 1,000 µs bucket (width 100), 10 in the 20,000 µs one.
        let mut h = vec![(20_000, 10), (1_000, 90)];
        let p = percentiles(&mut h).expect("counts");
        assert_eq!(p.p50, 1.05);
        assert_eq!(p.p90, 1.05);
        assert_eq!(p.p99, 20.5);
        assert_eq!(percentiles(&mut []), None);
    }

    #[test]
    fn exhaustion_is_the_crossing_day_or_the_average_rate_projected() {
        let usd = |d: i64| Usd::from_pico(d * 1_000_000_000_000);
        let start = 10 * DAY_MS;
        let end = 40 * DAY_MS;
        // $10 a day for 5 days of a $100 budget: $50 left at $10 a day, 5 more days.
        let daily: Vec<_> = (10..15).map(|d| (d, usd(10))).collect();
        assert_eq!(
            exhaustion_day(usd(100), &daily, start, end, 15 * DAY_MS),
            Some(20)
        );
        // The same rate against $1,000 runs past the period's end.
        assert_eq!(
            exhaustion_day(usd(1000), &daily, start, end, 15 * DAY_MS),
            None
        );
        // Already over on its third day.
        assert_eq!(
            exhaustion_day(usd(25), &daily, start, end, 15 * DAY_MS),
            Some(12)
        );
        assert_eq!(exhaustion_day(usd(25), &[], start, end, 15 * DAY_MS), None);
    }
}
