//! The learned classifier: a multinomial logistic regression over hashed word and
//! character n-grams plus structural signals, with three heads sharing one weight row
//! per feature:
//!
//! 1. **domain**: calibrated probabilities over subject domains (the 14 MMLU-Pro
//!    categories in the shipped model);
//! 2. **task**: the kind of work asked for (coding, math, creative writing, other);
//! 3. **frontier need**: a softmax over the four outcomes of asking a weak and a strong
//!    model (neither right, weak only, strong only, both); the difficulty is the
//!    probability that only the strong model gets it right.
//!
//! Classification walks the text for n-grams (see [`ngrams`]), adding the weight rows
//! of each block of features into integer sums on the stack: no allocation, no lock.
//! Training ([`train`]) and the file format ([`format`]) live beside it; [`metrics`]
//! holds the evaluation arithmetic (F1, APGR, CPT) used by `crossroads eval`.

pub mod data;
pub mod format;
pub mod metrics;
pub mod ngrams;
pub mod table;
pub mod train;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use format::LoadError;
pub use ngrams::FeatureSpec;
use table::RowSums;
pub use table::Table;

use super::{Classification, Classifier, Features, Label, LabelSet, Prompt};

/// The frontier head's outcomes, indexed by `weak_correct + 2 * strong_correct`.
pub const OUTCOMES: [&str; 4] = ["neither", "weak_only", "strong_only", "both"];

/// Index of the outcome "only the strong model is right".
const STRONG_ONLY: usize = 2;

/// The most outputs (domain + task + outcome labels) a model may have; the classifier
/// accumulates them in a stack array of this size.
pub const MAX_OUTPUTS: usize = 64;

/// Which head a temperature or an output belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Domain,
    Task,
    Frontier,
}

impl Head {
    pub const ALL: [Head; 3] = [Head::Domain, Head::Task, Head::Frontier];

    pub fn as_str(self) -> &'static str {
        match self {
            Head::Domain => "domain",
            Head::Task => "task",
            Head::Frontier => "frontier",
        }
    }
}

/// The trained parameters: what the model file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    pub spec: FeatureSpec,
    pub domains: Vec<String>,
    pub tasks: Vec<String>,
    /// Softmax temperature of each head, fitted on held-back rows (calibration).
    pub temperatures: [f32; 3],
    /// One quantized row per hashed bucket, with the bucket's inverse document
    /// frequency (common n-grams weigh less).
    pub table: Table,
    /// `DENSE` rows of `stride()` weights for the structural signals, row-major.
    pub dense: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

impl LinearModel {
    /// The model of full-precision `weights` (`spec.rows()` rows of `stride`: the
    /// buckets, then the dense signals) and per-bucket `idf`.
    pub fn from_weights(
        spec: FeatureSpec,
        domains: Vec<String>,
        tasks: Vec<String>,
        temperatures: [f32; 3],
        weights: &[f32],
        idf: &[f32],
        bias: Vec<f32>,
    ) -> Self {
        let stride = domains.len() + tasks.len() + OUTCOMES.len();
        let split = (spec.buckets() * stride).min(weights.len());
        LinearModel {
            table: Table::quantize(&weights[..split], idf, stride),
            dense: weights[split..].to_vec(),
            bias,
            spec,
            domains,
            tasks,
            temperatures,
        }
    }

    /// Outputs per feature row.
    pub fn stride(&self) -> usize {
        self.domains.len() + self.tasks.len() + OUTCOMES.len()
    }

    /// The output range of `head` in a row.
    pub fn range(&self, head: Head) -> std::ops::Range<usize> {
        head_range(self.domains.len(), self.tasks.len(), head)
    }

    /// Raw scores (before the per-head softmax) of a prompt whose features are known,
    /// into `out[..stride]`.
    pub fn logits(&self, prompt: &Prompt<'_>, features: &Features, out: &mut [f32]) {
        let stride = self.stride();
        let out = &mut out[..stride];
        let norm = self.ngram_scores(prompt, out);
        // The n-gram vector has unit length; the dense signals are already scaled.
        let scale = if norm > 0.0 { norm.sqrt().recip() } else { 0.0 };
        for (o, b) in out.iter_mut().zip(&self.bias) {
            *o = *o * scale + b;
        }
        for (row, value) in self.dense.chunks_exact(stride).zip(ngrams::dense(features)) {
            for (o, w) in out.iter_mut().zip(row) {
                *o += w * value;
            }
        }
    }

    /// Adds the n-gram rows of `prompt` into `out` (unnormalized) and returns the
    /// squared length of the tf-idf vector.
    fn ngram_scores(&self, prompt: &Prompt<'_>, out: &mut [f32]) -> f32 {
        // The sums are as wide as the row's groups in use; rows are 1 to 3 chunks wide.
        match (self.table.width(), self.table.groups()) {
            (1, ..=3) => self.ngram_scores_in::<1, 3>(prompt, out),
            (1, _) => self.ngram_scores_in::<1, 4>(prompt, out),
            (2, _) => self.ngram_scores_in::<2, 8>(prompt, out),
            _ => self.ngram_scores_in::<3, 12>(prompt, out),
        }
    }

    /// [`Self::ngram_scores`] for rows `W` chunks wide, `G` groups of eight in use.
    ///
    /// The time goes to loading rows from the 8 MB table as much as to adding them. So
    /// each row is prefetched when its feature is hashed, and added with its block of
    /// [`ngrams::BLOCK`] features: its load overlaps the hashing and the other loads in
    /// between (see BENCHMARKS.md). A block's features share one kind and weight.
    fn ngram_scores_in<const W: usize, const G: usize>(
        &self,
        prompt: &Prompt<'_>,
        out: &mut [f32],
    ) -> f32 {
        let table = &self.table;
        let mut scores = Scores::<W, G> {
            table,
            sums: Weighted::default(),
        };
        ngrams::walk(&self.spec, prompt, &mut scores);
        let mut sums = scores.sums;
        sums.finish(table);
        let unit = ngrams::WEIGHT_UNITS.recip();
        let columns = table.columns();
        for ((o, &s), c) in out.iter_mut().zip(&sums.sums).zip(columns) {
            *o = s as f32 * c * unit;
        }
        let idf_squares = columns.get(table.stride()).copied().unwrap_or(0.0);
        sums.norm as f32 * idf_squares * unit * unit
    }

    /// Turns logits into calibrated probabilities, head by head, in place.
    pub fn probabilities(&self, logits: &mut [f32]) {
        for (i, head) in Head::ALL.into_iter().enumerate() {
            softmax(&mut logits[self.range(head)], self.temperatures[i]);
        }
    }

    /// Probabilities of every output for one prompt.
    pub fn predict(&self, prompt: &Prompt<'_>, features: &Features) -> Vec<f32> {
        let mut out = vec![0.0; self.stride()];
        self.logits(prompt, features, &mut out);
        self.probabilities(&mut out);
        out
    }
}

/// The n-gram walk's sink in classification: each row is prefetched as its feature is
/// hashed, and added with its block.
struct Scores<'a, const W: usize, const G: usize> {
    table: &'a Table,
    sums: Weighted<G>,
}

impl<'a, const W: usize, const G: usize> ngrams::Sink for Scores<'a, W, G> {
    type Prefetch = table::Prefetcher<'a, W>;

    fn prefetch(&self) -> Self::Prefetch {
        self.table.prefetcher()
    }

    fn block(&mut self, kind: ngrams::Kind, units: u32, buckets: &[u32]) {
        self.sums.add::<W>(self.table, kind, buckets, units);
    }
}

/// The weighted sum of the rows of a prompt's features. The rows are integers and so is
/// each feature's weight (in [`ngrams::WEIGHT_UNITS`]), so the sums are exact whatever
/// the order.
///
/// Rows of one kind and weight are summed as they come, unweighted, in `i32` lanes;
/// only when the weight changes (a new message), the lanes could overflow, or the walk
/// ends are those sums multiplied by their weight and folded into the `i64` totals.
#[derive(Debug)]
struct Weighted<const G: usize> {
    sums: [i64; MAX_OUTPUTS],
    /// Squared length of the tf-idf vector, in units squared times the idf² column's
    /// scale.
    norm: i64,
    /// For each [`ngrams::Kind`]: the weight (in units) of the rows summed in `open`,
    /// and how many rows that is.
    units: [u32; 2],
    rows: [usize; 2],
    open: [RowSums<G>; 2],
}

/// Rows (each value at most 4095 in size) an `i32` lane holds without overflow.
const MAX_OPEN_ROWS: usize = (i32::MAX / table::MAX_Q as i32) as usize;

impl<const G: usize> Default for Weighted<G> {
    fn default() -> Self {
        Weighted {
            sums: [0; MAX_OUTPUTS],
            norm: 0,
            units: [0; 2],
            rows: [0; 2],
            open: [RowSums::new(); 2],
        }
    }
}

impl<const G: usize> Weighted<G> {
    /// Adds the rows of `buckets`, features of `kind`, each times `units`. (Out of
    /// line: it runs once per block, and the per-feature loop that calls it stays
    /// small.)
    #[inline(never)]
    fn add<const W: usize>(
        &mut self,
        table: &Table,
        kind: ngrams::Kind,
        buckets: &[u32],
        units: u32,
    ) {
        let k = kind as usize;
        if self.units[k] != units {
            self.fold(table, k);
            self.units[k] = units;
        }
        // The walk hands over blocks of at most BLOCK, and a prompt has at most ten
        // features a byte of its first 2 KB, so the lanes never fill in practice.
        for block in buckets.chunks(ngrams::BLOCK) {
            if self.rows[k] + block.len() > MAX_OPEN_ROWS {
                self.fold(table, k);
            }
            self.rows[k] += block.len();
            table.add_rows::<W, G>(block, &mut self.open[k]);
        }
    }

    /// Multiplies the open sums of kind `k` by their weight into the totals.
    fn fold(&mut self, table: &Table, k: usize) {
        let units = i64::from(self.units[k].min(ngrams::MAX_UNITS));
        let stride = table.stride();
        let open = std::mem::replace(&mut self.open[k], RowSums::new());
        self.rows[k] = 0;
        open.for_each_lane(|lane, sum| {
            if let Some(s) = self.sums.get_mut(lane).filter(|_| lane < stride) {
                *s += units * i64::from(sum);
            } else if lane == stride {
                // The idf² lane: the squared length counts each feature's weight twice.
                self.norm += units * units * i64::from(sum);
            }
        });
    }

    /// Folds what is still open; the totals are then complete.
    fn finish(&mut self, table: &Table) {
        self.fold(table, 0);
        self.fold(table, 1);
    }
}

/// The output range of `head` in a row of a model with `domains` and `tasks` labels.
pub fn head_range(domains: usize, tasks: usize, head: Head) -> std::ops::Range<usize> {
    match head {
        Head::Domain => 0..domains,
        Head::Task => domains..domains + tasks,
        Head::Frontier => domains + tasks..domains + tasks + OUTCOMES.len(),
    }
}

/// The frontier-need score from the outcome probabilities.
pub fn frontier_need(outcomes: &[f32]) -> f32 {
    outcomes
        .get(STRONG_ONLY)
        .copied()
        .unwrap_or(0.0)
        .clamp(0.0, 1.0)
}

/// Softmax of `z / temperature`, in place.
pub fn softmax(z: &mut [f32], temperature: f32) {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for v in z.iter_mut() {
        *v = ((*v - max) / t).exp();
        total += *v;
    }
    if total > 0.0 {
        for v in z.iter_mut() {
            *v /= total;
        }
    }
}

/// Index and value of the largest entry (the first one on ties).
pub fn argmax(p: &[f32]) -> (usize, f32) {
    p.iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 { (i, v) } else { best }
        })
}

/// A [`LinearModel`] behind the [`Classifier`] trait.
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    model: LinearModel,
    domains: LabelSet,
    tasks: LabelSet,
}

impl LinearClassifier {
    /// Wraps a trained model.
    pub fn new(model: LinearModel) -> Self {
        LinearClassifier {
            domains: LabelSet::new(model.domains.iter().map(String::as_str)),
            tasks: LabelSet::new(model.tasks.iter().map(String::as_str)),
            model,
        }
    }

    /// Loads a model file written by `crossroads train`; a corrupt, truncated or
    /// foreign file is an error that says what is wrong.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        format::read(path).map(Self::new)
    }

    pub fn model(&self) -> &LinearModel {
        &self.model
    }
}

impl Classifier for LinearClassifier {
    fn labels(&self) -> &LabelSet {
        &self.domains
    }

    fn task_labels(&self) -> &LabelSet {
        &self.tasks
    }

    fn classify(&self, prompt: &Prompt<'_>) -> Classification {
        let features = Features::extract(prompt);
        let model = &self.model;
        let mut out = [0.0; MAX_OUTPUTS];
        model.logits(prompt, &features, &mut out);
        model.probabilities(&mut out);
        let (label, confidence) = argmax(&out[model.range(Head::Domain)]);
        let (task, task_confidence) = argmax(&out[model.range(Head::Task)]);
        Classification {
            label: Label(label as u16),
            confidence,
            task: Label(task as u16),
            task_confidence,
            difficulty: frontier_need(&out[model.range(Head::Frontier)]),
            pii: features.pii,
            features,
        }
    }
}
