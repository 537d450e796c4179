//! Rule conditions, each in one place: its check, its phrase for explain, its reason
//! when it fails, and whether it covers another rule's (for the unreachable-rule lint).
//!
//! Every method matches on [`Condition`] exhaustively, so a new variant does not
//! compile until it says how it is checked, explained and compared.

use super::{Requested, RouteInput};
use crate::classify::{Classifier, Label, LabelSet, PiiKinds};

/// Which requested models a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasMatch {
    /// No `alias` condition: the rule routes `auto` traffic only.
    AutoOnly,
    /// `alias = ["*"]`: every request, whatever it asked for.
    Any,
    /// Only these.
    OneOf(Vec<Requested>),
}

impl AliasMatch {
    /// Whether a request for `requested` is in scope.
    pub fn admits(&self, requested: Requested) -> bool {
        match self {
            AliasMatch::AutoOnly => requested == Requested::Auto,
            AliasMatch::Any => true,
            AliasMatch::OneOf(list) => list.contains(&requested),
        }
    }

    /// Whether every request `narrow` admits, `self` admits too.
    fn covers(&self, narrow: &AliasMatch) -> bool {
        match (self, narrow) {
            (AliasMatch::Any, _) => true,
            (AliasMatch::AutoOnly, AliasMatch::AutoOnly) => true,
            (AliasMatch::AutoOnly, AliasMatch::OneOf(n)) => n.iter().all(|r| *r == Requested::Auto),
            (AliasMatch::OneOf(b), AliasMatch::AutoOnly) => b.contains(&Requested::Auto),
            (AliasMatch::OneOf(b), AliasMatch::OneOf(n)) => n.iter().all(|r| b.contains(r)),
            (_, AliasMatch::Any) => false,
        }
    }

    /// The phrase explain shows, when the scope is not the default `auto` only.
    fn describe(&self) -> Option<&'static str> {
        match self {
            AliasMatch::AutoOnly => None,
            AliasMatch::Any => Some("any model"),
            AliasMatch::OneOf(_) => Some("named models"),
        }
    }
}

/// One condition of a rule. Lists mean any-of and are never empty: validation drops
/// an empty list, which constrains nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Domain label is one of these.
    Label(Vec<Label>),
    /// Task label is one of these.
    Task(Vec<Label>),
    /// Confidence is at least this.
    MinConfidence(f32),
    /// Confidence is below this.
    MaxConfidence(f32),
    /// Difficulty is at least this.
    MinDifficulty(f32),
    /// Difficulty is below this.
    MaxDifficulty(f32),
    /// At least this many prompt tokens.
    MinPromptTokens(u64),
    /// At most this many prompt tokens.
    MaxPromptTokens(u64),
    /// Tools are offered (or not).
    Tools(bool),
    /// Images are attached (or not).
    Images(bool),
    /// JSON mode is asked for (or not).
    JsonMode(bool),
    /// Some PII was found (or none).
    Pii(bool),
    /// PII of one of these kinds was found.
    PiiKinds(PiiKinds),
    /// The caller's team is one of these.
    Team(Vec<String>),
    /// The caller's key id is one of these.
    Key(Vec<String>),
    /// The request header `name` (lower-case) equals `value`.
    Header { name: String, value: String },
    /// The caller's key or team has spent at least this share of its current budget
    /// (the larger of the two); a caller without a budget never matches.
    MinBudgetUsed(f32),
}

impl Condition {
    /// Whether `input` meets the condition.
    #[inline]
    pub fn holds(&self, input: &RouteInput<'_>) -> bool {
        let c = input.classification;
        let f = &c.features;
        match self {
            Condition::Label(list) => list.contains(&c.label),
            Condition::Task(list) => list.contains(&c.task),
            Condition::MinConfidence(m) => c.confidence >= *m,
            Condition::MaxConfidence(m) => c.confidence < *m,
            Condition::MinDifficulty(m) => c.difficulty >= *m,
            Condition::MaxDifficulty(m) => c.difficulty < *m,
            Condition::MinPromptTokens(m) => f.prompt_tokens >= *m,
            Condition::MaxPromptTokens(m) => f.prompt_tokens <= *m,
            Condition::Tools(want) => *want == f.has_tools,
            Condition::Images(want) => *want == (f.images > 0),
            Condition::JsonMode(want) => *want == f.json_mode,
            Condition::Pii(want) => *want != c.pii.is_empty(),
            Condition::PiiKinds(kinds) => kinds.intersects(c.pii),
            Condition::Team(list) => input.team.is_some_and(|t| list.iter().any(|x| x == t)),
            Condition::Key(list) => input.key.is_some_and(|k| list.iter().any(|x| x == k)),
            Condition::Header { name, value } => input.headers.header(name) == Some(value),
            Condition::MinBudgetUsed(m) => input.budget_used.is_some_and(|used| used >= *m),
        }
    }

    /// The condition as a phrase, e.g. `confidence ≥ 0.6`.
    pub fn describe(&self, classifier: &dyn Classifier) -> String {
        match self {
            Condition::Label(list) => format!("label is {}", names(classifier.labels(), list)),
            Condition::Task(list) => {
                format!("task is {}", names(classifier.task_labels(), list))
            }
            Condition::MinConfidence(v) => format!("confidence ≥ {v}"),
            Condition::MaxConfidence(v) => format!("confidence < {v}"),
            Condition::MinDifficulty(v) => format!("difficulty ≥ {v}"),
            Condition::MaxDifficulty(v) => format!("difficulty < {v}"),
            Condition::MinPromptTokens(v) => format!("prompt tokens ≥ {v}"),
            Condition::MaxPromptTokens(v) => format!("prompt tokens ≤ {v}"),
            Condition::Tools(v) => format!("tools {}", presence(*v)),
            Condition::Images(v) => format!("images {}", presence(*v)),
            Condition::JsonMode(v) => format!("json mode {}", presence(*v)),
            Condition::Pii(v) => format!("PII {}", presence(*v)),
            Condition::PiiKinds(kinds) => {
                let kinds: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
                format!("PII of kind {}", kinds.join(" | "))
            }
            Condition::Team(list) => format!("team is {}", list.join(" | ")),
            Condition::Key(list) => format!("key is {}", list.join(" | ")),
            Condition::Header { name, value } => format!("header {name} = {value}"),
            Condition::MinBudgetUsed(v) => format!("budget used ≥ {}%", percent(*v)),
        }
    }

    /// Why `input` fails the condition, naming what the request had.
    pub fn mismatch(&self, input: &RouteInput<'_>, classifier: &dyn Classifier) -> String {
        let c = input.classification;
        let f = &c.features;
        match self {
            Condition::Label(list) => {
                let labels = classifier.labels();
                format!(
                    "label `{}` is not {}",
                    labels.name(c.label),
                    names(labels, list)
                )
            }
            Condition::Task(list) => {
                let tasks = classifier.task_labels();
                format!(
                    "task `{}` is not {}",
                    tasks.name(c.task),
                    names(tasks, list)
                )
            }
            Condition::MinConfidence(v) => format!("confidence {:.2} < {v}", c.confidence),
            Condition::MaxConfidence(v) => format!("confidence {:.2} ≥ {v}", c.confidence),
            Condition::MinDifficulty(v) => format!("difficulty {:.2} < {v}", c.difficulty),
            Condition::MaxDifficulty(v) => format!("difficulty {:.2} ≥ {v}", c.difficulty),
            Condition::MinPromptTokens(v) => format!("prompt tokens {} < {v}", f.prompt_tokens),
            Condition::MaxPromptTokens(v) => format!("prompt tokens {} > {v}", f.prompt_tokens),
            Condition::Tools(_) => format!("tools {}", presence(f.has_tools)),
            Condition::Images(_) => format!("images {}", presence(f.images > 0)),
            Condition::JsonMode(_) => format!("json mode {}", presence(f.json_mode)),
            Condition::Pii(_) => format!("PII {}", presence(!c.pii.is_empty())),
            Condition::PiiKinds(_) => "none of the rule's PII kinds found".to_owned(),
            Condition::Team(list) => format!(
                "team {} is not {}",
                input.team.unwrap_or("(none)"),
                list.join(" | ")
            ),
            Condition::Key(list) => format!(
                "key {} is not {}",
                input.key.unwrap_or("(none)"),
                list.join(" | ")
            ),
            Condition::Header { .. } => {
                "a required request header is missing or different".to_owned()
            }
            Condition::MinBudgetUsed(v) => match input.budget_used {
                Some(used) => format!("budget used {}% < {}%", percent(used), percent(*v)),
                None => "the caller has no budget".to_owned(),
            },
        }
    }

    /// Whether every request meeting `narrow` meets `self` too. Conservative: a
    /// condition of another kind never covers.
    pub fn covers(&self, narrow: &Condition) -> bool {
        use Condition as C;
        match self {
            C::Label(b) => matches!(narrow, C::Label(n) if any_of_covers(b, n)),
            C::Task(b) => matches!(narrow, C::Task(n) if any_of_covers(b, n)),
            C::MinConfidence(b) => matches!(narrow, C::MinConfidence(n) if n >= b),
            C::MaxConfidence(b) => matches!(narrow, C::MaxConfidence(n) if n <= b),
            C::MinDifficulty(b) => matches!(narrow, C::MinDifficulty(n) if n >= b),
            C::MaxDifficulty(b) => matches!(narrow, C::MaxDifficulty(n) if n <= b),
            C::MinPromptTokens(b) => matches!(narrow, C::MinPromptTokens(n) if n >= b),
            C::MaxPromptTokens(b) => matches!(narrow, C::MaxPromptTokens(n) if n <= b),
            C::Tools(b) => matches!(narrow, C::Tools(n) if n == b),
            C::Images(b) => matches!(narrow, C::Images(n) if n == b),
            C::JsonMode(b) => matches!(narrow, C::JsonMode(n) if n == b),
            C::Pii(b) => matches!(narrow, C::Pii(n) if n == b),
            C::PiiKinds(b) => matches!(
                narrow,
                C::PiiKinds(n) if !n.is_empty() && n.iter().all(|k| b.contains(k))
            ),
            C::Team(b) => matches!(narrow, C::Team(n) if any_of_covers(b, n)),
            C::Key(b) => matches!(narrow, C::Key(n) if any_of_covers(b, n)),
            C::Header { .. } => self == narrow,
            C::MinBudgetUsed(b) => matches!(narrow, C::MinBudgetUsed(n) if n >= b),
        }
    }
}

/// A rule's conditions: its alias scope, and conditions combined with AND.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub alias: AliasMatch,
    /// Checked in order; explain reports the first that fails. Validation keeps the
    /// order of [`Condition`]'s variants.
    pub conditions: Vec<Condition>,
}

/// The part of a rule that stopped it from matching.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mismatch<'a> {
    /// The requested model is out of the rule's scope.
    Alias,
    /// This condition failed.
    Condition(&'a Condition),
}

impl Mismatch<'_> {
    /// Why the rule was skipped, for explain.
    pub fn reason(&self, input: &RouteInput<'_>, classifier: &dyn Classifier) -> String {
        match self {
            Mismatch::Alias => "the requested model is not one this rule applies to".to_owned(),
            Mismatch::Condition(c) => c.mismatch(input, classifier),
        }
    }
}

impl Match {
    /// A condition-free match for `auto` traffic: the shape of the mandatory default rule.
    pub fn catch_all() -> Self {
        Match {
            alias: AliasMatch::AutoOnly,
            conditions: Vec::new(),
        }
    }

    /// True when the rule has no condition besides its alias scope.
    pub fn is_unconditional(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The first part `input` fails, or `Ok` when all hold.
    #[inline]
    pub fn check(&self, input: &RouteInput<'_>) -> Result<(), Mismatch<'_>> {
        if !self.alias.admits(input.requested) {
            return Err(Mismatch::Alias);
        }
        match self.conditions.iter().find(|c| !c.holds(input)) {
            Some(c) => Err(Mismatch::Condition(c)),
            None => Ok(()),
        }
    }

    /// The scope and conditions, one phrase each.
    pub fn describe(&self, classifier: &dyn Classifier) -> Vec<String> {
        self.alias
            .describe()
            .map(str::to_owned)
            .into_iter()
            .chain(self.conditions.iter().map(|c| c.describe(classifier)))
            .collect()
    }

    /// Whether every request `narrow` matches is also matched by `self`: each of
    /// `self`'s conditions is covered by one of `narrow`'s.
    pub fn covers(&self, narrow: &Match) -> bool {
        self.alias.covers(&narrow.alias)
            && self
                .conditions
                .iter()
                .all(|b| narrow.conditions.iter().any(|n| b.covers(n)))
    }
}

fn any_of_covers<T: PartialEq>(broad: &[T], narrow: &[T]) -> bool {
    !narrow.is_empty() && narrow.iter().all(|n| broad.contains(n))
}

fn names(labels: &LabelSet, list: &[Label]) -> String {
    list.iter()
        .map(|l| labels.name(*l))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A share as a whole percentage, e.g. `80`.
fn percent(share: f32) -> String {
    format!("{:.0}", share * 100.0)
}

fn presence(b: bool) -> &'static str {
    if b { "present" } else { "absent" }
}
