//! Labelled prompts as the `train` and `eval` commands read them (one JSON object a
//! line), the deterministic train / validation / test split, and how a row's fields
//! become the targets of the three heads.
//!
//! The protocol: every row falls in one of 100 buckets by a salted hash of its question
//! text. Buckets below [`TEST_PERCENT`] are the test split, read once per shipped model
//! and reported; the next [`VALIDATION_PERCENT`] are the validation split, where every
//! choice (features, epochs, rates, architecture) is made; the rest trains, and the
//! first [`CALIBRATION_PERCENT`] of it is held back from the gradient to fit the
//! softmax temperatures.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use super::{MAX_OUTPUTS, OUTCOMES};

/// The task labels every model has, in this order.
pub const TASKS: [&str; 4] = ["coding", "math", "creative_writing", "other"];

/// Percent of rows, chosen by a hash of their text, in the test split.
pub const TEST_PERCENT: u64 = 10;

/// Percent of rows (the next hash range) in the validation split.
pub const VALIDATION_PERCENT: u64 = 10;

/// Percent of rows (the next hash range) that train holds back from the gradient to fit
/// the softmax temperatures.
pub const CALIBRATION_PERCENT: u64 = 10;

/// Mixed into the split hash so that this protocol's test split is not the held-out
/// range earlier models were tuned on.
const SPLIT_SALT: &[u8] = b"xr-split";

/// One line of a JSONL file. Unknown fields (ids, options) are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Row {
    pub text: String,
    /// A domain or a task label.
    #[serde(default)]
    pub label: Option<String>,
    /// The MMLU subject (RouteLLM outcomes carry it instead of a label).
    #[serde(default)]
    pub subject: Option<String>,
    /// Where the row came from; MMLU-Pro writes `ori_mmlu-<subject>`.
    #[serde(default)]
    pub src: Option<String>,
    /// Answer options of a multiple-choice question (MMLU-Pro keeps them apart from
    /// the text); training also learns from the question with its options.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    #[serde(default)]
    pub weak_correct: Option<bool>,
    #[serde(default)]
    pub strong_correct: Option<bool>,
    /// A graded difficulty (MATH's level 1 to 5, say): eval reports how the difficulty
    /// score ranks it.
    #[serde(default)]
    pub level: Option<f32>,
    /// Set by the reader when every label of the row's file is a task label (a file of
    /// coding or math requests, say): such rows train the task head only, so prompts
    /// of another kind do not blur the subject domains.
    #[serde(skip)]
    pub task_only: bool,
    /// Which of the given files the row came from, set by the reader: outcomes of
    /// different files may come from different model pairs.
    #[serde(skip)]
    pub file: usize,
}

impl Row {
    /// Parses one JSONL line.
    pub fn parse(line: &str) -> Result<Row, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The frontier head's outcome index (`weak + 2 * strong`), when both are known.
    pub fn outcome(&self) -> Option<usize> {
        match (self.weak_correct, self.strong_correct) {
            (Some(w), Some(s)) => Some(usize::from(w) + 2 * usize::from(s)),
            _ => None,
        }
    }

    /// The group whose outcome rates smooth this row's outcome: its file (one pair of
    /// models) and its MMLU subject, else its label.
    pub fn outcome_group(&self) -> Option<String> {
        let file = self.file;
        self.mmlu_subject()
            .map(|s| format!("{file}:subject:{s}"))
            .or_else(|| self.label.as_ref().map(|l| format!("{file}:label:{l}")))
    }

    /// The MMLU subject this row names, in `subject` or in an `ori_mmlu-` source.
    fn mmlu_subject(&self) -> Option<&str> {
        self.subject
            .as_deref()
            .or_else(|| self.src.as_deref()?.strip_prefix("ori_mmlu-"))
    }
}

/// Which rows a command uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// What `train` learns from by default: neither validation nor test.
    Train,
    /// Where choices are made (what `eval` measures by default).
    Validation,
    /// Read once per shipped model, for the figures it reports.
    Test,
    /// Every row (your own traffic, a fixture, a dataset no model trained on).
    All,
}

impl Split {
    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "validation" => Some(Split::Validation),
            "test" => Some(Split::Test),
            "all" => Some(Split::All),
            _ => None,
        }
    }

    /// The split a text falls in (never [`Split::All`]).
    pub fn of(text: &str) -> Split {
        match bucket(text) {
            b if b < TEST_PERCENT => Split::Test,
            b if b < TEST_PERCENT + VALIDATION_PERCENT => Split::Validation,
            _ => Split::Train,
        }
    }

    pub fn contains(self, text: &str) -> bool {
        self == Split::All || self == Split::of(text)
    }
}

/// The row's hash bucket in [0, 100). The hash covers the question only: a trailing
/// multiple-choice block (`\nA. ...`) is cut and only lower-cased letters and digits
/// count, so one question asked in two files lands in the same split.
pub fn bucket(text: &str) -> u64 {
    let stem = text.find("\nA. ").map_or(text, |i| &text[..i]);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = SPLIT_SALT.iter().copied().chain(stem.bytes());
    for b in bytes.filter(u8::is_ascii_alphanumeric) {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h % 100
}

/// True for training rows held back to fit the temperatures.
pub fn is_calibration(text: &str) -> bool {
    let start = TEST_PERCENT + VALIDATION_PERCENT;
    (start..start + CALIBRATION_PERCENT).contains(&bucket(text))
}

/// The targets of one row, as indices into the model's label lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub domain: Option<usize>,
    pub task: Option<usize>,
    pub outcome: Option<usize>,
}

/// How rows map to targets, learned from the rows themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    pub domains: Vec<String>,
    pub tasks: Vec<String>,
    /// MMLU subject → domain index, by the majority of labelled rows naming it.
    subjects: HashMap<String, usize>,
}

/// Labels no model can hold.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("no row has a domain `label`: the domain head would be empty")]
    NoDomain,
    #[error(
        "{domains} domain labels: a model holds at most {room} (beside its {tasks} tasks and {outcomes} frontier outcomes)"
    )]
    TooMany {
        domains: usize,
        room: usize,
        tasks: usize,
        outcomes: usize,
    },
}

impl LabelMap {
    /// Whether a model can have these labels: at least one domain, and no more outputs
    /// (domains, tasks and the frontier outcomes) than a weight row holds. Otherwise the
    /// reason, before hours of training produce a file that would not load.
    pub fn check_size(&self) -> Result<(), LabelError> {
        let fixed = self.tasks.len() + OUTCOMES.len();
        if self.domains.is_empty() {
            return Err(LabelError::NoDomain);
        }
        if self.domains.len() + fixed > MAX_OUTPUTS {
            return Err(LabelError::TooMany {
                domains: self.domains.len(),
                room: MAX_OUTPUTS.saturating_sub(fixed),
                tasks: self.tasks.len(),
                outcomes: OUTCOMES.len(),
            });
        }
        Ok(())
    }

    /// Domains are the labels of rows that are not [`Row::task_only`], sorted; tasks
    /// are [`TASKS`]. A subject maps to the domain most rows of that subject carry.
    pub fn from_rows<'a>(rows: impl Iterator<Item = &'a Row> + Clone) -> LabelMap {
        let domains: BTreeSet<&str> = rows
            .clone()
            .filter(|r| !r.task_only)
            .filter_map(|r| r.label.as_deref())
            .collect();
        let domains: Vec<String> = domains.into_iter().map(str::to_owned).collect();
        let mut votes: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
        for row in rows {
            if let (Some(subject), Some(label)) = (row.mmlu_subject(), row.label.as_deref())
                && let Some(d) = domains.iter().position(|x| x == label)
            {
                *votes.entry(subject).or_default().entry(d).or_default() += 1;
            }
        }
        let subjects = votes
            .into_iter()
            .filter_map(|(subject, counts)| {
                let best = counts
                    .into_iter()
                    .max_by_key(|&(d, n)| (n, std::cmp::Reverse(d)))?;
                Some((subject.to_owned(), best.0))
            })
            .collect();
        LabelMap {
            domains,
            tasks: TASKS.map(str::to_owned).to_vec(),
            subjects,
        }
    }

    /// A map with the given label lists and no subjects (tests, loaded models).
    pub fn new(domains: Vec<String>, tasks: Vec<String>) -> LabelMap {
        LabelMap {
            domains,
            tasks,
            subjects: HashMap::new(),
        }
    }

    fn domain(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d == name)
    }

    fn task(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t == name)
    }

    /// The targets of `row`: a domain label also gives the task (`math` for the math
    /// domain, `other` for the rest); a subject without a label gives the subject's
    /// domain; a task-only row has a task and no domain.
    pub fn targets(&self, row: &Row) -> Targets {
        let label = row.label.as_deref();
        let domain = match label {
            _ if row.task_only => None,
            Some(l) => self.domain(l),
            None => row
                .mmlu_subject()
                .and_then(|s| self.subjects.get(s))
                .copied(),
        };
        let task = match label {
            Some(l) if self.task(l).is_some() => self.task(l),
            Some(_) | None => domain.and_then(|d| {
                let name = if self.domains[d] == "math" {
                    "math"
                } else {
                    "other"
                };
                self.task(name)
            }),
        };
        Targets {
            domain,
            task,
            outcome: row.outcome(),
        }
    }

    /// Which head a set of eval labels should be compared with: the domain head when
    /// every label is a domain, else the task head when every label is a task.
    pub fn head_for<'a>(
        &self,
        labels: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<super::Head> {
        if labels.clone().all(|l| self.domain(l).is_some()) {
            Some(super::Head::Domain)
        } else if labels.clone().all(|l| self.task(l).is_some()) {
            Some(super::Head::Task)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str, label: Option<&str>) -> Row {
        Row {
            text: text.into(),
            label: label.map(Into::into),
            ..Row::default()
        }
    }

    #[test]
    fn label_sets_a_model_cannot_hold_are_refused() {
        let labels = |n: usize| -> Vec<Row> {
            (0..n)
                .map(|i| row(&format!("q{i}"), Some(&format!("d{i}"))))
                .collect()
        };
        let most = MAX_OUTPUTS - TASKS.len() - OUTCOMES.len();
        assert!(
            LabelMap::from_rows(labels(most).iter())
                .check_size()
                .is_ok()
        );
        let error = LabelMap::from_rows(labels(most + 1).iter()).check_size();
        assert!(error.is_err_and(|e| e.to_string().contains(&format!("at most {most}"))));
        let error = LabelMap::from_rows(labels(0).iter()).check_size();
        assert!(error.is_err_and(|e| e.to_string().contains("no row has a domain")));
    }

    #[test]
    fn split_is_by_question_and_stable() {
        let q = "Find the degree of the extension Q(sqrt(2)) over Q.";
        let with_options = format!("{q}\nA. 0\nB. 2\nAnswer:");
        assert_eq!(bucket(q), bucket(&with_options));
        assert_eq!(bucket(q), bucket(&q.to_uppercase()));
        let count = |split: Split| {
            (0..2000)
                .filter(|i| split.contains(&format!("question {i}")))
                .count()
        };
        assert!(
            (150..250).contains(&count(Split::Test)),
            "{}",
            count(Split::Test)
        );
        assert!((150..250).contains(&count(Split::Validation)));
        assert_eq!(
            count(Split::Train) + count(Split::Validation) + count(Split::Test),
            2000
        );
        for i in 0..100 {
            let t = format!("q{i}");
            let inside = [Split::Train, Split::Validation, Split::Test].map(|s| s.contains(&t));
            assert_eq!(inside.iter().filter(|&&x| x).count(), 1, "{t}");
            assert!(Split::All.contains(&t));
            assert_eq!(is_calibration(&t), (20..30).contains(&bucket(&t)));
            assert!(!is_calibration(&t) || Split::Train.contains(&t));
        }
    }

    #[test]
    fn targets_follow_labels_subjects_and_outcomes() {
        let mut labelled = row("What is a cell?", Some("biology"));
        labelled.src = Some("ori_mmlu-college_biology".into());
        let task = |text: &str, label: &str| Row {
            task_only: true,
            ..row(text, Some(label))
        };
        let rows = [
            labelled,
            row("2+2?", Some("math")),
            task("write a fn", "coding"),
            task("a poem", "creative_writing"),
            row("misc", Some("other")),
            row("loops", Some("computer science")),
            task("how many apples?", "math"),
        ];
        let map = LabelMap::from_rows(rows.iter());
        assert_eq!(
            map.domains,
            ["biology", "computer science", "math", "other"]
        );
        let t = map.targets(&rows[0]);
        assert_eq!((t.domain, t.task), (Some(0), Some(3)));
        let t = map.targets(&rows[1]);
        assert_eq!((t.domain, t.task), (Some(2), Some(1)));
        let t = map.targets(&rows[2]);
        assert_eq!((t.domain, t.task), (None, Some(0)));
        let t = map.targets(&rows[3]);
        assert_eq!((t.domain, t.task), (None, Some(2)));
        let t = map.targets(&rows[6]);
        assert_eq!((t.domain, t.task), (None, Some(1)));

        let mut outcome = row("Which organelle?", None);
        outcome.subject = Some("college_biology".into());
        outcome.weak_correct = Some(false);
        outcome.strong_correct = Some(true);
        let t = map.targets(&outcome);
        assert_eq!(
            t,
            Targets {
                domain: Some(0),
                task: Some(3),
                outcome: Some(2)
            }
        );
        outcome.subject = Some("astrology".into());
        assert_eq!(map.targets(&outcome).domain, None);
    }

    #[test]
    fn eval_head_is_chosen_by_the_labels() {
        let map = LabelMap::new(
            vec!["math".into(), "law".into(), "other".into()],
            TASKS.map(str::to_owned).to_vec(),
        );
        assert_eq!(
            map.head_for(["law", "math"].into_iter()),
            Some(super::super::Head::Domain)
        );
        assert_eq!(
            map.head_for(["coding", "math"].into_iter()),
            Some(super::super::Head::Task)
        );
        assert_eq!(map.head_for(["coding", "law"].into_iter()), None);
    }
}
