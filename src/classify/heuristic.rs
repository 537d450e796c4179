//! The first classifier: hand-weighted cues over the extracted features, mapped to
//! task labels with a softmax, and a difficulty score from length and reasoning cues.
//! It has no domain model: its domain labels are its task labels.

use super::{Classification, Classifier, Features, Label, LabelSet, Prompt};

/// Labels of the heuristic classifier, in score order.
pub const LABELS: [&str; 4] = ["coding", "math", "creative_writing", "other"];

/// Scores cues by hand-set weights; no model file.
#[derive(Debug, Clone)]
pub struct HeuristicClassifier {
    labels: LabelSet,
}

impl Default for HeuristicClassifier {
    fn default() -> Self {
        HeuristicClassifier {
            labels: LabelSet::new(LABELS),
        }
    }
}

impl Classifier for HeuristicClassifier {
    fn labels(&self) -> &LabelSet {
        &self.labels
    }

    fn task_labels(&self) -> &LabelSet {
        &self.labels
    }

    fn classify(&self, prompt: &Prompt<'_>) -> Classification {
        let features = Features::extract(prompt);
        // "other" has a constant score: a label needs cues to beat it.
        let scores = [
            0.8 * features.code,
            0.8 * features.math,
            1.2 * features.writing,
            1.0,
        ];
        let (best, confidence) = softmax_argmax(&scores);
        Classification {
            label: Label(best),
            confidence,
            task: Label(best),
            task_confidence: confidence,
            difficulty: difficulty(&features),
            pii: features.pii,
            features,
        }
    }
}

/// Index and probability of the largest score under a softmax.
fn softmax_argmax(scores: &[f32; 4]) -> (u16, f32) {
    let mut best = 0;
    for i in 1..scores.len() {
        if scores[i] > scores[best] {
            best = i;
        }
    }
    let max = scores[best];
    let total: f32 = scores.iter().map(|s| (s - max).exp()).sum();
    (best as u16, 1.0 / total)
}

/// A [0, 1] guess at how much the prompt needs a frontier model: long, multi-turn,
/// tool-using prompts that ask for proofs, designs or analysis score high.
fn difficulty(f: &Features) -> f32 {
    let length = ((f.prompt_tokens as f32) / 250.0).ln_1p();
    let turns = f.user_turns.saturating_sub(1).min(6) as f32;
    let z = -2.2
        + 0.7 * f.reasoning.min(6.0)
        + 0.6 * length
        + 0.25 * turns
        + if f.has_tools { 0.4 } else { 0.0 }
        + 0.1 * (f.code + f.math).min(10.0);
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(text: &str) -> (String, Classification) {
        let c = HeuristicClassifier::default();
        let out = c.classify(&Prompt::user(text));
        (c.labels().name(out.label).to_owned(), out)
    }

    #[test]
    fn labels_typical_prompts() {
        assert_eq!(
            classify("Write a Python function that returns the nth Fibonacci number.").0,
            "coding"
        );
        assert_eq!(classify("Solve for x: 2x + 3 = 11").0, "math");
        assert_eq!(
            classify("Write a short poem about autumn leaves").0,
            "creative_writing"
        );
        assert_eq!(classify("Hi! How are you today?").0, "other");
    }

    #[test]
    fn confidence_and_difficulty_are_probabilities() {
        for text in [
            "",
            "x",
            "Prove that there are infinitely many primes, rigorously.",
        ] {
            let (_, c) = classify(text);
            assert!(
                (0.0..=1.0).contains(&c.confidence),
                "{text}: {}",
                c.confidence
            );
            assert!(
                (0.0..=1.0).contains(&c.difficulty),
                "{text}: {}",
                c.difficulty
            );
        }
    }

    #[test]
    fn reasoning_prompts_are_harder_than_greetings() {
        let (_, easy) = classify("hello");
        let (_, hard) = classify(
            "Compare the tradeoffs of two consensus protocols, analyze their failure modes \
             and justify a design for a geo-replicated database. Explain why.",
        );
        assert!(hard.difficulty > easy.difficulty + 0.3);
    }

    #[test]
    fn argmax_picks_the_largest_score() {
        assert_eq!(softmax_argmax(&[0.0, 5.0, 1.0, 1.0]).0, 1);
        assert_eq!(softmax_argmax(&[9.0, 5.0, 1.0, 1.0]).0, 0);
        assert_eq!(softmax_argmax(&[0.0, 0.0, 0.0, 1.0]).0, 3);
    }
}
