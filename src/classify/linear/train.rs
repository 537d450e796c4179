//! Training: stochastic gradient descent on the summed cross-entropy of the three heads,
//! fastText-style (shuffled rows, learning rate decaying linearly to zero), then one
//! softmax temperature per head fitted on held-back rows so the probabilities are
//! calibrated. Single-threaded and seeded: the same rows and seed give the same bytes.

use super::data::Targets;
use super::ngrams::{self, DENSE, FeatureSpec};
use super::{Head, LinearModel, OUTCOMES, head_range, softmax};
use crate::classify::{Features, Prompt};

/// Settings of one training run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    pub seed: u64,
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty per step, applied to the rows a step touches.
    pub l2: f32,
    /// The frontier head's learning rate relative to the others: its outcomes are
    /// noisy, and it overfits long before the domain head has converged.
    pub frontier_rate: f32,
    pub spec: FeatureSpec,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 1,
            epochs: 30,
            learning_rate: 2.0,
            l2: 0.0,
            frontier_rate: 0.5,
            spec: FeatureSpec::default(),
        }
    }
}

/// One row ready for training: its features (n-gram counts by bucket, dense signals)
/// and targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub buckets: Vec<u32>,
    /// Weighted occurrence counts; [`train`] turns them into unit-length tf-idf.
    pub counts: Vec<f32>,
    /// Sums of the squared occurrence weights: the feature vector's length is taken
    /// over occurrences, as classification (which never merges them) computes it.
    pub squares: Vec<f32>,
    pub dense: [f32; DENSE],
    pub targets: Targets,
    /// Held back from the gradient to fit the temperatures.
    pub calibration: bool,
    /// The frontier head's target distribution, when it is softer than the row's own
    /// outcome (see [`smooth_outcomes`]).
    pub soft_outcome: Option<[f32; 4]>,
}

impl Example {
    /// Featurizes `text` as a single user message, exactly as classification does.
    pub fn new(spec: &FeatureSpec, text: &str, targets: Targets, calibration: bool) -> Self {
        let prompt = Prompt::user(text);
        let features = Features::extract(&prompt);
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        ngrams::for_each_feature(spec, &prompt, |b, units, _| {
            pairs.push((b as u32, units as f32 / ngrams::WEIGHT_UNITS))
        });
        pairs.sort_unstable_by_key(|p| p.0);
        let mut buckets: Vec<u32> = Vec::with_capacity(pairs.len());
        let mut counts: Vec<f32> = Vec::with_capacity(pairs.len());
        let mut squares: Vec<f32> = Vec::with_capacity(pairs.len());
        for (b, w) in pairs {
            if buckets.last() == Some(&b) {
                if let (Some(c), Some(s)) = (counts.last_mut(), squares.last_mut()) {
                    *c += w;
                    *s += w * w;
                }
            } else {
                buckets.push(b);
                counts.push(w);
                squares.push(w * w);
            }
        }
        Example {
            buckets,
            counts,
            squares,
            dense: ngrams::dense(&features),
            targets,
            calibration,
            soft_outcome: None,
        }
    }

    /// The unit-length tf-idf values of the buckets.
    fn values(&self, idf: &[f32]) -> Vec<f32> {
        let idf_of = |b: u32| idf.get(b as usize).copied().unwrap_or(1.0);
        let norm: f32 = self
            .buckets
            .iter()
            .zip(&self.squares)
            .map(|(&b, s)| s * idf_of(b) * idf_of(b))
            .sum();
        let scale = if norm > 0.0 { norm.sqrt().recip() } else { 0.0 };
        self.buckets
            .iter()
            .zip(&self.counts)
            .map(|(&b, c)| c * idf_of(b) * scale)
            .collect()
    }

    fn target(&self, head: Head) -> Option<usize> {
        match head {
            Head::Domain => self.targets.domain,
            Head::Task => self.targets.task,
            Head::Frontier => self.targets.outcome,
        }
    }
}

/// A small, seeded generator (SplitMix64) for the shuffles.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Per-class loss weights that make every class of a head count as much in total
/// (the frontier head keeps its natural outcome rates: its probabilities are used as
/// they are).
fn class_weights(
    model: &Weights,
    examples: &[Example],
    head: Head,
    used: &dyn Fn(&Example) -> bool,
) -> Vec<f32> {
    let k = model.range(head).len();
    if head == Head::Frontier {
        return vec![1.0; k];
    }
    let mut counts = vec![0usize; k];
    for e in examples.iter().filter(|e| used(e)) {
        if let Some(t) = e.target(head).filter(|&t| t < k) {
            counts[t] += 1;
        }
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let total: usize = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                total as f32 / (present * c) as f32
            }
        })
        .collect()
}

/// The parameters while training: full precision, quantized into a [`LinearModel`]
/// at the end.
#[derive(Clone, Debug)]
struct Weights {
    domains: usize,
    tasks: usize,
    buckets: usize,
    temperatures: [f32; 3],
    idf: Vec<f32>,
    /// `buckets + DENSE` rows of `stride()` weights, row-major.
    rows: Vec<f32>,
    bias: Vec<f32>,
}

impl Weights {
    fn zeros(spec: &FeatureSpec, domains: usize, tasks: usize) -> Self {
        let stride = domains + tasks + OUTCOMES.len();
        Weights {
            domains,
            tasks,
            buckets: spec.buckets(),
            temperatures: [1.0; 3],
            idf: vec![1.0; spec.buckets()],
            rows: vec![0.0; spec.rows() * stride],
            bias: vec![0.0; stride],
        }
    }

    fn stride(&self) -> usize {
        self.domains + self.tasks + OUTCOMES.len()
    }

    fn range(&self, head: Head) -> std::ops::Range<usize> {
        head_range(self.domains, self.tasks, head)
    }
}

/// Trains a model; `progress(done, total)` is called now and then with the steps done.
///
/// With calibration rows present, a first run learns without them and fits the
/// temperatures on them; the final run then learns from every row and keeps those
/// temperatures.
pub fn train(
    examples: &[Example],
    domains: Vec<String>,
    tasks: Vec<String>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> LinearModel {
    let mut model = Weights::zeros(&options.spec, domains.len(), tasks.len());
    model.idf = inverse_document_frequency(examples, model.buckets);
    let values: Vec<Vec<f32>> = examples.iter().map(|e| e.values(&model.idf)).collect();
    let calibrating = examples.iter().any(|e| e.calibration);
    let held_back = examples.iter().filter(|e| e.calibration).count();
    let first_steps = (examples.len() - held_back) * options.epochs;
    let all_steps = examples.len() * options.epochs;
    if calibrating {
        let total = first_steps + all_steps;
        let mut first = model.clone();
        sgd(&mut first, examples, &values, false, options, &mut |done| {
            progress(done, total)
        });
        model.temperatures = fit_temperatures(&first, examples, &values);
        sgd(&mut model, examples, &values, true, options, &mut |done| {
            progress(first_steps + done, total)
        });
    } else {
        sgd(&mut model, examples, &values, true, options, &mut |done| {
            progress(done, all_steps)
        });
    }
    LinearModel::from_weights(
        options.spec,
        domains,
        tasks,
        model.temperatures,
        &model.rows,
        &model.idf,
        model.bias,
    )
}

/// Epochs of stochastic gradient descent over the examples (the calibration rows only
/// when `with_calibration`), with the learning rate decaying linearly to zero.
fn sgd(
    model: &mut Weights,
    examples: &[Example],
    values: &[Vec<f32>],
    with_calibration: bool,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize),
) {
    let stride = model.stride();
    let buckets = model.buckets;
    let used = |e: &Example| with_calibration || !e.calibration;
    let weights: Vec<(Head, Vec<f32>)> = Head::ALL
        .into_iter()
        .map(|h| (h, class_weights(model, examples, h, &used)))
        .collect();
    let ranges = Head::ALL.map(|h| model.range(h));
    let mut order: Vec<usize> = (0..examples.len())
        .filter(|&i| used(&examples[i]))
        .collect();
    let total = order.len() * options.epochs;
    let mut rng = Rng::new(options.seed);
    let mut z = vec![0.0f32; stride];
    let mut grad = vec![0.0f32; stride];
    let mut step = 0;
    for _ in 0..options.epochs {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = &examples[i];
            let lr = options.learning_rate * (1.0 - step as f32 / total as f32);
            step += 1;
            if step % 4096 == 0 {
                progress(step);
            }
            scores(model, e, &values[i], &mut z);
            grad.fill(0.0);
            let mut any = false;
            for (h, (head, class_weight)) in weights.iter().enumerate() {
                let Some(t) = e.target(*head) else { continue };
                let range = ranges[h].clone();
                let Some(&cw) = class_weight.get(t) else {
                    continue;
                };
                let g = &mut grad[range.clone()];
                g.copy_from_slice(&z[range]);
                softmax(g, 1.0);
                match e.soft_outcome.filter(|_| *head == Head::Frontier) {
                    Some(q) => g.iter_mut().zip(q).for_each(|(g, q)| *g -= q),
                    None => g[t] -= 1.0,
                }
                let rate = if *head == Head::Frontier {
                    lr * options.frontier_rate
                } else {
                    lr
                };
                for v in g.iter_mut() {
                    *v *= cw * rate;
                }
                any = true;
            }
            if !any {
                continue;
            }
            let decay = 1.0 - lr * options.l2;
            let mut update = |row: usize, x: f32| {
                let w = &mut model.rows[row * stride..(row + 1) * stride];
                for (w, g) in w.iter_mut().zip(&grad) {
                    *w = *w * decay - g * x;
                }
            };
            for (&b, &v) in e.buckets.iter().zip(&values[i]) {
                update(b as usize, v);
            }
            for (j, &d) in e.dense.iter().enumerate() {
                if d != 0.0 {
                    update(buckets + j, d);
                }
            }
            for (b, g) in model.bias.iter_mut().zip(&grad) {
                *b -= g;
            }
        }
    }
    progress(total);
}

/// Softens the outcome targets: one question's outcome is a noisy draw, the outcome
/// rates of its group (an MMLU subject, a domain) are not. Each row with an outcome and
/// a group learns `keep × its own outcome + (1 − keep) × its group's outcome rates`,
/// the rates taken over the rows used for the gradient.
pub fn smooth_outcomes(examples: &mut [Example], groups: &[Option<String>], keep: f32) {
    use std::collections::HashMap;
    let mut rates: HashMap<&str, [f32; 4]> = HashMap::new();
    for (e, g) in examples.iter().zip(groups) {
        if let (Some(o), Some(g)) = (e.targets.outcome, g.as_deref())
            && !e.calibration
        {
            rates.entry(g).or_insert([0.0; 4])[o.min(3)] += 1.0;
        }
    }
    for r in rates.values_mut() {
        let n: f32 = r.iter().sum();
        r.iter_mut().for_each(|v| *v /= n);
    }
    for (e, g) in examples.iter_mut().zip(groups) {
        if let (Some(o), Some(rate)) = (e.targets.outcome, g.as_deref().and_then(|g| rates.get(g)))
        {
            let mut q = rate.map(|r| (1.0 - keep) * r);
            q[o.min(3)] += keep;
            e.soft_outcome = Some(q);
        }
    }
}

/// Smoothed inverse document frequency of each bucket over the rows:
/// `ln((1 + n) / (1 + df)) + 1`.
fn inverse_document_frequency(examples: &[Example], buckets: usize) -> Vec<f32> {
    let mut df = vec![0u32; buckets];
    let mut n = 0u32;
    for e in examples {
        n += 1;
        for &b in &e.buckets {
            if let Some(d) = df.get_mut(b as usize) {
                *d += 1;
            }
        }
    }
    df.iter()
        .map(|&d| ((1.0 + n as f32) / (1.0 + d as f32)).ln() + 1.0)
        .collect()
}

/// Logits of one example under the current weights.
fn scores(model: &Weights, e: &Example, values: &[f32], z: &mut [f32]) {
    let stride = model.stride();
    z.copy_from_slice(&model.bias);
    for (&b, &v) in e.buckets.iter().zip(values) {
        let row = &model.rows[b as usize * stride..(b as usize + 1) * stride];
        for (z, w) in z.iter_mut().zip(row) {
            *z += w * v;
        }
    }
    let buckets = model.buckets;
    for (j, &d) in e.dense.iter().enumerate() {
        let row = &model.rows[(buckets + j) * stride..(buckets + j + 1) * stride];
        for (z, w) in z.iter_mut().zip(row) {
            *z += w * d;
        }
    }
}

/// For each head, the temperature minimizing the negative log-likelihood of the
/// calibration rows (1 when there are none).
fn fit_temperatures(model: &Weights, examples: &[Example], values: &[Vec<f32>]) -> [f32; 3] {
    let mut z = vec![0.0f32; model.stride()];
    let mut per_head: [Vec<(Vec<f32>, usize)>; 3] = Default::default();
    for (e, values) in examples.iter().zip(values).filter(|(e, _)| e.calibration) {
        scores(model, e, values, &mut z);
        for (h, head) in Head::ALL.into_iter().enumerate() {
            if let Some(t) = e.target(head) {
                per_head[h].push((z[model.range(head)].to_vec(), t));
            }
        }
    }
    per_head.map(|rows| {
        if rows.is_empty() {
            return 1.0;
        }
        let nll = |t: f32| -> f64 {
            let mut p = Vec::new();
            rows.iter()
                .map(|(logits, target)| {
                    p.clear();
                    p.extend_from_slice(logits);
                    softmax(&mut p, t);
                    -f64::from(p.get(*target).copied().unwrap_or(0.0).max(1e-12)).ln()
                })
                .sum()
        };
        // Golden-section search on log(T) over [1/20, 20].
        let (mut lo, mut hi) = ((0.05f32).ln(), (20.0f32).ln());
        let phi = 0.618_034_f32;
        for _ in 0..40 {
            let a = hi - phi * (hi - lo);
            let b = lo + phi * (hi - lo);
            if nll(a.exp()) < nll(b.exp()) {
                hi = b;
            } else {
                lo = a;
            }
        }
        ((lo + hi) / 2.0).exp()
    })
}
