//! `crossroads calibrate`: the `min_difficulty` to write in a rule (requests scoring at
//! least it go to the frontier) for recorded traffic, from JSONL files or the ledger.
//! Two goals: a share of traffic for the frontier ([`threshold_for_share`]), or a
//! quality the locally answered requests must keep, judged by the feedback callers gave
//! through `POST /v1/feedback` ([`threshold_for_quality`]).

use std::collections::HashMap;
use std::path::PathBuf;

use super::classifier::{Failed, load_model};
use super::ledger::{LedgerArgs, since_now};
use crate::classify::linear::LinearClassifier;
use crate::classify::linear::data::Split;
use crate::classify::{Classifier, Prompt};
use crate::ledger::feedback::Rated;
use crate::ledger::query::Filter;

/// Options of `crossroads calibrate`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("goal")
        .required(true)
        .args(["frontier_share", "target_quality"])
))]
pub struct CalibrateArgs {
    /// The classifier model that scores rows given as `text` or `messages`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// JSONL traffic: rows with `text`, chat `messages` or a recorded `difficulty`; a
    /// row with `tier` and `score` is a rated request (`crossroads feedback export`
    /// writes such rows). Repeat for more.
    #[arg(long, conflicts_with_all = ["ledger", "config"])]
    pub data: Vec<PathBuf>,
    /// With --data: the rows with `text` of this split only (`train`, `validation`,
    /// `test` or `all`, as `crossroads eval` splits them), e.g. to set a threshold on
    /// the rows a model trained on and keep the test rows unseen.
    #[arg(long, default_value = "all")]
    pub split: String,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// With a ledger: the requests that arrived since then (7d, 24h, 30m or a date).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// The share of traffic to send to the frontier, from 0 to 1.
    #[arg(long)]
    pub frontier_share: Option<f64>,
    /// The mean feedback score, from 0 to 1, that locally answered requests must keep.
    #[arg(long)]
    pub target_quality: Option<f64>,
    /// The fewest rated local answers a --target-quality threshold may rest on.
    #[arg(long, default_value_t = 20)]
    pub min_feedback: usize,
}

/// A rated request: its recorded difficulty, whether a local model answered it, and its
/// feedback score (the newest, when it was rated more than once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub difficulty: f32,
    pub local: bool,
    pub score: f64,
}

/// What calibration reads: the difficulty of every request, and the rated ones.
#[derive(Debug, Default)]
struct Traffic {
    difficulties: Vec<f32>,
    verdicts: Vec<Verdict>,
    /// Feedback rows read, before keeping each request's newest.
    feedback_rows: usize,
}

pub fn calibrate_command(args: CalibrateArgs) -> Result<(), Failed> {
    for (flag, value) in [
        ("--frontier-share", args.frontier_share),
        ("--target-quality", args.target_quality),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(format!("{flag} must be in [0, 1]").into());
        }
    }
    let traffic = if args.ledger.given() {
        from_ledger(&args.ledger, &args.since)?
    } else if !args.data.is_empty() {
        let split = Split::parse(&args.split).ok_or_else(|| {
            format!(
                "unknown split `{}`; use train, validation, test or all",
                args.split
            )
        })?;
        from_files(&args.data, split, args.model.as_deref())?
    } else {
        return Err(
            "give the traffic: --data FILE.jsonl, or --ledger URL or --config for the ledger's"
                .into(),
        );
    };
    let share_of = |threshold: f32| {
        let sent = traffic
            .difficulties
            .iter()
            .filter(|&&d| d >= threshold)
            .count();
        format!(
            "sends {sent} of {} requests ({:.1}%) to the frontier",
            traffic.difficulties.len(),
            100.0 * sent as f64 / traffic.difficulties.len().max(1) as f64
        )
    };
    if let Some(share) = args.frontier_share {
        let threshold = threshold_for_share(&mut traffic.difficulties.clone(), share)
            .ok_or_else(|| "no requests with a difficulty in the given traffic".to_owned())?;
        println!(
            "min_difficulty = {threshold:.4}   # {}",
            share_of(threshold)
        );
        return Ok(());
    }
    let target = args.target_quality.unwrap_or(1.0);
    let local = traffic.verdicts.iter().filter(|v| v.local).count();
    let chosen = threshold_for_quality(&traffic.verdicts, target, args.min_feedback).map_err(
        |why| match why {
            NoThreshold::TooLittleFeedback { local, needed } => format!(
                "too little feedback: {local} rated requests answered locally (of {} feedback rows), at least {needed} needed (--min-feedback); collect more with POST /v1/feedback",
                traffic.feedback_rows
            ),
            NoThreshold::Unreachable { quality, support } => format!(
                "no threshold keeps local quality at {target}: the {support} easiest rated local answers already score {quality:.3} on average; only min_difficulty = 0 (everything to the frontier) meets it"
            ),
        },
    )?;
    let frontier: Vec<f64> = traffic
        .verdicts
        .iter()
        .filter(|v| !v.local)
        .map(|v| v.score)
        .collect();
    println!(
        "min_difficulty = {:.4}   # {}",
        chosen.threshold,
        share_of(chosen.threshold)
    );
    println!(
        "# local quality {:.3} (target {target}): the mean score of the {} rated local answers below it; {} feedback rows read, {local} requests rated on local answers, {} on frontier answers{}",
        chosen.local_quality,
        chosen.support,
        traffic.feedback_rows,
        frontier.len(),
        if frontier.is_empty() {
            String::new()
        } else {
            format!(
                " (mean {:.3})",
                frontier.iter().sum::<f64>() / frontier.len() as f64
            )
        }
    );
    Ok(())
}

/// The ledger's requests since `since`, and the feedback on them.
fn from_ledger(ledger: &LedgerArgs, since: &str) -> Result<Traffic, Failed> {
    let filter = Filter {
        from_ms: Some(since_now(since)?),
        ..Filter::default()
    };
    let reader = ledger.reader()?;
    let rated = reader.rated(&filter)?;
    Ok(Traffic {
        difficulties: reader.difficulties(&filter)?,
        feedback_rows: rated.len(),
        verdicts: newest_per_request(
            rated
                .iter()
                .map(|r| (Some(r.request_id.as_str()), verdict(r))),
        ),
    })
}

/// A ledger row's verdict, when its request has a difficulty and a tier.
fn verdict(r: &Rated) -> Option<Verdict> {
    Some(Verdict {
        difficulty: r.difficulty?,
        local: tier_is_local(r.tier.as_deref()?)?,
        score: r.score,
    })
}

fn tier_is_local(tier: &str) -> Option<bool> {
    match tier {
        "local" => Some(true),
        "frontier" => Some(false),
        _ => None,
    }
}

/// Keeps the last item of each id (a later feedback replaces an earlier one), in the
/// order ids first appear; items without an id are all kept.
fn newest_per_request<'a, T>(items: impl Iterator<Item = (Option<&'a str>, Option<T>)>) -> Vec<T> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Option<T>> = Vec::new();
    for (id, item) in items {
        match id.and_then(|id| at.get(id).copied()) {
            Some(i) => {
                if let Some(slot) = out.get_mut(i) {
                    *slot = item;
                }
            }
            None => {
                if let Some(id) = id {
                    at.insert(id, out.len());
                }
                out.push(item);
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// One row of a traffic file.
#[derive(serde::Deserialize)]
struct TrafficRow {
    text: Option<String>,
    messages: Option<serde_json::Value>,
    difficulty: Option<f32>,
    request_id: Option<String>,
    tier: Option<String>,
    score: Option<f64>,
}

/// Rows of JSONL files; a request listed more than once (by `request_id`) counts once,
/// with its last row's verdict.
fn from_files(
    files: &[PathBuf],
    split: Split,
    model: Option<&std::path::Path>,
) -> Result<Traffic, Failed> {
    let mut classifier: Option<LinearClassifier> = None;
    let mut rows: Vec<(Option<String>, f32, Option<Verdict>)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", file.display(), i + 1);
            let row: TrafficRow =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
            if row.text.as_deref().is_some_and(|t| !split.contains(t)) {
                continue;
            }
            let mut classify = |prompt: &Prompt| -> Result<f32, Failed> {
                if classifier.is_none() {
                    let path = model.ok_or_else(|| {
                        format!("{}: rows with `text` or `messages` need --model", at())
                    })?;
                    classifier = Some(load_model(path)?.0);
                }
                Ok(classifier
                    .as_ref()
                    .map_or(0.0, |c| c.classify(prompt).difficulty))
            };
            let difficulty = match (row.text, row.messages, row.difficulty) {
                (Some(text), _, _) => classify(&Prompt::user(&text))?,
                (None, Some(messages), _) => {
                    let body = serde_json::json!({ "model": "auto", "messages": messages });
                    let request = crate::request::Request::parse(body.to_string().as_bytes())
                        .map_err(|_| {
                            format!("{}: `messages` is not a valid chat conversation", at())
                        })?;
                    classify(&request.prompt())?
                }
                (None, None, Some(d)) => d,
                (None, None, None) => {
                    return Err(format!(
                        "{}: a row needs `text`, `messages` or `difficulty`",
                        at()
                    )
                    .into());
                }
            };
            let verdict = match (row.tier.as_deref().and_then(tier_is_local), row.score) {
                (Some(local), Some(score)) if (0.0..=1.0).contains(&score) => Some(Verdict {
                    difficulty,
                    local,
                    score,
                }),
                (_, Some(_)) => {
                    return Err(format!(
                        "{}: a rated row needs `tier` (local or frontier) and a `score` from 0 to 1",
                        at()
                    ).into());
                }
                _ => None,
            };
            rows.push((row.request_id, difficulty, verdict));
        }
    }
    let feedback_rows = rows.iter().filter(|r| r.2.is_some()).count();
    let difficulties = newest_per_request(rows.iter().map(|(id, d, _)| (id.as_deref(), Some(*d))));
    let verdicts = newest_per_request(rows.iter().map(|(id, _, v)| (id.as_deref(), *v)));
    Ok(Traffic {
        difficulties,
        verdicts,
        feedback_rows,
    })
}

/// The lowest threshold (rounded down to 4 decimals) such that rows scoring at least it
/// make up no more than `share` of `scores`, plus ties at the boundary.
pub fn threshold_for_share(scores: &mut [f32], share: f64) -> Option<f32> {
    if scores.is_empty() {
        return None;
    }
    scores.sort_by(|a, b| b.total_cmp(a));
    let k = (share * scores.len() as f64).round() as usize;
    if k == 0 {
        // Above every score: nothing goes to the frontier.
        return Some(just_above(scores[0]));
    }
    let kth = scores[k.min(scores.len()) - 1];
    Some((kth * 1e4).floor() / 1e4)
}

/// The smallest 4-decimal threshold above `d` (as `min_difficulty` is written).
fn just_above(d: f32) -> f32 {
    ((d * 1e4).floor() + 1.0) / 1e4
}

/// The threshold `--target-quality` chose, and the evidence for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityThreshold {
    pub threshold: f32,
    /// The rated local answers below the threshold: the feedback the estimate rests on.
    pub support: usize,
    /// Their mean score.
    pub local_quality: f64,
}

/// Why [`threshold_for_quality`] chose no threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoThreshold {
    /// Fewer rated local answers than the minimum.
    TooLittleFeedback { local: usize, needed: usize },
    /// The easiest rated local answers (as many as the minimum) already score below
    /// the target on average.
    Unreachable { quality: f64, support: usize },
}

/// The highest `min_difficulty` (the most local traffic, the lowest cost) at which the
/// requests that would stay local still score `target` on average.
///
/// The estimator: a rule sends a request to the frontier when its difficulty is at least
/// the threshold, so at threshold `t` the requests below `t` stay local. Their quality is
/// estimated by the mean feedback score of the rated requests below `t` **that a local
/// model answered**: feedback on a frontier answer says nothing of how a local model
/// would have done. Candidates are the thresholds just above each rated local answer's
/// difficulty (4 decimals, as `min_difficulty` is written); only those with at least
/// `min_support` rated local answers below them count, and the highest one whose mean
/// reaches `target` wins. The result never goes above the hardest rated local answer:
/// harder requests have no local evidence, so they stay with the frontier. The mean is
/// over the whole local set, not the hardest band, so a few bad answers near the
/// threshold can hide behind many good easy ones; raise `target` to be strict there.
pub fn threshold_for_quality(
    verdicts: &[Verdict],
    target: f64,
    min_support: usize,
) -> Result<QualityThreshold, NoThreshold> {
    let mut local: Vec<(f32, f64)> = verdicts
        .iter()
        .filter(|v| v.local)
        .map(|v| (v.difficulty, v.score))
        .collect();
    let min_support = min_support.max(1);
    if local.len() < min_support {
        return Err(NoThreshold::TooLittleFeedback {
            local: local.len(),
            needed: min_support,
        });
    }
    local.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut below, mut sum) = (0, 0.0);
    let mut easiest = None;
    let mut best = None;
    for &(difficulty, _) in &local {
        let threshold = just_above(difficulty);
        while let Some(&(d, score)) = local.get(below)
            && d < threshold
        {
            sum += score;
            below += 1;
        }
        if below < min_support {
            continue;
        }
        let quality = sum / below as f64;
        easiest.get_or_insert((quality, below));
        if quality >= target {
            best = Some(QualityThreshold {
                threshold,
                support: below,
                local_quality: quality,
            });
        }
    }
    best.ok_or(match easiest {
        Some((quality, support)) => NoThreshold::Unreachable { quality, support },
        // Unreachable itself: every candidate has at least the first one below it.
        None => NoThreshold::TooLittleFeedback {
            local: local.len(),
            needed: min_support,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_split_keeps_only_its_rows_with_text() {
        let dir = std::env::temp_dir().join(format!("calibrate-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("traffic.jsonl");
        let texts: Vec<String> = (0..300).map(|i| format!("question number {i}")).collect();
        let mut lines: Vec<String> = texts
            .iter()
            .map(|t| serde_json::json!({ "text": t }).to_string())
            .collect();
        lines.push(r#"{"difficulty": 0.5}"#.into());
        std::fs::write(&file, lines.join("\n")).unwrap();
        let model =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossroads-linear.bin");
        let read = |split| from_files(std::slice::from_ref(&file), split, Some(&model)).unwrap();
        let in_train = texts.iter().filter(|t| Split::Train.contains(t)).count();
        assert!(in_train > 150 && in_train < 300, "{in_train}");
        // Rows without text (a recorded difficulty) belong to every split.
        assert_eq!(read(Split::Train).difficulties.len(), in_train + 1);
        assert_eq!(read(Split::All).difficulties.len(), 301);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Local answers at difficulties 0.01005, 0.02005, ... (halfway between 4-decimal
    /// thresholds, so none sits on one) with the given scores.
    fn local(scores: &[f64]) -> Vec<Verdict> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Verdict {
                difficulty: 0.01 * (i + 1) as f32 + 0.000_05,
                local: true,
                score,
            })
            .collect()
    }

    #[test]
    fn picks_the_highest_threshold_whose_local_mean_reaches_the_target() {
        // 20 good answers, then 4 bad: the means of the 20, 21, 22, 23 and 24 easiest
        // are 1, 0.952, 0.909, 0.870 and 0.833.
        let mut verdicts = local(&[[1.0; 20].as_slice(), &[0.0; 4]].concat());
        // Frontier answers, however scored, do not count.
        verdicts.push(Verdict {
            difficulty: 0.001,
            local: false,
            score: 0.0,
        });
        let t = threshold_for_quality(&verdicts, 0.9, 20).unwrap();
        // The 22nd easiest is at 0.22005: everything up to it stays local.
        assert_eq!(t.threshold, 0.2201);
        assert_eq!(t.support, 22);
        assert!((t.local_quality - 20.0 / 22.0).abs() < 1e-12);
        let strict = threshold_for_quality(&verdicts, 1.0, 20).unwrap();
        assert_eq!((strict.threshold, strict.support), (0.2001, 20));
        let lax = threshold_for_quality(&verdicts, 0.5, 20).unwrap();
        assert_eq!(
            (lax.threshold, lax.support),
            (0.2401, 24),
            "never above the hardest rated local answer"
        );
    }

    #[test]
    fn a_later_dip_does_not_hide_a_good_higher_threshold() {
        // Bad answers at ranks 21-22, good ones after: the means of the 21..=26
        // easiest are 0.952, 0.909, 0.913, 0.917, 0.92, 0.923.
        let scores = [[1.0; 20].as_slice(), &[0.0; 2], &[1.0; 4]].concat();
        let t = threshold_for_quality(&local(&scores), 0.915, 20).unwrap();
        assert_eq!((t.threshold, t.support), (0.2601, 26));
    }

    #[test]
    fn refuses_on_too_little_feedback_or_an_unreachable_target() {
        let few = local(&[1.0; 19]);
        assert_eq!(
            threshold_for_quality(&few, 0.9, 20),
            Err(NoThreshold::TooLittleFeedback {
                local: 19,
                needed: 20
            })
        );
        let mut frontier_only = local(&[1.0; 30]);
        for v in &mut frontier_only {
            v.local = false;
        }
        assert!(matches!(
            threshold_for_quality(&frontier_only, 0.9, 20),
            Err(NoThreshold::TooLittleFeedback { local: 0, .. })
        ));
        let mediocre = local(&[0.5; 25]);
        assert_eq!(
            threshold_for_quality(&mediocre, 0.9, 20),
            Err(NoThreshold::Unreachable {
                quality: 0.5,
                support: 20
            })
        );
    }

    #[test]
    fn ties_are_never_split() {
        // 25 answers at one difficulty: one threshold sends all of them, or none.
        let mut tied = local(&[1.0; 25]);
        for v in &mut tied {
            v.difficulty = 0.300_05;
        }
        let t = threshold_for_quality(&tied, 0.9, 20).unwrap();
        assert_eq!((t.threshold, t.support), (0.3001, 25));
    }

    #[test]
    fn keeps_the_newest_verdict_of_each_request() {
        let items = [
            (Some("a"), Some(1)),
            (None, Some(2)),
            (Some("b"), None),
            (Some("a"), Some(3)),
            (None, Some(4)),
        ];
        assert_eq!(newest_per_request(items.into_iter()), [3, 2, 4]);
    }
}
