use super::*;
use crate::classify::{
    Classification, Classifier, Features, Label, LabelSet, PiiKind, PiiKinds, Prompt,
};

/// A classifier whose domain and task labels are the same three.
struct Labels(LabelSet);

impl Classifier for Labels {
    fn labels(&self) -> &LabelSet {
        &self.0
    }
    fn task_labels(&self) -> &LabelSet {
        &self.0
    }
    fn classify(&self, _: &Prompt<'_>) -> Classification {
        classification(2, 1.0, 0.0)
    }
}

fn labels() -> Labels {
    Labels(LabelSet::new(["coding", "math", "other"]))
}

fn classification(label: u16, confidence: f32, difficulty: f32) -> Classification {
    Classification {
        label: Label(label),
        confidence,
        task: Label(label),
        task_confidence: confidence,
        difficulty,
        pii: PiiKinds::empty(),
        features: Features::default(),
    }
}

fn rule(id: &str, when: Match, pool: usize) -> Rule {
    Rule {
        id: id.into(),
        description: String::new(),
        when,
        action: Action::Pool(PoolId(pool)),
        max_tokens: None,
        shadow: false,
        reference: None,
    }
}

/// A match for `auto` traffic with these conditions.
fn auto_when(conditions: Vec<Condition>) -> Match {
    Match {
        alias: AliasMatch::AutoOnly,
        conditions,
    }
}

fn input(requested: Requested, classification: &Classification) -> RouteInput<'_> {
    RouteInput {
        requested,
        classification,
        headers: &NoHeaders,
        key: None,
        team: None,
        budget_used: None,
    }
}

fn table() -> RouteTable {
    let pool = |id: &str, deployments: Vec<usize>| Pool {
        id: id.into(),
        api: Api::Chat,
        candidates: deployments.iter().copied().map(DeploymentId).collect(),
        deployments: deployments.into_iter().map(DeploymentId).collect(),
        fallback: None,
        strategy: Strategy::Priority,
        weights: Vec::new(),
        chain: Vec::new(),
    };
    RouteTable {
        rules: vec![
            rule(
                "pii-local",
                Match {
                    alias: AliasMatch::Any,
                    conditions: vec![Condition::Pii(true)],
                },
                0,
            ),
            rule(
                "code-local",
                auto_when(vec![
                    Condition::Label(vec![Label(0)]),
                    Condition::MinConfidence(0.6),
                ]),
                1,
            ),
            rule("default", Match::catch_all(), 2),
        ],
        pools: vec![
            pool("private", vec![0]),
            pool("code", vec![1]),
            pool("frontier", vec![2]),
        ],
        aliases: vec![Alias {
            name: "frontier".into(),
            description: String::new(),
            pool: PoolId(2),
        }],
    }
}

fn decide(requested: Requested, c: &Classification) -> RouteDecision {
    table().decide(&input(requested, c))
}

#[test]
fn first_matching_rule_wins() {
    let code = classification(0, 0.9, 0.1);
    assert_eq!(
        decide(Requested::Auto, &code),
        RouteDecision {
            via: Via::Rule(1),
            action: Action::Pool(PoolId(1)),
            max_tokens: None,
            shadow: None,
        }
    );
}

#[test]
fn low_confidence_falls_through_to_default() {
    let unsure = classification(0, 0.4, 0.1);
    assert_eq!(decide(Requested::Auto, &unsure).via, Via::Rule(2));
}

#[test]
fn named_alias_uses_its_pool_unless_a_rule_claims_it() {
    let code = classification(0, 0.9, 0.1);
    let d = decide(Requested::Alias(0), &code);
    assert_eq!(d.via, Via::Alias(0));
    assert_eq!(d.action, Action::Pool(PoolId(2)));

    let mut pii = classification(2, 0.9, 0.1);
    pii.pii.insert(PiiKind::Email);
    let d = decide(Requested::Alias(0), &pii);
    assert_eq!(
        d.via,
        Via::Rule(0),
        "alias = [\"*\"] rules apply to aliases too"
    );
}

#[test]
fn resolve_knows_auto_and_aliases_only() {
    let t = table();
    assert_eq!(t.resolve("auto"), Some(Requested::Auto));
    assert_eq!(t.resolve("frontier"), Some(Requested::Alias(0)));
    assert_eq!(t.resolve("gpt-4o"), None);
}

#[test]
fn explain_gives_a_reason_per_rule_seen() {
    let t = table();
    let c = classification(1, 0.9, 0.2);
    let e = explain(&t, &labels(), &input(Requested::Auto, &c));
    assert_eq!(e.decision.via, Via::Rule(2));
    let text = e.reasons.join("\n");
    assert!(
        text.contains("rule `pii-local` skipped: PII absent"),
        "{text}"
    );
    assert!(
        text.contains("rule `code-local` skipped: label `math` is not coding"),
        "{text}"
    );
    assert!(text.contains("rule `default` matched"), "{text}");
    assert!(text.contains("routed to pool `frontier`"), "{text}");
}

#[test]
fn unconditional_detects_catch_all() {
    assert!(Match::catch_all().is_unconditional());
    let m = auto_when(vec![Condition::Tools(true)]);
    assert!(!m.is_unconditional());
}

#[test]
fn task_condition_matches_the_task_head() {
    let mut t = table();
    t.rules[1].when = auto_when(vec![
        Condition::Task(vec![Label(1)]),
        Condition::MinConfidence(0.6),
    ]);
    let mut math = classification(2, 0.9, 0.1);
    math.task = Label(1);
    let d = t.decide(&input(Requested::Auto, &math));
    assert_eq!(d.via, Via::Rule(1));
}

#[test]
fn shadow_rules_are_reported_but_not_applied() {
    let mut t = table();
    let mut shadow = rule(
        "try-math-local",
        auto_when(vec![Condition::Label(vec![Label(1)])]),
        1,
    );
    shadow.shadow = true;
    t.rules.insert(0, shadow);
    let math = classification(1, 0.9, 0.1);
    let d = t.decide(&input(Requested::Auto, &math));
    assert_eq!(d.via, Via::Rule(3), "the default still decides");
    assert_eq!(d.shadow, Some(0));
}

#[test]
fn header_conditions_need_the_exact_value() {
    let mut t = table();
    t.rules[1].when = auto_when(vec![
        Condition::MinConfidence(0.6),
        Condition::Header {
            name: "x-team".into(),
            value: "search".into(),
        },
    ]);
    let c = classification(2, 0.9, 0.1);
    let with = |headers: Vec<(&str, &str)>| {
        t.decide(&RouteInput {
            requested: Requested::Auto,
            classification: &c,
            headers: &headers,
            key: None,
            team: None,
            budget_used: None,
        })
        .via
    };
    assert_eq!(with(vec![("x-team", "search")]), Via::Rule(1));
    assert_eq!(with(vec![("x-team", "ads")]), Via::Rule(2));
    assert_eq!(with(vec![]), Via::Rule(2));
}

#[test]
fn team_and_key_conditions_match_the_caller() {
    let mut t = table();
    t.rules[1].when = auto_when(vec![
        Condition::MinConfidence(0.6),
        Condition::Team(vec!["search".into()]),
    ]);
    let c = classification(2, 0.9, 0.1);
    let via = |team: Option<&str>| {
        t.decide(&RouteInput {
            requested: Requested::Auto,
            classification: &c,
            headers: &NoHeaders,
            key: Some("k"),
            team,
            budget_used: None,
        })
        .via
    };
    assert_eq!(via(Some("search")), Via::Rule(1));
    assert_eq!(via(Some("ads")), Via::Rule(2));
    assert_eq!(via(None), Via::Rule(2));
}

#[test]
fn a_budget_condition_matches_callers_past_the_share_and_never_those_without_one() {
    let mut t = table();
    t.rules[1].when = auto_when(vec![Condition::MinBudgetUsed(0.8)]);
    assert!(t.reads_budget());
    assert!(!table().reads_budget());
    let c = classification(2, 0.9, 0.1);
    let via = |budget_used: Option<f32>| {
        t.decide(&RouteInput {
            budget_used,
            ..input(Requested::Auto, &c)
        })
        .via
    };
    assert_eq!(via(Some(0.8)), Via::Rule(1));
    assert_eq!(via(Some(0.95)), Via::Rule(1));
    assert_eq!(via(Some(0.79)), Via::Rule(2));
    assert_eq!(via(None), Via::Rule(2));
    let rule = &t.rules[1].when.conditions[0];
    let classifier = crate::classify::HeuristicClassifier::default();
    assert_eq!(rule.describe(&classifier), "budget used ≥ 80%");
    let short = RouteInput {
        budget_used: Some(0.42),
        ..input(Requested::Auto, &c)
    };
    assert_eq!(rule.mismatch(&short, &classifier), "budget used 42% < 80%");
    assert_eq!(
        rule.mismatch(&input(Requested::Auto, &c), &classifier),
        "the caller has no budget"
    );
    assert!(Condition::MinBudgetUsed(0.5).covers(rule));
    assert!(!Condition::MinBudgetUsed(0.9).covers(rule));
}
