//! Explains a routing decision: the same evaluation as [`RouteTable::decide`], with a
//! human-readable reason for every rule it looked at.

use super::{
    Action, AliasMatch, Match, Mismatch, Requested, RouteDecision, RouteInput, RouteTable,
};
use crate::classify::{Classifier, LabelSet};

/// A decision and the reasons for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub decision: RouteDecision,
    pub reasons: Vec<String>,
}

/// Evaluates the rules in order like `decide`, recording why each one did or did not match.
pub fn explain(
    table: &RouteTable,
    classifier: &dyn Classifier,
    input: &RouteInput<'_>,
) -> Explanation {
    let decision = table.decide(input);
    let mut reasons = Vec::new();
    let c = input.classification;
    reasons.push(format!(
        "classified as `{}` (confidence {:.2}), task `{}` (confidence {:.2}), difficulty {:.2}, ~{} prompt tokens{}",
        classifier.labels().name(c.label),
        c.confidence,
        classifier.task_labels().name(c.task),
        c.task_confidence,
        c.difficulty,
        c.features.prompt_tokens,
        if c.pii.is_empty() {
            String::new()
        } else {
            format!(
                ", PII: {}",
                c.pii
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    if let Requested::Alias(a) = input.requested
        && let Some(alias) = table.aliases.get(a)
    {
        reasons.push(format!("model `{}` was requested", alias.name));
    }
    for rule in &table.rules {
        match rule.when.check(input) {
            Ok(()) if rule.shadow => reasons.push(format!(
                "shadow rule `{}` would have matched{}: recorded, not applied",
                rule.id,
                match &rule.action {
                    Action::Pool(p) => table
                        .pools
                        .get(*p)
                        .map(|p| format!(" (pool `{}`)", p.id))
                        .unwrap_or_default(),
                    Action::Reject { status, .. } => format!(" (reject {status})"),
                }
            )),
            Ok(()) => {
                let conditions = describe(&rule.when, classifier);
                reasons.push(format!(
                    "rule `{}` matched{}",
                    rule.id,
                    if conditions.is_empty() {
                        " (no conditions: the default)".to_owned()
                    } else {
                        format!(": {}", conditions.join(", "))
                    }
                ));
                break;
            }
            Err(Mismatch::Alias) if rule.when.alias == AliasMatch::AutoOnly => {}
            Err(why) => reasons.push(format!(
                "rule `{}` skipped: {}",
                rule.id,
                mismatch(why, &rule.when, input, classifier)
            )),
        }
    }
    if let super::Via::Alias(a) = decision.via
        && let Some(alias) = table.aliases.get(a)
    {
        reasons.push(format!(
            "no rule applies to `{}`: its own pool is used",
            alias.name
        ));
    }
    match &decision.action {
        Action::Pool(p) => {
            if let Some(pool) = table.pools.get(*p) {
                reasons.push(format!("routed to pool `{}`", pool.id));
                if let Some(fallback) = pool.fallback.and_then(|f| table.pools.get(f)) {
                    reasons.push(format!(
                        "pool `{}` falls back to pool `{}`",
                        pool.id, fallback.id
                    ));
                }
            }
        }
        Action::Reject { status, message } => {
            reasons.push(format!("rejected with HTTP {status}: {message}"));
        }
    }
    Explanation { decision, reasons }
}

fn names(labels: &LabelSet, list: &[crate::classify::Label]) -> String {
    list.iter()
        .map(|l| labels.name(*l))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The conditions of a rule, one phrase each.
pub fn describe(m: &Match, classifier: &dyn Classifier) -> Vec<String> {
    let mut out = Vec::new();
    match &m.alias {
        AliasMatch::AutoOnly => {}
        AliasMatch::Any => out.push("any model".to_owned()),
        AliasMatch::OneOf(_) => out.push("named models".to_owned()),
    }
    if !m.labels.is_empty() {
        out.push(format!(
            "label is {}",
            names(classifier.labels(), &m.labels)
        ));
    }
    if !m.tasks.is_empty() {
        out.push(format!(
            "task is {}",
            names(classifier.task_labels(), &m.tasks)
        ));
    }
    if let Some(v) = m.min_confidence {
        out.push(format!("confidence ≥ {v}"));
    }
    if let Some(v) = m.max_confidence {
        out.push(format!("confidence < {v}"));
    }
    if let Some(v) = m.min_difficulty {
        out.push(format!("difficulty ≥ {v}"));
    }
    if let Some(v) = m.max_difficulty {
        out.push(format!("difficulty < {v}"));
    }
    if let Some(v) = m.min_prompt_tokens {
        out.push(format!("prompt tokens ≥ {v}"));
    }
    if let Some(v) = m.max_prompt_tokens {
        out.push(format!("prompt tokens ≤ {v}"));
    }
    for (name, value) in [
        ("tools", m.tools),
        ("images", m.images),
        ("json mode", m.json_mode),
        ("PII", m.pii),
    ] {
        if let Some(v) = value {
            out.push(format!("{name} {}", if v { "present" } else { "absent" }));
        }
    }
    if !m.pii_kinds.is_empty() {
        let kinds: Vec<_> = m.pii_kinds.iter().map(|k| k.as_str()).collect();
        out.push(format!("PII of kind {}", kinds.join(" | ")));
    }
    if !m.teams.is_empty() {
        out.push(format!("team is {}", m.teams.join(" | ")));
    }
    if !m.keys.is_empty() {
        out.push(format!("key is {}", m.keys.join(" | ")));
    }
    for (name, value) in &m.headers {
        out.push(format!("header {name} = {value}"));
    }
    out
}

fn mismatch(
    why: Mismatch,
    m: &Match,
    input: &RouteInput<'_>,
    classifier: &dyn Classifier,
) -> String {
    let labels = classifier.labels();
    let tasks = classifier.task_labels();
    let c = input.classification;
    let f = &c.features;
    let yes_no = |b: bool| if b { "present" } else { "absent" };
    match why {
        Mismatch::Alias => "the requested model is not one this rule applies to".to_owned(),
        Mismatch::Label => format!(
            "label `{}` is not {}",
            labels.name(c.label),
            names(labels, &m.labels)
        ),
        Mismatch::Task => format!(
            "task `{}` is not {}",
            tasks.name(c.task),
            names(tasks, &m.tasks)
        ),
        Mismatch::ConfidenceBelow => format!(
            "confidence {:.2} < {}",
            c.confidence,
            m.min_confidence.unwrap_or_default()
        ),
        Mismatch::ConfidenceAbove => format!(
            "confidence {:.2} ≥ {}",
            c.confidence,
            m.max_confidence.unwrap_or_default()
        ),
        Mismatch::DifficultyBelow => format!(
            "difficulty {:.2} < {}",
            c.difficulty,
            m.min_difficulty.unwrap_or_default()
        ),
        Mismatch::DifficultyAbove => format!(
            "difficulty {:.2} ≥ {}",
            c.difficulty,
            m.max_difficulty.unwrap_or_default()
        ),
        Mismatch::TokensBelow => format!(
            "prompt tokens {} < {}",
            f.prompt_tokens,
            m.min_prompt_tokens.unwrap_or_default()
        ),
        Mismatch::TokensAbove => format!(
            "prompt tokens {} > {}",
            f.prompt_tokens,
            m.max_prompt_tokens.unwrap_or_default()
        ),
        Mismatch::Tools => format!("tools {}", yes_no(f.has_tools)),
        Mismatch::Images => format!("images {}", yes_no(f.images > 0)),
        Mismatch::JsonMode => format!("json mode {}", yes_no(f.json_mode)),
        Mismatch::Pii => format!("PII {}", yes_no(!c.pii.is_empty())),
        Mismatch::PiiKinds => "none of the rule's PII kinds found".to_owned(),
        Mismatch::Header => "a required request header is missing or different".to_owned(),
        Mismatch::Team => format!(
            "team {} is not {}",
            input.team.unwrap_or("(none)"),
            m.teams.join(" | ")
        ),
        Mismatch::Key => format!(
            "key {} is not {}",
            input.key.unwrap_or("(none)"),
            m.keys.join(" | ")
        ),
    }
}
