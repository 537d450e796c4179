//! `crossroads train` and `eval`: the classifier's life cycle on labelled JSONL files
//! (`calibrate` is [`super::calibrate`]). They call the same code that serves requests
//! ([`LinearClassifier::classify`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::classify::linear::FeatureSpec;
use crate::classify::linear::data::{LabelMap, Row, Split, TASKS, is_calibration};
use crate::classify::linear::metrics::{self, Confusion, ROUTELLM_BINS, Routing};
use crate::classify::linear::train::{Example, TrainOptions, WordVectors};
use crate::classify::linear::{Head, LinearClassifier, format, train};
use crate::classify::{Classifier, Prompt};

/// Where it always was: `classify`'s tests use it.
pub use super::calibrate::threshold_for_share;

pub(super) use super::Failed;

/// Exit code 2 with the message, as the other commands do for bad input.
pub fn exit(result: Result<(), Failed>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Reads JSONL rows from every file, keeping those in `split`; marks the rows of a file
/// whose labels are all task labels as [`Row::task_only`].
fn read_rows(files: &[PathBuf], split: Split) -> Result<Vec<Row>, Failed> {
    let mut rows = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let first = rows.len();
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row = Row::parse(line).map_err(|e| format!("{}:{}: {e}", file.display(), i + 1))?;
            if split.contains(&row.text) {
                rows.push(row);
            }
        }
        let labels = || {
            rows[first..]
                .iter()
                .filter_map(|r: &Row| r.label.as_deref())
        };
        let task_only = labels().next().is_some() && labels().all(|l| TASKS.contains(&l));
        for row in &mut rows[first..] {
            row.task_only = task_only;
            row.file = index;
        }
    }
    if rows.is_empty() {
        return Err("no rows in the given data (and split)".into());
    }
    Ok(rows)
}

fn parse_split(s: &str) -> Result<Split, Failed> {
    Split::parse(s)
        .ok_or_else(|| format!("unknown split `{s}`; use train, validation, test or all").into())
}

/// A one-line progress bar on stderr, redrawn in place.
struct Progress {
    what: &'static str,
    last: usize,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        Progress {
            what,
            last: usize::MAX,
        }
    }

    fn show(&mut self, done: usize, total: usize) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if percent == self.last {
            return;
        }
        self.last = percent;
        let filled = percent * 30 / 100;
        eprint!(
            "\r{:<12} [{}{}] {percent:>3}%",
            self.what,
            "#".repeat(filled),
            " ".repeat(30 - filled)
        );
        if done >= total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

/// Options of `crossroads train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A JSONL file; repeat for more.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Where to write the model file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train this many runs, from seeds --seed, --seed + 1, …, and average their
    /// weights (an ensemble of the runs' logits that costs one model to serve).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub seeds: u16,
    /// Rows to learn from: `train` (all but the validation and test splits, 10% each,
    /// chosen by a hash of the text) or `all`.
    #[arg(long, default_value = "train")]
    pub split: String,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 2.0)]
    pub learning_rate: f32,
    /// The frontier head's learning rate, relative to --learning-rate.
    #[arg(long, default_value_t = 0.5)]
    pub frontier_rate: f32,
    /// What the frontier head keeps of its n-gram (topic) weights after the joint run.
    #[arg(long, default_value_t = 1.0)]
    pub topic_scale: f32,
    /// Epochs of the residual pass that refits the frontier head's dense (complexity)
    /// weights on each row's own outcome; 0 for none.
    #[arg(long, default_value_t = 0)]
    pub residual_epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    pub residual_rate: f32,
    /// Let each data file learn its own frontier outcome offset while training (each
    /// file's outcomes come from its own pair of models).
    #[arg(long)]
    pub source_offsets: bool,
    #[arg(long, default_value_t = 0.0)]
    pub residual_l2: f32,
    /// L2 penalty (weight decay per step on the rows a step touches).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// How much a row's own outcome counts against the outcome rates of its MMLU
    /// subject or label (1: only its own, 0: only the group's).
    #[arg(long, default_value_t = 0.0)]
    pub outcome_keep: f32,
    /// A data file (also given with --data) whose outcomes are not learned from: the
    /// difficulty head trains without it, so it can be measured on a dataset it never
    /// saw (leave-one-dataset-out). Repeat for more.
    #[arg(long)]
    pub without_outcomes: Vec<PathBuf>,
    /// A data file (also given with --data) whose outcomes teach only the complexity
    /// weights of the residual pass, not the topic weights. Repeat for more.
    #[arg(long)]
    pub complexity_only: Vec<PathBuf>,
    /// Static word vectors to distill into the word rows (`PATH.txt`: one word a line;
    /// `PATH.f32`: their vectors, little-endian f32; see scripts/distill/).
    #[arg(long)]
    pub word_vectors: Option<PathBuf>,
    /// Scale of the word vectors against the n-gram features.
    #[arg(long, default_value_t = 0.1)]
    pub vector_scale: f32,
    /// log2 of the number of hashed feature buckets.
    #[arg(long, default_value_t = 17)]
    pub hash_bits: u8,
    /// Shortest and longest character n-grams (0 and 0 for none).
    #[arg(long, default_value_t = crate::classify::linear::FeatureSpec::default().char_min)]
    pub char_min: u8,
    #[arg(long, default_value_t = crate::classify::linear::FeatureSpec::default().char_max)]
    pub char_max: u8,
}

pub fn train_command(args: TrainArgs) -> Result<(), Failed> {
    let started = Instant::now();
    let split = parse_split(&args.split)?;
    if matches!(split, Split::Validation | Split::Test) {
        return Err(
            "train learns from `train` (or `all`); validation and test are for eval".into(),
        );
    }
    let mut rows = read_rows(&args.data, split)?;
    for path in &args.without_outcomes {
        let Some(file) = args.data.iter().position(|d| d == path) else {
            return Err(format!(
                "--without-outcomes {}: not one of the --data files",
                path.display()
            )
            .into());
        };
        for row in rows.iter_mut().filter(|r| r.file == file) {
            row.weak_correct = None;
            row.strong_correct = None;
        }
    }
    let complexity_only: Vec<usize> = args
        .complexity_only
        .iter()
        .map(|path| {
            args.data.iter().position(|d| d == path).ok_or_else(|| {
                format!(
                    "--complexity-only {}: not one of the --data files",
                    path.display()
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let map = LabelMap::from_rows(rows.iter());
    map.check_size()?;
    let options = TrainOptions {
        seed: args.seed,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        frontier_rate: args.frontier_rate,
        l2: args.l2,
        topic_scale: args.topic_scale,
        residual_epochs: args.residual_epochs,
        source_offsets: args.source_offsets,
        residual_rate: args.residual_rate,
        residual_l2: args.residual_l2,
        seeds: usize::from(args.seeds),
        spec: crate::classify::linear::FeatureSpec {
            hash_bits: args.hash_bits,
            char_min: args.char_min,
            char_max: args.char_max,
            ..Default::default()
        },
    };
    if !(10..=22).contains(&args.hash_bits) {
        return Err("--hash-bits must be in 10..=22".into());
    }
    if args.char_min > args.char_max
        || args.char_max > 8
        || (args.char_min == 0) != (args.char_max == 0)
    {
        return Err(
            "--char-min and --char-max must satisfy 1 <= min <= max <= 8 (or both 0)".into(),
        );
    }
    let mut bar = Progress::new("featurizing");
    let mut examples = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let targets = map.targets(row);
        let calibration = is_calibration(&row.text);
        let mut example = Example::new(&options.spec, &row.text, targets, calibration);
        example.source = row.file;
        example.complexity_only = complexity_only.contains(&row.file);
        examples.push(example);
        if i % 512 == 0 {
            bar.show(i, rows.len());
        }
    }
    bar.show(rows.len(), rows.len());
    let groups: Vec<Option<String>> = rows.iter().map(Row::outcome_group).collect();
    train::smooth_outcomes(&mut examples, &groups, args.outcome_keep);
    let count = |f: &dyn Fn(&Example) -> bool| examples.iter().filter(|e| f(e)).count();
    eprintln!(
        "{} rows: {} with a domain, {} with a task, {} with outcomes; {} held back for calibration",
        examples.len(),
        count(&|e| e.targets.domain.is_some()),
        count(&|e| e.targets.task.is_some()),
        count(&|e| e.targets.outcome.is_some()),
        count(&|e| e.calibration),
    );
    let vectors = args
        .word_vectors
        .as_deref()
        .map(|path| read_word_vectors(path, &options.spec, args.vector_scale))
        .transpose()?;
    let mut bar = Progress::new("training");
    let model = train::train(
        &examples,
        map.domains.clone(),
        map.tasks.clone(),
        vectors.as_ref(),
        &options,
        &mut |done, total| bar.show(done, total),
    );
    format::write(&args.out, &model)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({:.1} MB) in {:.1} s: {} domains ({}), {} tasks ({}), temperatures {:.2?}",
        args.out.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        model.domains.len(),
        model.domains.join(", "),
        model.tasks.len(),
        model.tasks.join(", "),
        model.temperatures,
    );
    Ok(())
}

/// Reads `PATH.txt` (words) and `PATH.f32` (their vectors) into word vectors.
fn read_word_vectors(path: &Path, spec: &FeatureSpec, scale: f32) -> Result<WordVectors, Failed> {
    let words_path = path.with_extension("txt");
    let vectors_path = path.with_extension("f32");
    let words: Vec<String> = std::fs::read_to_string(&words_path)
        .map_err(|e| format!("cannot read {}: {e}", words_path.display()))?
        .lines()
        .map(str::to_owned)
        .collect();
    let bytes = std::fs::read(&vectors_path)
        .map_err(|e| format!("cannot read {}: {e}", vectors_path.display()))?;
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let dims = floats.len().checked_div(words.len()).unwrap_or(0);
    let vectors = WordVectors::new(spec, &words, &floats, dims, scale)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!(
        "{} word vectors of {dims} dimensions in {} buckets",
        words.len(),
        vectors.len()
    );
    Ok(vectors)
}

/// Loads a model file, timing it.
pub(super) fn load_model(path: &Path) -> Result<(LinearClassifier, f64), Failed> {
    let started = Instant::now();
    let classifier =
        LinearClassifier::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((classifier, started.elapsed().as_secs_f64() * 1e3))
}

/// Options of `crossroads eval`.
pub struct EvalArgs {
    pub model: PathBuf,
    pub data: Vec<PathBuf>,
    pub split: String,
    pub plot: Option<PathBuf>,
    /// Bars like `macro_f1>=0.83` or `cpt50<=0.3`, checked against the summary.
    pub require: Vec<String>,
}

pub fn eval_command(args: EvalArgs) -> Result<(), Failed> {
    let split = parse_split(&args.split)?;
    let (classifier, load_ms) = load_model(&args.model)?;
    let rows = read_rows(&args.data, split)?;
    let model = classifier.model();
    let map = LabelMap::new(model.domains.clone(), model.tasks.clone());
    let labelled: Vec<&str> = rows.iter().filter_map(|r| r.label.as_deref()).collect();
    let head = if labelled.is_empty() {
        None
    } else {
        Some(map.head_for(labelled.iter().copied()).ok_or_else(|| {
            "the labels are neither all domains nor all tasks of this model".to_owned()
        })?)
    };
    let names = match head {
        Some(Head::Task) => classifier.task_labels(),
        _ => classifier.labels(),
    };
    let k = names.names().count();
    let mut confusion = Confusion::new(k);
    let mut calibration = Vec::new();
    let mut routed = Vec::new();
    let mut graded = Vec::new();
    let mut micros = Vec::with_capacity(rows.len());
    for row in &rows {
        let prompt = Prompt::user(&row.text);
        let started = Instant::now();
        let c = classifier.classify(&prompt);
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        if let (Some(head), Some(label)) = (head, row.label.as_deref()) {
            let (predicted, confidence) = match head {
                Head::Task => (c.task, c.task_confidence),
                _ => (c.label, c.confidence),
            };
            if let Some(truth) = names.find(label) {
                confusion.add(usize::from(truth.0), usize::from(predicted.0));
                calibration.push((confidence, truth == predicted));
            }
        }
        if let (Some(w), Some(s)) = (row.weak_correct, row.strong_correct) {
            routed.push((c.difficulty, w, s));
        }
        if let Some(level) = row.level {
            graded.push((c.difficulty, level));
        }
    }
    let level_rho = metrics::spearman(&graded);
    let routing = metrics::routing(&routed, ROUTELLM_BINS);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "model {} (loaded in {load_ms:.0} ms); {} rows ({:?} split)",
        args.model.display(),
        rows.len(),
        split
    );
    if let Some(head) = head {
        let names: Vec<&str> = names.names().collect();
        classification_report(&mut report, head, &names, &confusion, &calibration);
    }
    if let Some(r) = &routing {
        routing_report(&mut report, r);
    }
    if let Some(rho) = level_rho {
        let _ = writeln!(
            report,
            "\ndifficulty against the graded level of {} rows: Spearman {rho:.4}",
            graded.len()
        );
    }
    micros.sort_by(f64::total_cmp);
    let pct = |q: f64| metrics::quantile(&micros.iter().map(|&m| m as f32).collect::<Vec<_>>(), q);
    let _ = writeln!(
        report,
        "\nlatency per classification (PII scan included): p50 {:.1} µs, p99 {:.1} µs",
        pct(0.5),
        pct(0.99)
    );
    print!("{report}");
    if let (Some(path), Some(r)) = (&args.plot, &routing) {
        std::fs::write(path, plot_svg(r))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let mut summary = serde_json::json!({ "n": rows.len(), "load_ms": load_ms.round() });
    if let Some(head) = head {
        summary["head"] = head.as_str().into();
        summary["labelled"] = confusion.total().into();
        summary["accuracy"] = round4(confusion.accuracy()).into();
        summary["macro_f1"] = round4(confusion.macro_f1()).into();
        summary["balanced_accuracy"] = round4(confusion.balanced_accuracy()).into();
    }
    if let Some(r) = &routing {
        summary["routed"] = r.n.into();
        summary["apgr"] = round4(r.apgr).into();
        summary["cpt50"] = round4(r.cpt50).into();
        summary["cpt80"] = round4(r.cpt80).into();
    }
    if let Some(rho) = level_rho {
        summary["level_rho"] = round4(rho).into();
    }
    let failed: Vec<String> = args
        .require
        .iter()
        .map(|bar| check_bar(&summary, bar))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    for f in &failed {
        eprintln!("bar missed: {f}");
    }
    println!("{summary}");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bar(s) missed", failed.len()).into())
    }
}

/// Checks one `KEY>=VALUE` or `KEY<=VALUE` bar; `Some(description)` when it is missed.
fn check_bar(summary: &serde_json::Value, bar: &str) -> Result<Option<String>, Failed> {
    let (key, at_least, value) = if let Some((k, v)) = bar.split_once(">=") {
        (k, true, v)
    } else if let Some((k, v)) = bar.split_once("<=") {
        (k, false, v)
    } else {
        return Err(format!("--require `{bar}`: write KEY>=VALUE or KEY<=VALUE").into());
    };
    let bound: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("--require `{bar}`: `{value}` is not a number"))?;
    let key = key.trim();
    let Some(actual) = summary.get(key).and_then(serde_json::Value::as_f64) else {
        return Ok(Some(format!("{bar} (no `{key}` was measured)")));
    };
    let ok = if at_least {
        actual >= bound
    } else {
        actual <= bound
    };
    Ok((!ok).then(|| format!("{bar} (measured {actual})")))
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn classification_report(
    out: &mut String,
    head: Head,
    names: &[&str],
    confusion: &Confusion,
    calibration: &[(f32, bool)],
) {
    let _ = writeln!(
        out,
        "\n{} head: {} labelled rows\n\n  {:<18} {:>9} {:>9} {:>9} {:>8}",
        head.as_str(),
        confusion.total(),
        "label",
        "precision",
        "recall",
        "f1",
        "support"
    );
    for (i, name) in names.iter().enumerate() {
        let s = confusion.score(i);
        if s.support == 0 && s.predicted == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {name:<18} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            s.precision, s.recall, s.f1, s.support
        );
    }
    let _ = writeln!(
        out,
        "\n  accuracy {:.4}   balanced accuracy {:.4}   macro-F1 {:.4}   calibration error (ECE) {:.4}",
        confusion.accuracy(),
        confusion.balanced_accuracy(),
        confusion.macro_f1(),
        metrics::calibration_error(calibration)
    );
    let short: Vec<String> = names.iter().map(|n| n.chars().take(5).collect()).collect();
    let _ = write!(
        out,
        "\n  confusion (rows: truth, columns: predicted)\n  {:<18}",
        ""
    );
    for s in &short {
        let _ = write!(out, "{s:>6}");
    }
    let _ = writeln!(out);
    for (t, name) in names.iter().enumerate() {
        if confusion.score(t).support == 0 {
            continue;
        }
        let _ = write!(out, "  {name:<18}");
        for p in 0..names.len() {
            let _ = write!(out, "{:>6}", confusion.count(t, p));
        }
        let _ = writeln!(out);
    }
}

fn routing_report(out: &mut String, r: &Routing) {
    let _ = writeln!(
        out,
        "\nrouting: {} rows with outcomes; weak model accuracy {:.4}, strong {:.4}\n\n  {:>9} {:>12} {:>9}",
        r.n, r.weak_accuracy, r.strong_accuracy, "threshold", "strong share", "accuracy"
    );
    for p in &r.curve {
        let _ = writeln!(
            out,
            "  {:>9.4} {:>12.3} {:>9.4}",
            p.threshold, p.strong_share, p.accuracy
        );
    }
    let _ = writeln!(
        out,
        "\n  APGR {:.4} (random 0.5)   CPT(50%) {:.4} (random 0.5)   CPT(80%) {:.4} (random 0.8)",
        r.apgr, r.cpt50, r.cpt80
    );
}

/// The cost–quality curve against random routing, as a standalone SVG.
pub fn plot_svg(r: &Routing) -> String {
    let (w, h, m) = (640.0, 420.0, 56.0);
    let lo = r.weak_accuracy.min(r.strong_accuracy) - 0.02;
    let hi = r.weak_accuracy.max(r.strong_accuracy) + 0.02;
    let x = |share: f64| m + share * (w - 2.0 * m);
    let y = |acc: f64| h - m - (acc - lo) / (hi - lo) * (h - 2.0 * m);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<path d="M{m} {m} V{} H{}" fill="none" stroke="black"/>"#,
        h - m,
        w - m
    );
    for i in 0..=5 {
        let share = f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}%</text>"#,
            x(share),
            h - m + 16.0,
            share * 100.0
        );
        let acc = lo + (hi - lo) * share;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.3}</text>"#,
            m - 6.0,
            y(acc) + 4.0,
            acc
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">strong-model calls</text>"#,
        w / 2.0,
        h - 14.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="24" text-anchor="middle">accuracy vs. strong calls: APGR {:.3}, CPT(50%) {:.1}%, CPT(80%) {:.1}%</text>"#,
        w / 2.0,
        r.apgr,
        r.cpt50 * 100.0,
        r.cpt80 * 100.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="5 4"/>"##,
        x(0.0),
        y(r.weak_accuracy),
        x(1.0),
        y(r.strong_accuracy)
    );
    let points: Vec<String> = r
        .curve
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.strong_share), y(p.accuracy)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#c0392b" stroke-width="2"/>"##,
        points.join(" ")
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#c0392b">classifier</text><text x="{:.1}" y="{:.1}" fill="#999">random</text>"##,
        w - m - 80.0,
        h - m - 40.0,
        w - m - 80.0,
        h - m - 24.0
    );
    svg.push_str("</svg>\n");
    svg
}
