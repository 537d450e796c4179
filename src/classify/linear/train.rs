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
    /// What the frontier head keeps of its n-gram weights after the joint run: the
    /// topic rates those weights learn vary from word to word within one kind of task,
    /// and drown the complexity signals on a dataset of one topic.
    pub topic_scale: f32,
    /// Epochs of the residual pass (0: none): the frontier head's weights on the dense
    /// signals refitted on each row's own outcome, everything else fixed.
    pub residual_epochs: usize,
    /// Whether each source (data file) learns its own frontier outcome offset while
    /// training (see [`Example::source`]).
    pub source_offsets: bool,
    /// The residual pass's learning rate and L2 penalty.
    pub residual_rate: f32,
    pub residual_l2: f32,
    /// How many runs, from seeds `seed`, `seed + 1`, …, whose weights are averaged:
    /// the model of the mean weights scores each prompt with the mean of the runs'
    /// logits, an ensemble that costs one model to serve.
    pub seeds: usize,
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
            topic_scale: 1.0,
            residual_epochs: 0,
            source_offsets: false,
            residual_rate: 0.1,
            residual_l2: 0.0,
            seeds: 1,
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
    /// Which source (data file) the row's outcome comes from: each pair of models has
    /// its own outcome rates, learned as an offset of the source while training and
    /// left out of the model, so words learn contrasts within a source rather than
    /// which source they come from.
    pub source: usize,
    /// The row's outcome teaches only the complexity weights (the residual pass), not
    /// the topic weights: for graded outcomes (MATH's levels) whose topic is one word
    /// list, where topic weights would learn that a whole subject is hard.
    pub complexity_only: bool,
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
            source: 0,
            complexity_only: false,
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
            Head::Frontier => self.targets.outcome.filter(|_| !self.complexity_only),
        }
    }
}

/// Static word vectors (distilled from a sentence encoder, see `scripts/distill/`) by
/// hashed word bucket. Training learns a projection from the tf-idf-weighted sum of a
/// prompt's word vectors to the outputs; since that sum is linear in the features, the
/// projection is folded into each word's own weight row at the end, and classification
/// costs nothing more. Words never seen in a labelled row still get a row from their
/// vector: that is what carries the encoder's knowledge to unseen phrasing.
#[derive(Clone, Debug, Default)]
pub struct WordVectors {
    dims: usize,
    /// Bucket → index of its vector (the mean of the words hashed into it).
    index: std::collections::HashMap<u32, usize>,
    vectors: Vec<f32>,
}

/// Word vectors whose float count is not `dims` per word.
#[derive(Debug, thiserror::Error)]
#[error("{words} words but {floats} floats: not {dims} per word")]
pub struct VectorShapeError {
    words: usize,
    floats: usize,
    dims: usize,
}

impl WordVectors {
    /// Hashes each word as the walker hashes a lone word, averaging the vectors of
    /// words that share a bucket; `vectors` holds `dims` floats per word, and every
    /// vector is centred on the mean and scaled by `scale`.
    pub fn new(
        spec: &FeatureSpec,
        words: &[String],
        vectors: &[f32],
        dims: usize,
        scale: f32,
    ) -> Result<Self, VectorShapeError> {
        if dims == 0 || vectors.len() != words.len() * dims {
            return Err(VectorShapeError {
                words: words.len(),
                floats: vectors.len(),
                dims,
            });
        }
        // Centred: the encoder's token vectors share one large common direction, which
        // says nothing about a prompt and would swamp the step size.
        let mut mean = vec![0.0f32; dims];
        for vector in vectors.chunks_exact(dims) {
            mean.iter_mut().zip(vector).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut()
            .for_each(|m| *m /= words.len().max(1) as f32);
        let mut index = std::collections::HashMap::new();
        let mut sums: Vec<f32> = Vec::new();
        let mut counts: Vec<f32> = Vec::new();
        for (word, vector) in words.iter().zip(vectors.chunks_exact(dims)) {
            let mut unigram = None;
            ngrams::for_each_feature(spec, &Prompt::user(word), |b, _, kind| {
                if kind == ngrams::Kind::Words {
                    unigram.get_or_insert(b as u32);
                }
            });
            let Some(bucket) = unigram else { continue };
            let at = *index.entry(bucket).or_insert_with(|| {
                sums.resize(sums.len() + dims, 0.0);
                counts.push(0.0);
                counts.len() - 1
            });
            for ((s, v), m) in sums[at * dims..(at + 1) * dims]
                .iter_mut()
                .zip(vector)
                .zip(&mean)
            {
                *s += (v - m) * scale;
            }
            counts[at] += 1.0;
        }
        for (sum, n) in sums.chunks_exact_mut(dims).zip(&counts) {
            sum.iter_mut().for_each(|s| *s /= n);
        }
        Ok(WordVectors {
            dims,
            index,
            vectors: sums,
        })
    }

    /// Buckets that have a vector.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn vector(&self, bucket: u32) -> Option<&[f32]> {
        let at = *self.index.get(&bucket)?;
        self.vectors.get(at * self.dims..(at + 1) * self.dims)
    }

    /// The sum of the vectors of `buckets`, each times its tf-idf value.
    fn embed(&self, buckets: &[u32], values: &[f32]) -> Vec<f32> {
        let mut sum = vec![0.0; self.dims];
        for (&b, &v) in buckets.iter().zip(values) {
            if let Some(vector) = self.vector(b) {
                sum.iter_mut().zip(vector).for_each(|(s, x)| *s += v * x);
            }
        }
        sum
    }
}

/// What one example feeds the weights: its unit-length tf-idf values (one per bucket)
/// and the tf-idf-weighted sum of its word vectors (empty without word vectors).
struct Inputs {
    values: Vec<f32>,
    embedded: Vec<f32>,
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
    /// One row of `stride()` weights per word-vector dimension, row-major (empty
    /// without word vectors); folded into `rows` when training ends.
    projection: Vec<f32>,
    /// The frontier outcomes' offset of each source (see [`Example::source`]), used
    /// only while training.
    source_bias: Vec<[f32; 4]>,
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
            projection: Vec::new(),
            source_bias: Vec::new(),
        }
    }

    fn stride(&self) -> usize {
        self.domains + self.tasks + OUTCOMES.len()
    }

    /// The parameters a run learns and [`train`] averages over runs: the rows, the
    /// biases and the word-vector projection.
    fn learned(&mut self) -> impl Iterator<Item = &mut f32> {
        self.rows
            .iter_mut()
            .chain(&mut self.bias)
            .chain(&mut self.projection)
    }

    /// Adds another run's learned parameters to these.
    fn add(&mut self, other: &Weights) {
        let theirs = other
            .rows
            .iter()
            .chain(&other.bias)
            .chain(&other.projection);
        self.learned().zip(theirs).for_each(|(a, b)| *a += b);
    }

    /// Multiplies the learned parameters by `factor`.
    fn scale(&mut self, factor: f32) {
        self.learned().for_each(|w| *w *= factor);
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
    vectors: Option<&WordVectors>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> LinearModel {
    let mut model = Weights::zeros(&options.spec, domains.len(), tasks.len());
    model.idf = inverse_document_frequency(examples, model.buckets);
    if let Some(v) = vectors {
        model.projection = vec![0.0; v.dims * model.stride()];
    }
    if options.source_offsets {
        let sources = examples.iter().map(|e| e.source + 1).max().unwrap_or(0);
        model.source_bias = vec![[0.0; 4]; sources];
    }
    let values: Vec<Inputs> = examples
        .iter()
        .map(|e| {
            let values = e.values(&model.idf);
            let embedded = vectors.map_or_else(Vec::new, |v| v.embed(&e.buckets, &values));
            Inputs { values, embedded }
        })
        .collect();
    // Each run's held-back model (trained without the calibration rows) and its final
    // one are summed over the runs; the temperatures are fitted once, on the mean of
    // the held-back models, so they calibrate the averaged logits.
    let runs = options.seeds.max(1);
    let run = |r: usize, progress: &mut dyn FnMut(usize, usize)| {
        let options = TrainOptions {
            seed: options.seed.wrapping_add(r as u64),
            ..*options
        };
        fit(
            model.clone(),
            examples,
            &values,
            &options,
            &mut |done, all| progress(r * all + done, runs * all),
        )
    };
    let (mut held_back, mut sum) = run(0, progress);
    for r in 1..runs {
        let (first, last) = run(r, progress);
        if let (Some(h), Some(f)) = (held_back.as_mut(), first.as_ref()) {
            h.add(f);
        }
        sum.add(&last);
    }
    if runs > 1 {
        let factor = 1.0 / runs as f32;
        sum.scale(factor);
        if let Some(h) = held_back.as_mut() {
            h.scale(factor);
        }
    }
    let mut model = sum;
    if let Some(h) = &held_back {
        model.temperatures = fit_temperatures(h, examples, &values);
    }
    if let Some(v) = vectors {
        fold_projection(&mut model, v);
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

/// One training run from `model` (zero weights, the idf and the shapes set): the joint
/// SGD run, then the complexity pass. With calibration rows present, a first model
/// learns without them (returned first: the temperatures are fitted on it), and the
/// final one from every row.
fn fit(
    mut model: Weights,
    examples: &[Example],
    values: &[Inputs],
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> (Option<Weights>, Weights) {
    let held_back = examples.iter().filter(|e| e.calibration).count();
    let first_steps = (examples.len() - held_back) * options.epochs;
    let all_steps = examples.len() * options.epochs;
    let offset = if held_back > 0 { first_steps } else { 0 };
    let total = offset + all_steps;
    let first = (held_back > 0).then(|| {
        let mut first = model.clone();
        sgd(&mut first, examples, values, false, options, &mut |done| {
            progress(done, total)
        });
        fit_complexity(&mut first, examples, values, false, options);
        first
    });
    sgd(&mut model, examples, values, true, options, &mut |done| {
        progress(offset + done, total)
    });
    fit_complexity(&mut model, examples, values, true, options);
    (first, model)
}

/// Adds each word vector's projection into its bucket's row: afterwards the rows alone
/// give the same scores as rows plus projected vectors did in training.
fn fold_projection(model: &mut Weights, vectors: &WordVectors) {
    let stride = model.stride();
    for (&bucket, &at) in &vectors.index {
        let vector = &vectors.vectors[at * vectors.dims..(at + 1) * vectors.dims];
        let row = &mut model.rows[bucket as usize * stride..(bucket as usize + 1) * stride];
        for (&x, p) in vector.iter().zip(model.projection.chunks_exact(stride)) {
            row.iter_mut().zip(p).for_each(|(w, p)| *w += x * p);
        }
    }
    model.projection.clear();
}

/// Epochs of stochastic gradient descent over the examples (the calibration rows only
/// when `with_calibration`), with the learning rate decaying linearly to zero.
fn sgd(
    model: &mut Weights,
    examples: &[Example],
    inputs: &[Inputs],
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
    let frontier = model.range(Head::Frontier);
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
            scores(model, e, &inputs[i], &mut z);
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
            for (&b, &v) in e.buckets.iter().zip(&inputs[i].values) {
                update(b as usize, v);
            }
            for (&x, p) in inputs[i]
                .embedded
                .iter()
                .zip(model.projection.chunks_exact_mut(stride))
            {
                for (p, g) in p.iter_mut().zip(&grad) {
                    *p = *p * decay - g * x;
                }
            }
            for (j, &d) in e.dense.iter().enumerate().take(ngrams::COMPLEXITY) {
                if d != 0.0 {
                    update(buckets + j, d);
                }
            }
            // The complexity signals feed the frontier head only.
            for (j, &d) in e.dense.iter().enumerate().skip(ngrams::COMPLEXITY) {
                if d != 0.0 {
                    let row = buckets + j;
                    let w = &mut model.rows[row * stride..(row + 1) * stride];
                    for (w, g) in w[frontier.clone()].iter_mut().zip(&grad[frontier.clone()]) {
                        *w = *w * decay - g * d;
                    }
                }
            }
            for (b, g) in model.bias.iter_mut().zip(&grad) {
                *b -= g;
            }
            if let Some(offset) = model.source_bias.get_mut(e.source) {
                offset
                    .iter_mut()
                    .zip(&grad[frontier.clone()])
                    .for_each(|(o, g)| *o -= g);
            }
        }
    }
    progress(total);
}

/// Splits the frontier head into topic and complexity: scales its n-gram weights by
/// [`TrainOptions::topic_scale`], then refits its weights on the dense signals (and its
/// bias) to each row's own outcome, with the scaled topic part as a fixed offset. The
/// joint run learns from outcomes smoothed over a subject; this pass learns what the
/// question itself adds, from signals that mean the same on any dataset.
fn fit_complexity(
    model: &mut Weights,
    examples: &[Example],
    inputs: &[Inputs],
    with_calibration: bool,
    options: &TrainOptions,
) {
    let stride = model.stride();
    let frontier = model.range(Head::Frontier);
    if options.topic_scale != 1.0 {
        for row in model.rows[..model.buckets * stride].chunks_exact_mut(stride) {
            row[frontier.clone()]
                .iter_mut()
                .for_each(|w| *w *= options.topic_scale);
        }
    }
    if options.residual_epochs == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].targets.outcome.is_some())
        .filter(|&i| with_calibration || !examples[i].calibration)
        .collect();
    let total = order.len() * options.residual_epochs;
    let mut rng = Rng::new(options.seed ^ 0x5eed);
    let mut z = vec![0.0f32; stride];
    let mut step = 0;
    let buckets = model.buckets;
    for _ in 0..options.residual_epochs {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = &examples[i];
            let Some(t) = e.targets.outcome else { continue };
            let lr = options.residual_rate * (1.0 - step as f32 / total as f32);
            step += 1;
            scores(model, e, &inputs[i], &mut z);
            let g = &mut z[frontier.clone()];
            softmax(g, 1.0);
            if let Some(g) = g.get_mut(t) {
                *g -= 1.0;
            }
            let decay = 1.0 - lr * options.residual_l2;
            for (j, &d) in e.dense.iter().enumerate() {
                let row = &mut model.rows[(buckets + j) * stride..(buckets + j + 1) * stride];
                for (w, g) in row[frontier.clone()].iter_mut().zip(&z[frontier.clone()]) {
                    *w = *w * decay - lr * g * d;
                }
            }
            for (b, g) in model.bias[frontier.clone()]
                .iter_mut()
                .zip(&z[frontier.clone()])
            {
                *b -= lr * g;
            }
            if let Some(offset) = model.source_bias.get_mut(e.source) {
                offset
                    .iter_mut()
                    .zip(&z[frontier.clone()])
                    .for_each(|(o, g)| *o -= lr * g);
            }
        }
    }
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
fn scores(model: &Weights, e: &Example, inputs: &Inputs, z: &mut [f32]) {
    let stride = model.stride();
    z.copy_from_slice(&model.bias);
    if let Some(offset) = model.source_bias.get(e.source) {
        let frontier = model.range(Head::Frontier);
        z[frontier]
            .iter_mut()
            .zip(offset)
            .for_each(|(z, o)| *z += o);
    }
    for (&x, p) in inputs
        .embedded
        .iter()
        .zip(model.projection.chunks_exact(stride))
    {
        z.iter_mut().zip(p).for_each(|(z, p)| *z += x * p);
    }
    for (&b, &v) in e.buckets.iter().zip(&inputs.values) {
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
fn fit_temperatures(model: &Weights, examples: &[Example], inputs: &[Inputs]) -> [f32; 3] {
    let mut z = vec![0.0f32; model.stride()];
    let mut per_head: [Vec<(Vec<f32>, usize)>; 3] = Default::default();
    for (e, inputs) in examples.iter().zip(inputs).filter(|(e, _)| e.calibration) {
        scores(model, e, inputs, &mut z);
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
