//! The learned classifier in the config: `kind = "linear"` loads a model file relative
//! to the config, rules may name only the model's labels, a bad file is a start-up
//! error; and the shipped model on conversational prompts written for this test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use crossroads::classify::linear::data::{TASKS, Targets};
use crossroads::classify::linear::format;
use crossroads::classify::linear::train::{self, Example, TrainOptions};
use crossroads::classify::linear::{FeatureSpec, LinearClassifier};
use crossroads::classify::{Classifier, Prompt};
use crossroads::config::{ConfigError, load};

/// A tiny model with domains `law` and `math`.
fn tiny_model(path: &Path) {
    let options = TrainOptions {
        epochs: 3,
        spec: FeatureSpec {
            hash_bits: 10,
            ..FeatureSpec::default()
        },
        ..TrainOptions::default()
    };
    let rows = [
        ("the court heard the appeal", 0, 3),
        ("a statute on contracts", 0, 3),
        ("solve the equation for x", 1, 1),
        ("integrate the polynomial", 1, 1),
    ];
    let examples: Vec<Example> = rows
        .iter()
        .map(|&(text, d, t)| {
            let targets = Targets {
                domain: Some(d),
                task: Some(t),
                outcome: None,
            };
            Example::new(&options.spec, text, targets, false)
        })
        .collect();
    let model = train::train(
        &examples,
        vec!["law".into(), "math".into()],
        TASKS.map(str::to_owned).to_vec(),
        None,
        &options,
        &mut |_, _| {},
    );
    format::write(path, &model).unwrap();
}

/// A config directory with `models/tiny.bin` and `routes.toml` whose classifier
/// section is `classifier` and whose code rule matches `code_match`.
fn setup(classifier: &str, code_match: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    tiny_model(&dir.path().join("models/tiny.bin"));
    let toml = common::standard_config(
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
    )
    .replace("[accounting]", &format!("{classifier}\n\n[accounting]"))
    .replace("label = [\"coding\"], min_confidence = 0.5", code_match);
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

const LINEAR: &str = "[classifier]\nkind = \"linear\"\nmodel = \"models/tiny.bin\"";

fn error(classifier: &str, code_match: &str) -> ConfigError {
    let (_dir, path) = setup(classifier, code_match);
    load(&path).expect_err("config should be invalid")
}

#[test]
fn linear_model_loads_relative_to_the_config_file() {
    let (_dir, path) = setup(LINEAR, "task = [\"coding\"], label = [\"law\"]");
    // From another working directory: the path is the config's, not the process's.
    let config = load(&path).unwrap();
    let names: Vec<&str> = config.classifier.labels().names().collect();
    assert_eq!(names, ["law", "math"]);
    let c = config
        .classifier
        .classify(&Prompt::user("solve the equation for x"));
    assert_eq!(config.classifier.labels().name(c.label), "math");
}

#[test]
fn rules_may_name_only_the_models_labels() {
    let e = error(LINEAR, "label = [\"coding\"]");
    assert_eq!(e.path, "rules[1].when.label");
    assert!(
        e.message.contains("no label `coding`") && e.message.contains("law, math"),
        "{e}"
    );
    let e = error(LINEAR, "task = [\"poetry\"]");
    assert_eq!(e.path, "rules[1].when.task");
    assert!(e.message.contains("no task `poetry`"), "{e}");
}

#[test]
fn model_file_problems_are_start_up_errors() {
    let e = error(
        "[classifier]\nkind = \"linear\"\nmodel = \"models/missing.bin\"",
        "task = [\"coding\"]",
    );
    assert_eq!(e.path, "classifier.model");
    assert!(e.message.contains("missing.bin"), "{e}");

    let e = error("[classifier]\nkind = \"linear\"", "task = [\"coding\"]");
    assert_eq!(e.path, "classifier.model");
    assert!(e.message.contains("needs a model file"), "{e}");

    let e = error(
        "[classifier]\nkind = \"heuristic\"\nmodel = \"models/tiny.bin\"",
        "task = [\"coding\"]",
    );
    assert_eq!(e.path, "classifier.model");

    let e = error("[classifier]\nkind = \"neural\"", "task = [\"coding\"]");
    assert_eq!(e.path, "classifier.kind");

    let (dir, path) = setup(LINEAR, "task = [\"coding\"]");
    let model = dir.path().join("models/tiny.bin");
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let e = load(&path).expect_err("a corrupt model must not load");
    assert_eq!(e.path, "classifier.model");
    assert!(e.message.contains("corrupt"), "{e}");

    std::fs::write(&model, b"not a model").unwrap();
    let e = load(&path).expect_err("a foreign file must not load");
    assert!(e.message.contains("not a crossroads model"), "{e}");
}

/// The shipped model on prompts phrased as people chat, not as exam questions.
fn fixture_accuracy(file: &str, task: bool) -> f64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let classifier = LinearClassifier::load(&root.join("models/crossroads-linear.bin")).unwrap();
    let text = std::fs::read_to_string(root.join("tests/fixtures").join(file)).unwrap();
    let mut right = 0;
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let c = classifier.classify(&Prompt::user(row["text"].as_str().unwrap()));
        let predicted = if task {
            classifier.task_labels().name(c.task)
        } else {
            classifier.labels().name(c.label)
        };
        right += usize::from(predicted == row["label"].as_str().unwrap());
        total += 1;
    }
    right as f64 / total as f64
}

#[test]
fn shipped_model_handles_conversational_prompts() {
    // Floors well under the measured figures (README): a guard against a broken model,
    // not the measurement itself.
    let domain = fixture_accuracy("conversational.jsonl", false);
    assert!(domain >= 0.4, "domain accuracy {domain}");
    let task = fixture_accuracy("conversational_tasks.jsonl", true);
    assert!(task >= 0.5, "task accuracy {task}");
}
