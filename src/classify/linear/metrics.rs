//! The arithmetic of `crossroads eval`: confusion matrix, per-class precision / recall,
//! macro-F1, calibration error, and routing quality as RouteLLM measures it (APGR and
//! CPT from a cost–quality curve).

/// Counts of (truth, prediction) pairs over `k` classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    k: usize,
    counts: Vec<usize>,
}

/// Precision, recall and F1 of one class, with how many rows truly are that class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub predicted: usize,
}

impl Confusion {
    pub fn new(k: usize) -> Self {
        Confusion {
            k,
            counts: vec![0; k * k],
        }
    }

    /// Records one row; indices outside the classes are ignored.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if truth < self.k && predicted < self.k {
            self.counts[truth * self.k + predicted] += 1;
        }
    }

    pub fn classes(&self) -> usize {
        self.k
    }

    pub fn count(&self, truth: usize, predicted: usize) -> usize {
        self.counts
            .get(truth * self.k + predicted)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..self.k).map(|i| self.count(i, i)).sum();
        ratio(right, self.total())
    }

    pub fn score(&self, class: usize) -> ClassScore {
        let tp = self.count(class, class);
        let support: usize = (0..self.k).map(|p| self.count(class, p)).sum();
        let predicted: usize = (0..self.k).map(|t| self.count(t, class)).sum();
        let precision = ratio(tp, predicted);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        ClassScore {
            precision,
            recall,
            f1,
            support,
            predicted,
        }
    }

    /// Mean recall over the classes that occur in the truth (scikit-learn's
    /// `balanced_accuracy_score`): the accuracy a set with as many rows of every class
    /// would show, so traffic dominated by one class cannot hide the others.
    pub fn balanced_accuracy(&self) -> f64 {
        mean(self.scores().filter(|s| s.support > 0).map(|s| s.recall))
    }

    /// Mean F1 over the classes that occur in the truth or the predictions (as
    /// scikit-learn's `f1_score(average="macro")` does).
    pub fn macro_f1(&self) -> f64 {
        mean(
            self.scores()
                .filter(|s| s.support > 0 || s.predicted > 0)
                .map(|s| s.f1),
        )
    }

    fn scores(&self) -> impl Iterator<Item = ClassScore> + '_ {
        (0..self.k).map(|c| self.score(c))
    }
}

/// The mean of the values, 0 for none.
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Expected calibration error over ten equal-width confidence bins: the mean gap
/// between confidence and accuracy, weighted by how many rows fall in each bin.
pub fn calibration_error(rows: &[(f32, bool)]) -> f64 {
    let mut bins = [(0.0f64, 0usize, 0usize); 10];
    for &(confidence, correct) in rows {
        let b = ((confidence.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        bins[b].0 += f64::from(confidence);
        bins[b].1 += 1;
        bins[b].2 += usize::from(correct);
    }
    let n = rows.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.1 > 0)
        .map(|&(sum, count, right)| {
            (sum / count as f64 - right as f64 / count as f64).abs() * count as f64 / n
        })
        .sum()
}

/// One point of the cost–quality curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Prompts scoring at least this go to the strong model.
    pub threshold: f32,
    /// Fraction of prompts sent to the strong model.
    pub strong_share: f64,
    /// Fraction answered correctly by the model each was sent to.
    pub accuracy: f64,
}

/// Routing quality of a frontier-need score.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub n: usize,
    pub weak_accuracy: f64,
    pub strong_accuracy: f64,
    /// Sorted by strong share.
    pub curve: Vec<CurvePoint>,
    /// Average performance gap recovered: 0.5 for random routing, 1 at best.
    pub apgr: f64,
    /// Strong-call share needed to recover 50% / 80% of the gap (random: 0.5 / 0.8).
    pub cpt50: f64,
    pub cpt80: f64,
}

/// Number of threshold bins RouteLLM's evaluation uses (`--num-results 10`).
pub const ROUTELLM_BINS: usize = 10;

/// Measures routing as RouteLLM's `evaluate.py` does: thresholds at the score
/// quantiles 0, 1/bins, ..., 1 (linear interpolation); at each, prompts scoring at least
/// the threshold (more than it, for the last) go to the strong model; APGR is the
/// trapezoid area under accuracy over strong share, minus the weak model's, over the
/// strong model's minus the weak model's; CPT(p) is the strong share at which the curve
/// first reaches weak + p × (strong − weak), linearly interpolated. `rows` are
/// `(score, weak_correct, strong_correct)`. `None` without rows or without a gap
/// between the models.
pub fn routing(rows: &[(f32, bool, bool)], bins: usize) -> Option<Routing> {
    let n = rows.len();
    if n == 0 || bins == 0 {
        return None;
    }
    let weak_accuracy = ratio(rows.iter().filter(|r| r.1).count(), n);
    let strong_accuracy = ratio(rows.iter().filter(|r| r.2).count(), n);
    let mut sorted: Vec<f32> = rows.iter().map(|r| r.0).collect();
    sorted.sort_by(f32::total_cmp);
    let mut curve: Vec<CurvePoint> = (0..=bins)
        .map(|i| {
            let threshold = quantile(&sorted, i as f64 / bins as f64);
            let strong = |score: f32| {
                if i < bins {
                    score >= threshold
                } else {
                    score > threshold
                }
            };
            let (mut calls, mut right) = (0, 0);
            for &(score, weak, strong_ok) in rows {
                let to_strong = strong(score);
                calls += usize::from(to_strong);
                right += usize::from(if to_strong { strong_ok } else { weak });
            }
            CurvePoint {
                threshold,
                strong_share: ratio(calls, n),
                accuracy: ratio(right, n),
            }
        })
        .collect();
    curve.sort_by(|a, b| a.strong_share.total_cmp(&b.strong_share));
    let gap = strong_accuracy - weak_accuracy;
    if gap <= 0.0 {
        return None;
    }
    let trapz = |f: &dyn Fn(&CurvePoint) -> f64| {
        curve
            .windows(2)
            .map(|w| (w[1].strong_share - w[0].strong_share) * (f(&w[0]) + f(&w[1])) / 2.0)
            .sum::<f64>()
    };
    let auc = trapz(&|p| p.accuracy);
    let weak_auc = trapz(&|_| weak_accuracy);
    let strong_auc = trapz(&|_| strong_accuracy);
    let apgr = if strong_auc > weak_auc {
        (auc - weak_auc) / (strong_auc - weak_auc)
    } else {
        0.0
    };
    let cpt = |p: f64| calls_to_reach(&curve, weak_accuracy + p * gap);
    Some(Routing {
        n,
        weak_accuracy,
        strong_accuracy,
        apgr,
        cpt50: cpt(0.5),
        cpt80: cpt(0.8),
        curve,
    })
}

/// The `q` quantile of sorted values, linearly interpolated (numpy's default).
pub fn quantile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Spearman's rank correlation of `(score, grade)` pairs (ties share their mean rank);
/// `None` for fewer than two rows or a constant column.
pub fn spearman(rows: &[(f32, f32)]) -> Option<f64> {
    fn ranks(values: &[f32]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut ranks = vec![0.0; values.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
                j += 1;
            }
            let mean = (i + j) as f64 / 2.0;
            for &k in &order[i..=j] {
                ranks[k] = mean;
            }
            i = j + 1;
        }
        ranks
    }
    if rows.len() < 2 {
        return None;
    }
    let a = ranks(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let b = ranks(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let mean = (rows.len() - 1) as f64 / 2.0;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        ab += (x - mean) * (y - mean);
        aa += (x - mean) * (x - mean);
        bb += (y - mean) * (y - mean);
    }
    (aa > 0.0 && bb > 0.0).then(|| ab / (aa * bb).sqrt())
}

/// Strong share at which the curve first reaches `target` accuracy.
fn calls_to_reach(curve: &[CurvePoint], target: f64) -> f64 {
    let Some(first) = curve.first() else {
        return 1.0;
    };
    if first.accuracy >= target {
        return first.strong_share;
    }
    for w in curve.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.accuracy < target && b.accuracy >= target {
            let t = (target - a.accuracy) / (b.accuracy - a.accuracy);
            return a.strong_share + t * (b.strong_share - a.strong_share);
        }
    }
    curve.last().map_or(1.0, |p| p.strong_share)
}
