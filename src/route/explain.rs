//! Explains a routing decision: the same evaluation as [`RouteTable::decide`], with a
//! human-readable reason for every rule it looked at.

use super::{Action, AliasMatch, Mismatch, Requested, RouteDecision, RouteInput, RouteTable};
use crate::classify::Classifier;

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
                        .pool(*p)
                        .map(|p| format!(" (pool `{}`)", p.id))
                        .unwrap_or_default(),
                    Action::Reject { status, .. } => format!(" (reject {status})"),
                }
            )),
            Ok(()) => {
                let conditions = rule.when.describe(classifier);
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
                why.reason(input, classifier)
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
            if let Some(pool) = table.pool(*p) {
                reasons.push(format!("routed to pool `{}`", pool.id));
                if let Some(fallback) = pool.fallback.and_then(|f| table.pool(f)) {
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
