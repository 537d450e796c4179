//! Classification: what a request is about, how hard it is, and whether it carries
//! personal data, computed locally in microseconds.
//!
//! Pure: a [`Prompt`] (borrowed text of the conversation plus structural facts) in, a
//! [`Classification`] out. Implementations sit behind the [`Classifier`] trait: the
//! learned [`linear`] model serves by default, the hand-weighted [`heuristic`] one needs
//! no model file.

mod cues;
pub mod features;
pub mod heuristic;
pub mod linear;
pub mod pii;

use std::sync::Arc;

pub use features::{Complexity, Features, Signal, Signals};
pub use heuristic::HeuristicClassifier;
pub use linear::LinearClassifier;
pub use pii::{PiiKind, PiiKinds};

/// Who wrote a piece of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One text part of one message.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub role: Role,
    /// Index of the message in the conversation.
    pub message: u32,
    pub text: &'a str,
}

/// The conversation as the classifier sees it: borrowed text and structural facts.
#[derive(Clone, Debug, Default)]
pub struct Prompt<'a> {
    pub segments: Vec<Segment<'a>>,
    pub messages: u32,
    pub has_tools: bool,
    pub json_mode: bool,
    pub images: u32,
    /// Input sent as token ids rather than text (embeddings): counted as they are.
    pub token_ids: u64,
}

impl<'a> Prompt<'a> {
    /// A single user message (the CLI and benches use this).
    pub fn user(text: &'a str) -> Self {
        Prompt {
            segments: vec![Segment {
                role: Role::User,
                message: 0,
                text,
            }],
            messages: 1,
            ..Prompt::default()
        }
    }

    /// One segment per message, in order (for tests).
    #[cfg(test)]
    pub fn conversation(turns: &[(Role, &'a str)]) -> Self {
        Prompt {
            segments: (0u32..)
                .zip(turns)
                .map(|(message, &(role, text))| Segment {
                    role,
                    message,
                    text,
                })
                .collect(),
            messages: turns.len() as u32,
            ..Prompt::default()
        }
    }
}

/// Index of a label in the classifier's [`LabelSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(pub u16);

/// The labels a classifier can produce; rules are validated against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSet(Arc<[Box<str>]>);

impl LabelSet {
    pub fn new<I: IntoIterator<Item = S>, S: Into<Box<str>>>(names: I) -> Self {
        LabelSet(names.into_iter().map(Into::into).collect())
    }

    /// The label called `name`, if the classifier has it.
    pub fn find(&self, name: &str) -> Option<Label> {
        self.0
            .iter()
            .position(|n| &**n == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(Label)
    }

    /// The name of `label` (`"unknown"` for an index from another label set).
    pub fn name(&self, label: Label) -> &str {
        self.0.get(usize::from(label.0)).map_or("unknown", |n| n)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|n| &**n)
    }
}

/// The classifier's verdict on one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    /// The subject domain, from [`Classifier::labels`].
    pub label: Label,
    /// Probability of `label`, in [0, 1].
    pub confidence: f32,
    /// The kind of work asked for, from [`Classifier::task_labels`].
    pub task: Label,
    /// Probability of `task`, in [0, 1].
    pub task_confidence: f32,
    /// How likely the prompt needs a frontier model, in [0, 1].
    pub difficulty: f32,
    /// Kinds of personal data or secrets found (never the values).
    pub pii: PiiKinds,
    /// The measured request facts the verdict was based on.
    pub features: Features,
}

/// A local, synchronous, allocation-light classifier.
pub trait Classifier: Send + Sync {
    /// Every domain label [`Classifier::classify`] can return.
    fn labels(&self) -> &LabelSet;
    /// Every task label [`Classifier::classify`] can return.
    fn task_labels(&self) -> &LabelSet;
    /// Classifies one request.
    fn classify(&self, prompt: &Prompt<'_>) -> Classification;
}
