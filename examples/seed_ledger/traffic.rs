//! Synthetic recorded traffic for the console's tests and benchmark: deterministic
//! records whose routing, prices and reference costs come from a real config, so
//! every field is one the gateway could have written.

use crossroads::accounting::{Usage, Usd};
use crossroads::config::Config;
use crossroads::ledger::LedgerRecord;
use crossroads::route::Action;

pub const TEAMS: [&str; 4] = ["search", "support", "ads", "research"];
const TASKS: [(&str, u64); 4] = [
    ("coding", 25),
    ("math", 10),
    ("creative_writing", 10),
    ("other", 55),
];

/// SplitMix64: a fixed stream of 64-bit values per seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of a team's production or development traffic.
pub fn key_of(team: &str, prod: bool) -> String {
    format!("{team}-{}", if prod { "prod" } else { "dev" })
}

/// Record `i` of `n`, spread evenly over `[start_ms, start_ms + span_ms)`, routed by
/// `config` the way the gateway would route its classification.
pub fn record(config: &Config, i: u64, n: u64, start_ms: i64, span_ms: i64) -> LedgerRecord {
    let mut state = mix(i);
    let mut next = |bound: u64| {
        state = mix(state);
        state % bound.max(1)
    };
    let labels = config.classifier.labels();
    let team = TEAMS[next(4) as usize];
    let prod = next(3) > 0;
    let label = labels.name(crossroads::classify::Label(
        next(labels.names().count() as u64) as u16,
    ));
    let task = {
        let mut pick = next(100);
        TASKS
            .iter()
            .find(|(_, weight)| {
                let hit = pick < *weight;
                pick = pick.saturating_sub(*weight);
                hit
            })
            .map_or("other", |(name, _)| *name)
    };
    let input = 100 + next(3900);
    let output = 20 + next(780);
    let stream = next(10) < 4;
    let cache_hit = next(100) < 8;
    let failed = next(200) == 0;
    let offset = i128::from(span_ms) * i128::from(i) / i128::from(n.max(1));
    let mut r = LedgerRecord {
        request_id: format!("req_seed{i:020}"),
        ts_ms: start_ms + offset as i64,
        key_id: Some(key_of(team, prod)),
        team: Some(team.into()),
        endpoint: "chat.completions".into(),
        requested_model: "auto".into(),
        label: Some(label.into()),
        task: Some(task.into()),
        confidence: Some(0.3 + next(70) as f32 / 100.0),
        difficulty: Some(next(1000) as f32 / 1000.0),
        pii_kinds: if next(100) < 3 {
            "email".into()
        } else {
            String::new()
        },
        prompt_tokens_est: Some(input),
        tools: Some(next(10) == 0),
        images: Some(0),
        json_mode: Some(next(12) == 0),
        cache_hit,
        stream,
        status: if failed { 502 } else { 200 },
        attempts: 1,
        usage: Usage {
            input,
            output,
            ..Usage::default()
        },
        latency_us: 0,
        ..LedgerRecord::default()
    };
    // Route it as the gateway would, from the recorded classification.
    if let Some(explanation) = crossroads::replay::explain(config, &r) {
        let routes = &config.routes;
        r.rule = Some(routes.via_id(explanation.decision.via).to_owned());
        if let Action::Pool(p) = explanation.decision.action
            && let Some(pool) = routes.pool(p)
        {
            r.pool = Some(pool.id.clone());
            let d = pool.deployments.first().and_then(|d| config.deployment(*d));
            if let (Some(d), false) = (d, cache_hit) {
                r.deployment = Some(d.id.clone());
                r.provider = Some(d.provider.as_str().into());
                r.upstream_model = Some(d.model.clone());
                r.tier = Some(d.tier.as_str().into());
                // Some requests fell back from a first deployment that timed out.
                if next(50) == 0 {
                    r.fallbacks = format!("{}:timeout", d.id);
                    r.attempts = 2;
                }
                let local = d.tier.as_str() == "local";
                let per_token_us = if local { 9_000 } else { 14_000 };
                let first_us = if local { 90_000 } else { 350_000 } + next(300_000);
                r.latency_us = first_us + output * per_token_us + next(200_000);
                r.ttft_us = stream.then_some(first_us);
                r.upstream_us = Some(r.latency_us.saturating_sub(300));
                if !failed {
                    r.cost = d.price.cost(&r.usage);
                }
            }
        }
    }
    if failed {
        r.error_kind = Some("upstream_error".into());
        r.usage = Usage::default();
    } else {
        r.reference_cost = config.reference.price.cost(&r.usage);
    }
    if cache_hit {
        r.latency_us = 300 + next(500);
        r.cost = Usd::ZERO;
    }
    r
}
