//! Unit tests of the linear classifier on small synthetic data: it learns, it is
//! deterministic for a seed, its file round-trips, and a damaged file is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::data::{LabelMap, Targets};
use super::format::{self, LoadError};
use super::metrics::{self, Confusion};
use super::train::{self, Example, Rng, TrainOptions};
use super::*;
use crate::classify::Role;
use std::path::Path;

const DOMAINS: [&str; 3] = ["astronomy", "cooking", "law"];

/// Words typical of each synthetic domain.
const VOCAB: [&[&str]; 3] = [
    &[
        "planet",
        "orbit",
        "telescope",
        "galaxy",
        "star",
        "comet",
        "nebula",
    ],
    &[
        "recipe", "oven", "flour", "simmer", "garlic", "bake", "saucepan",
    ],
    &[
        "contract",
        "court",
        "plaintiff",
        "statute",
        "tort",
        "appeal",
        "judge",
    ],
];
const FILLER: [&str; 8] = ["the", "a", "what", "is", "about", "my", "how", "please"];

fn small_spec() -> FeatureSpec {
    FeatureSpec {
        hash_bits: 12,
        ..FeatureSpec::default()
    }
}

/// A sentence of one domain; "hard" sentences carry the word "tricky", and only the
/// strong model gets those right.
fn sentence(rng: &mut Rng, domain: usize, hard: bool) -> String {
    let mut words: Vec<&str> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                VOCAB[domain][rng.below(VOCAB[domain].len())]
            } else {
                FILLER[rng.below(FILLER.len())]
            }
        })
        .collect();
    if hard {
        words.push("tricky");
    }
    words.join(" ")
}

fn synthetic(seed: u64, n: usize) -> Vec<(String, Targets)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let domain = i % 3;
            let hard = rng.below(2) == 0;
            // weak + 2 * strong: hard → strong only, easy → both.
            let outcome = if hard { 2 } else { 3 };
            let task = if domain == 0 { 1 } else { 3 };
            let targets = Targets {
                domain: Some(domain),
                task: Some(task),
                outcome: Some(outcome),
            };
            (sentence(&mut rng, domain, hard), targets)
        })
        .collect()
}

fn train_on(rows: &[(String, Targets)], seed: u64) -> LinearModel {
    let options = TrainOptions {
        seed,
        epochs: 5,
        learning_rate: 0.5,
        frontier_rate: 1.0,
        spec: small_spec(),
        ..TrainOptions::default()
    };
    let examples: Vec<Example> = rows
        .iter()
        .enumerate()
        .map(|(i, (text, t))| Example::new(&options.spec, text, *t, i % 10 == 0))
        .collect();
    train::train(
        &examples,
        DOMAINS.map(str::to_owned).to_vec(),
        data::TASKS.map(str::to_owned).to_vec(),
        None,
        &options,
        &mut |_, _| {},
    )
}

fn trained() -> LinearClassifier {
    LinearClassifier::new(train_on(&synthetic(7, 600), 1))
}

#[test]
fn learns_domains_tasks_and_frontier_need() {
    let classifier = trained();
    let mut right = 0;
    let test = synthetic(99, 300);
    for (text, t) in &test {
        let c = classifier.classify(&Prompt::user(text));
        right += usize::from(Some(usize::from(c.label.0)) == t.domain);
        assert!((0.0..=1.0).contains(&c.confidence));
        assert!((0.0..=1.0).contains(&c.task_confidence));
        assert!((0.0..=1.0).contains(&c.difficulty));
    }
    assert!(right as f64 / test.len() as f64 > 0.95, "{right}/300");

    let c = classifier.classify(&Prompt::user("the planet orbit telescope"));
    assert_eq!(classifier.labels().name(c.label), "astronomy");
    assert_eq!(classifier.task_labels().name(c.task), "math");
    let easy = classifier.classify(&Prompt::user("simmer the garlic in a saucepan"));
    let hard = classifier.classify(&Prompt::user("simmer the garlic in a saucepan tricky"));
    assert!(
        hard.difficulty > easy.difficulty + 0.3,
        "{} vs {}",
        hard.difficulty,
        easy.difficulty
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let rows = synthetic(3, 200);
    let a = format::encode(&train_on(&rows, 5));
    let b = format::encode(&train_on(&rows, 5));
    assert!(a == b, "same rows and seed must give the same bytes");
    let c = format::encode(&train_on(&rows, 6));
    assert!(a != c, "another seed shuffles differently");
}

#[test]
fn rows_added_in_blocks_sum_as_one_by_one() {
    let model = trained().model().clone();
    assert_eq!(model.table.width(), 1);
    let long = "planet orbit comet ".repeat(40);
    let conversation = Prompt::conversation(&[
        (Role::System, "be brief"),
        (Role::User, &long),
        (Role::Assistant, "the court hears it"),
        (Role::User, "and the appeal of a tort case?"),
    ]);
    for prompt in [
        Prompt::user(""),
        Prompt::user("a"),
        Prompt::user("the court"),
        Prompt::user(&long),
        conversation,
    ] {
        let count = assert_sums_as_one_by_one(&model, &prompt);
        if prompt.segments.len() > 1 {
            assert!(count as usize > 4 * ngrams::BLOCK, "{count} features");
        }
    }
    // Every way of summing: one cache line with three or four groups of eight in use
    // (24 and 31 outputs, the idf² last), two lines (34), three (64, the most).
    let spec = FeatureSpec {
        hash_bits: 10,
        ..FeatureSpec::default()
    };
    for (domains, tasks, width, groups) in
        [(16, 4, 1, 4), (23, 4, 1, 4), (24, 6, 2, 5), (56, 4, 3, 9)]
    {
        let (_, _, model) = random_model(spec, domains, tasks, 3);
        let table = &model.table;
        assert_eq!(
            (table.width(), table.groups()),
            (width, groups),
            "{}",
            model.stride()
        );
        assert_sums_as_one_by_one(&model, &Prompt::user(&long));
    }
}

/// Checks that `model` adds the rows of `prompt`'s features (in blocks, by kind and
/// weight, in runs of `i16`) to the same integer sums as adding them one by one;
/// returns how many features there were.
fn assert_sums_as_one_by_one(model: &LinearModel, prompt: &Prompt<'_>) -> u32 {
    let stride = model.stride();
    let mut plain = [0i64; MAX_OUTPUTS];
    let mut norm = 0i64;
    let count = ngrams::for_each_feature(&model.spec, prompt, |bucket, units, _| {
        let values = model.table.row(bucket).unwrap();
        let units = i64::from(units);
        for (p, &w) in plain.iter_mut().zip(&values[..stride]) {
            *p += units * i64::from(w);
        }
        norm += units * units * i64::from(values[stride]);
    });
    let mut scores = [0.0; MAX_OUTPUTS];
    let squared = model.ngram_scores(prompt, &mut scores);
    let c = model.table.columns();
    for i in 0..stride {
        assert_eq!(scores[i], plain[i] as f32 * c[i] / 16.0, "{prompt:?} {i}");
    }
    assert_eq!(squared, norm as f32 * c[stride] / 256.0, "{prompt:?}");
    count
}

/// Random weights and idf for a model of `spec` with `domains` and `tasks` labels.
fn random_model(
    spec: FeatureSpec,
    domains: usize,
    tasks: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, LinearModel) {
    let names = |n: usize, prefix: &str| (0..n).map(|i| format!("{prefix}{i}")).collect();
    let stride = domains + tasks + OUTCOMES.len();
    let mut rng = Rng::new(seed);
    let mut random = |scale: f32| (rng.below(2001) as f32 - 1000.0) / 1000.0 * scale;
    let weights: Vec<f32> = (0..spec.rows() * stride).map(|_| random(2.0)).collect();
    let idf: Vec<f32> = (0..spec.buckets()).map(|_| 2.0 + random(1.5)).collect();
    let model = LinearModel::from_weights(
        spec,
        names(domains, "d"),
        names(tasks, "t"),
        [1.0; 3],
        &weights,
        &idf,
        vec![0.0; stride],
    );
    (weights, idf, model)
}

/// `model` in an older format (2 or 3), whose bucket weights are `weights × idf` on
/// 16-bit column scales; version 2 puts a row scale (here `1 / idf`) before each idf.
fn encode_older(model: &LinearModel, version: u32, weights: &[f32], idf: &[f32]) -> Vec<u8> {
    let stride = model.stride();
    let current = format::encode(model);
    let rows = model.table.rows() * 2 * (stride + 1);
    let head = current.len() - 8 - rows - 4 * (stride + 1);
    let mut bytes = current[..head].to_vec();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let buckets = &weights[..idf.len() * stride];
    let mut columns = vec![0.0f32; stride];
    for (row, idf) in buckets.chunks_exact(stride).zip(idf) {
        for (c, w) in columns.iter_mut().zip(row) {
            *c = c.max((w * idf).abs() / 32767.0);
        }
    }
    for c in &columns {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    for (row, idf) in buckets.chunks_exact(stride).zip(idf) {
        if version == 2 {
            bytes.extend_from_slice(&idf.recip().to_le_bytes());
        }
        bytes.extend_from_slice(&idf.to_le_bytes());
        for (w, c) in row.iter().zip(&columns) {
            bytes.extend_from_slice(&((w * idf / c).round() as i16).to_le_bytes());
        }
    }
    let sum = format::checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

#[test]
fn older_files_are_quantized_again() {
    let spec = FeatureSpec {
        hash_bits: 10,
        ..FeatureSpec::default()
    };
    let (weights, idf, model) = random_model(spec, 14, 4, 5);
    for version in [2, 3] {
        let old = format::decode(&encode_older(&model, version, &weights, &idf)).unwrap();
        // Rounded twice (to 16 bits, then 13): at most one step apart.
        for r in 0..model.table.rows() {
            let (a, b) = (old.table.row(r).unwrap(), model.table.row(r).unwrap());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1, "version {version} row {r}: {x} vs {y}");
            }
        }
        for (a, b) in old.table.columns().iter().zip(model.table.columns()) {
            assert!((a - b).abs() <= 1e-4 * b.abs(), "{a} vs {b}");
        }
        let (old, new) = (
            LinearClassifier::new(old),
            LinearClassifier::new(model.clone()),
        );
        let prompt = Prompt::user("which court hears the appeal of a tort case?");
        let (a, b) = (old.classify(&prompt), new.classify(&prompt));
        assert_eq!((a.label, a.task), (b.label, b.task));
        assert!((a.confidence - b.confidence).abs() < 1e-3);
    }
}

#[test]
fn row_values_and_sizes_are_checked() {
    let model = trained().model().clone();
    let bytes = format::encode(&model);
    let body = &bytes[..bytes.len() - 8];
    let rows = model.table.rows() * 2 * (model.stride() + 1);
    // `body` changed by `edit`, with a valid checksum: the error message.
    let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = body.to_vec();
        edit(&mut b);
        let sum = format::checksum(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        format::decode(&b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let last = body.len() - 2;
    let beyond = refused(&|b| b[last..].copy_from_slice(&4096i16.to_le_bytes()));
    assert!(beyond.contains("4096"), "{beyond}");
    let negative = refused(&|b| b[last..].copy_from_slice(&(-1i16).to_le_bytes()));
    assert!(negative.contains("negative idf²"), "{negative}");
    let scale = body.len() - rows - 4;
    let zero = refused(&|b| b[scale..scale + 4].copy_from_slice(&0f32.to_le_bytes()));
    assert!(zero.contains("must be positive"), "{zero}");
    // A larger hash space than the rows that follow: refused before allocating.
    let declared = (model.spec.rows() as u32).to_le_bytes();
    let at = 40 + body[40..].windows(4).position(|w| w == declared).unwrap();
    let larger = refused(&|b| {
        b[12] = 20;
        b[at..at + 4].copy_from_slice(&((1u32 << 20) + ngrams::DENSE as u32).to_le_bytes());
    });
    assert!(larger.contains("sizes need"), "{larger}");
}

#[test]
fn file_round_trips() {
    let classifier = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    format::write(&path, classifier.model()).unwrap();
    let loaded = LinearClassifier::load(&path).unwrap();
    assert_eq!(loaded.model(), classifier.model());
    let prompt = Prompt::user("which court hears the appeal of a tort case?");
    assert_eq!(loaded.classify(&prompt), classifier.classify(&prompt));
    assert_eq!(loaded.labels().names().collect::<Vec<_>>(), DOMAINS);
}

#[test]
fn damaged_files_are_refused_with_a_reason() {
    let bytes = format::encode(trained().model());
    let err = |b: &[u8]| {
        format::decode(b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    assert!(matches!(format::decode(&flipped), Err(LoadError::Checksum)));
    assert!(err(&flipped).contains("corrupt"));

    assert!(matches!(
        format::decode(&bytes[..bytes.len() - 100]),
        Err(LoadError::Checksum | LoadError::Malformed(_))
    ));
    assert!(matches!(
        format::decode(&bytes[..10]),
        Err(LoadError::Malformed(_) | LoadError::Checksum)
    ));
    assert!(matches!(
        format::decode(b"PK\x03\x04 a zip file"),
        Err(LoadError::NotAModel)
    ));
    assert!(matches!(format::decode(b""), Err(LoadError::NotAModel)));

    let mut future = bytes.clone();
    let next = format::VERSION + 1;
    future[8..12].copy_from_slice(&next.to_le_bytes());
    assert!(matches!(
        format::decode(&future),
        Err(LoadError::Version { found }) if found == next
    ));
    assert!(err(&future).contains(&format!("version {next}")));
    // A file of the first format (f32 rows) names the versions this build reads.
    let mut old = bytes.clone();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    let message = err(&old);
    assert!(
        message.contains("version 1")
            && message.contains(&format!("reads versions 2 to {}", format::VERSION)),
        "{message}"
    );

    // A feature weight classification cannot add exactly (it counts sixteenths).
    let mut odd = bytes[..bytes.len() - 8].to_vec();
    odd[16..20].copy_from_slice(&0.3f32.to_le_bytes());
    let sum = format::checksum(&odd);
    odd.extend_from_slice(&sum.to_le_bytes());
    assert!(err(&odd).contains("whole sixteenths"), "{}", err(&odd));

    let missing = LinearClassifier::load(Path::new("/nonexistent/model.bin"));
    assert!(matches!(missing, Err(LoadError::Io(_))));
}

#[test]
fn mismatched_dimensions_are_refused() {
    let mut model = trained().model().clone();
    model.dense.truncate(model.dense.len() - model.stride());
    // Re-encoding writes a valid checksum over sizes that disagree.
    let bytes = format::encode(&model);
    let e = format::decode(&bytes)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn conversation_context_counts_less_than_the_last_user_turn() {
    let classifier = trained();
    let prompt = Prompt::conversation(&[
        (
            Role::System,
            "You are a court clerk: contract statute plaintiff judge appeal.",
        ),
        (
            Role::User,
            "what telescope shows the galaxy and the comet orbit?",
        ),
    ]);
    let c = classifier.classify(&prompt);
    assert_eq!(classifier.labels().name(c.label), "astronomy");
}

#[test]
fn empty_and_odd_prompts_classify() {
    let classifier = trained();
    for text in ["", " ", "🌍🌍🌍", "\u{0}\u{1}", &"x".repeat(100_000)] {
        let c = classifier.classify(&Prompt::user(text));
        assert!(c.confidence.is_finite() && c.difficulty.is_finite());
    }
    let none = classifier.classify(&Prompt::default());
    assert!((0.0..=1.0).contains(&none.confidence));
}

#[test]
fn label_map_drives_eval_head_choice() {
    let map = LabelMap::new(
        DOMAINS.map(str::to_owned).to_vec(),
        data::TASKS.map(str::to_owned).to_vec(),
    );
    assert_eq!(map.head_for(["law"].into_iter()), Some(Head::Domain));
    assert_eq!(map.head_for(["coding"].into_iter()), Some(Head::Task));
}

// ------------------------------------------------------------------ metrics

#[test]
fn confusion_scores_by_hand() {
    // truth → predicted: a→a ×2, a→b, b→b, c→a.
    let mut c = Confusion::new(3);
    for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (2, 0)] {
        c.add(t, p);
    }
    assert_eq!(c.total(), 5);
    assert!((c.accuracy() - 0.6).abs() < 1e-12);
    let a = c.score(0);
    assert!((a.precision - 2.0 / 3.0).abs() < 1e-12);
    assert!((a.recall - 2.0 / 3.0).abs() < 1e-12);
    let b = c.score(1);
    assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
    assert!((b.f1 - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(c.score(2).f1, 0.0);
    // (2/3 + 2/3 + 0) / 3
    assert!((c.macro_f1() - 4.0 / 9.0).abs() < 1e-12);
    // Recalls 2/3, 1, 0: (2/3 + 1 + 0) / 3, against an accuracy of 0.6.
    assert!((c.balanced_accuracy() - 5.0 / 9.0).abs() < 1e-12);
    // A class neither true nor predicted does not count.
    let mut d = Confusion::new(4);
    d.add(0, 0);
    d.add(1, 1);
    assert!((d.macro_f1() - 1.0).abs() < 1e-12);
    // Nor does a class only predicted, for the balanced accuracy: recalls 1 and 1/2.
    d.add(1, 2);
    assert!((d.balanced_accuracy() - 0.75).abs() < 1e-12);
}

#[test]
fn calibration_error_by_hand() {
    // Bin 0.9: confidence 0.9, 1 of 2 right → gap 0.4; bin 0.5: 0.5 vs 1/2 → 0.
    let rows = [(0.9, true), (0.9, false), (0.5, true), (0.5, false)];
    assert!((metrics::calibration_error(&rows) - 0.2).abs() < 1e-6);
}

#[test]
fn quantiles_interpolate_like_numpy() {
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(metrics::quantile(&v, 0.0), 1.0);
    assert_eq!(metrics::quantile(&v, 1.0), 4.0);
    assert!((metrics::quantile(&v, 0.5) - 2.5).abs() < 1e-6);
    assert!((metrics::quantile(&v, 0.25) - 1.75).abs() < 1e-6);
}

#[test]
fn routing_metrics_by_hand() {
    // Four prompts, two bins. Weak right on 0 and 1, strong right on 0, 2 and 3.
    // Scores rank 3 > 2 > 1 > 0: the perfect order for this data.
    let rows = [
        (0.1, true, true),
        (0.2, true, false),
        (0.8, false, true),
        (0.9, false, true),
    ];
    let r = metrics::routing(&rows, 2).unwrap();
    assert!((r.weak_accuracy - 0.5).abs() < 1e-12);
    assert!((r.strong_accuracy - 0.75).abs() < 1e-12);
    // Thresholds 0.1 (all strong), 0.5 (two strong), 0.9 with ">" (none).
    let shares: Vec<f64> = r.curve.iter().map(|p| p.strong_share).collect();
    let accs: Vec<f64> = r.curve.iter().map(|p| p.accuracy).collect();
    assert_eq!(shares, [0.0, 0.5, 1.0]);
    assert_eq!(accs, [0.5, 1.0, 0.75]);
    // AUC = 0.5·(0.5+1)/2 + 0.5·(1+0.75)/2 = 0.8125; weak 0.5, strong 0.75.
    assert!((r.apgr - (0.8125 - 0.5) / 0.25).abs() < 1e-9, "{}", r.apgr);
    // 50% of the gap: 0.625 is reached at a quarter of the way to 0.5 share... by
    // interpolation between (0, 0.5) and (0.5, 1.0): share 0.125.
    assert!((r.cpt50 - 0.125).abs() < 1e-9, "{}", r.cpt50);
    // 80%: 0.7 → share 0.2.
    assert!((r.cpt80 - 0.2).abs() < 1e-9, "{}", r.cpt80);
}

#[test]
fn random_like_scores_give_the_diagonal() {
    // Scores that ignore the outcomes and a curve that is a straight line: APGR 0.5.
    let rows = [
        (0.1, false, true),
        (0.2, true, true),
        (0.3, false, true),
        (0.4, true, true),
    ];
    let r = metrics::routing(&rows, 4).unwrap();
    // Sending the lowest scores to the weak model costs their gap linearly.
    assert!(r.apgr > 0.0 && r.apgr < 1.0);
    assert!(metrics::routing(&[], 10).is_none());
    // No gap between the models: nothing to measure.
    assert!(metrics::routing(&[(0.5, true, true)], 10).is_none());
}

#[test]
fn calibrate_threshold_picks_the_share() {
    use crate::cli::classifier::threshold_for_share;
    let mut scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    let t = threshold_for_share(&mut scores, 0.3).unwrap();
    assert_eq!(scores.iter().filter(|&&s| s >= t).count(), 30);
    let t = threshold_for_share(&mut scores, 0.0).unwrap();
    assert_eq!(scores.iter().filter(|&&s| s >= t).count(), 0);
    let t = threshold_for_share(&mut scores, 1.0).unwrap();
    assert_eq!(scores.iter().filter(|&&s| s >= t).count(), 100);
    assert!(threshold_for_share(&mut [], 0.5).is_none());
}

#[test]
fn open_sums_fold_before_their_lanes_overflow() {
    // One row at the largest value, added far more often than an i32 lane holds.
    let stride = 5;
    let table = Table::quantize(&[1.0; 5], &[1.0], stride);
    let blocks = 5_000;
    let rows = (blocks * ngrams::BLOCK) as i64;
    assert!(rows as usize > MAX_OPEN_ROWS);
    // In blocks, as the walk hands them over, and all in one call.
    let mut in_blocks = Weighted::<3>::default();
    for _ in 0..blocks {
        in_blocks.add::<1>(&table, ngrams::Kind::Chars, &[0; ngrams::BLOCK], 16);
    }
    let mut at_once = Weighted::<3>::default();
    at_once.add::<1>(&table, ngrams::Kind::Chars, &vec![0; rows as usize], 16);
    for mut weighted in [in_blocks, at_once] {
        weighted.finish(&table);
        assert_eq!(weighted.sums[0], rows * i64::from(table::MAX_Q) * 16);
        assert_eq!(weighted.norm, rows * i64::from(table::MAX_Q) * 16 * 16);
    }
}

/// Word vectors that place each domain's words, and one unseen synonym per domain, in
/// their own direction.
fn toy_vectors(spec: &FeatureSpec) -> (train::WordVectors, [&'static str; 3]) {
    let unseen = ["asteroid", "spatula", "lawsuit"];
    let mut words = Vec::new();
    let mut vectors = Vec::new();
    for (d, domain) in VOCAB.iter().enumerate() {
        for &w in domain.iter().chain([&unseen[d]]) {
            words.push(w.to_owned());
            let mut v = [0.0f32; 4];
            v[d] = 1.0;
            vectors.extend_from_slice(&v);
        }
    }
    for &w in &FILLER {
        words.push(w.to_owned());
        vectors.extend_from_slice(&[0.0, 0.0, 0.0, 1.0]);
    }
    let vectors = train::WordVectors::new(spec, &words, &vectors, 4, 1.0).unwrap();
    (vectors, unseen)
}

#[test]
fn word_vectors_carry_labels_to_words_never_seen_in_training() {
    let options = TrainOptions {
        epochs: 5,
        learning_rate: 0.5,
        spec: FeatureSpec {
            char_min: 0,
            char_max: 0,
            ..small_spec()
        },
        ..TrainOptions::default()
    };
    let rows = synthetic(7, 300);
    let examples: Vec<Example> = rows
        .iter()
        .map(|(text, t)| Example::new(&options.spec, text, *t, false))
        .collect();
    let (vectors, unseen) = toy_vectors(&options.spec);
    assert_eq!(
        vectors.len(),
        3 * 8 + FILLER.len(),
        "one bucket a word here"
    );
    let labels = || {
        (
            DOMAINS.map(str::to_owned).to_vec(),
            data::TASKS.map(str::to_owned).to_vec(),
        )
    };
    let train_with = |v: Option<&train::WordVectors>| {
        let (domains, tasks) = labels();
        LinearClassifier::new(train::train(
            &examples,
            domains,
            tasks,
            v,
            &options,
            &mut |_, _| {},
        ))
    };
    let with = train_with(Some(&vectors));
    let without = train_with(None);
    for (d, word) in unseen.iter().enumerate() {
        let c = with.classify(&Prompt::user(word));
        assert_eq!(c.label, Label(d as u16), "{word}: {c:?}");
        assert!(c.confidence > 0.5, "{word}: {}", c.confidence);
        let blind = without.classify(&Prompt::user(word));
        assert!(
            blind.confidence < 0.5,
            "{word} without vectors: {}",
            blind.confidence
        );
    }
    // The fold keeps what training learned on seen words.
    let seen = with.classify(&Prompt::user("the telescope and the comet"));
    assert_eq!(seen.label, Label(0));
}

#[test]
fn spearman_by_hand() {
    let up = [(0.1, 1.0), (0.2, 2.0), (0.3, 3.0), (0.4, 4.0)];
    assert!((metrics::spearman(&up).unwrap() - 1.0).abs() < 1e-9);
    let down: Vec<(f32, f32)> = up.iter().map(|&(s, l)| (-s, l)).collect();
    assert!((metrics::spearman(&down).unwrap() + 1.0).abs() < 1e-9);
    // Ties share their mean rank: ranks (0.5, 0.5, 2) against (0, 1, 2).
    let tied = [(1.0, 1.0), (1.0, 2.0), (2.0, 3.0)];
    assert!((metrics::spearman(&tied).unwrap() - 0.866_025_4).abs() < 1e-6);
    assert_eq!(
        metrics::spearman(&[(1.0, 1.0), (2.0, 1.0)]),
        None,
        "constant level"
    );
    assert_eq!(metrics::spearman(&[(1.0, 1.0)]), None);
}

/// Rows whose outcome follows only how many numbers they hold: "only the strong model"
/// with many numbers, "both" with none; every row is complexity-only.
fn numeric_rows(spec: &FeatureSpec) -> Vec<Example> {
    let mut rng = Rng::new(3);
    (0..400)
        .map(|i| {
            let hard = i % 2 == 0;
            let mut text = sentence(&mut rng, i % 3, false);
            if hard {
                text.push_str(" with 12 and 345 and 6.7 and 89 and 10");
            }
            let targets = Targets {
                domain: Some(i % 3),
                task: Some(3),
                outcome: Some(if hard { 2 } else { 3 }),
            };
            let mut e = Example::new(spec, &text, targets, false);
            e.complexity_only = true;
            e
        })
        .collect()
}

#[test]
fn complexity_only_outcomes_teach_the_residual_pass_and_nothing_else() {
    let base = TrainOptions {
        epochs: 3,
        learning_rate: 0.5,
        spec: small_spec(),
        ..TrainOptions::default()
    };
    let examples = numeric_rows(&base.spec);
    let train_with = |options: &TrainOptions| {
        let domains = DOMAINS.map(str::to_owned).to_vec();
        let tasks = data::TASKS.map(str::to_owned).to_vec();
        LinearClassifier::new(train::train(
            &examples,
            domains,
            tasks,
            None,
            options,
            &mut |_, _| {},
        ))
    };
    let numbers = Prompt::user("the comet and 11 and 222 and 3.5 and 44 and 5");
    let plain = Prompt::user("the comet and the orbit of the planet");
    // Without the residual pass the frontier head learns nothing from these rows.
    let joint = train_with(&base);
    let (a, b) = (
        joint.classify(&numbers).difficulty,
        joint.classify(&plain).difficulty,
    );
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    // The residual pass learns that numbers make a prompt hard.
    let residual = train_with(&TrainOptions {
        residual_epochs: 5,
        residual_rate: 0.5,
        ..base
    });
    let (a, b) = (
        residual.classify(&numbers).difficulty,
        residual.classify(&plain).difficulty,
    );
    assert!(a > b + 0.2, "{a} vs {b}");
}

#[test]
fn runs_from_several_seeds_average_their_weights() {
    let base = TrainOptions {
        epochs: 2,
        learning_rate: 0.5,
        residual_epochs: 1,
        spec: small_spec(),
        ..TrainOptions::default()
    };
    let examples: Vec<Example> = synthetic(5, 300)
        .iter()
        .enumerate()
        .map(|(i, (text, t))| Example::new(&base.spec, text, *t, i % 10 == 0))
        .collect();
    let train_with = |seed: u64, seeds: usize| {
        train::train(
            &examples,
            DOMAINS.map(str::to_owned).to_vec(),
            data::TASKS.map(str::to_owned).to_vec(),
            None,
            &TrainOptions {
                seed,
                seeds,
                ..base
            },
            &mut |_, _| {},
        )
    };
    let (one, two, both) = (train_with(1, 1), train_with(2, 1), train_with(1, 2));
    assert_ne!(one.bias, two.bias, "the seeds give different runs");
    let mean = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a + b) / 2.0).collect();
    let close = |a: &[f32], b: &Vec<f32>| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5);
    assert!(close(&both.bias, &mean(&one.bias, &two.bias)));
    assert!(close(&both.dense, &mean(&one.dense, &two.dense)));
    // The temperatures are fitted again, for the averaged logits.
    assert!(both.temperatures.iter().all(|t| t.is_finite() && *t > 0.0));
    assert_ne!(
        both.temperatures.to_vec(),
        mean(&one.temperatures, &two.temperatures),
        "fitted for the mean logits, not the runs' temperatures averaged"
    );
    // The n-gram rows too (quantized: compared through the n-gram part of the scores,
    // the models' biases and dense weights set aside), on a prompt the runs score apart.
    let prompt = Prompt::user("the court and the contract of the plaintiff");
    let ngrams = |m: &LinearModel| {
        let rows_only = LinearModel {
            bias: vec![0.0; m.stride()],
            dense: vec![0.0; m.dense.len()],
            ..m.clone()
        };
        let mut out = [0.0; MAX_OUTPUTS];
        rows_only.logits(&prompt, &Features::extract(&prompt), &mut out);
        out[..m.stride()].to_vec()
    };
    let (a, b) = (ngrams(&one), ngrams(&two));
    let apart = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        apart > 0.05,
        "the runs score the prompt alike: {a:?} vs {b:?}"
    );
    // Either run's rows alone would be apart / 2 from the mean somewhere.
    let expected = mean(&a, &b);
    let got = ngrams(&both);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < apart / 4.0, "{got:?} vs {expected:?}");
    }
}
