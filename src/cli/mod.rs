//! The `crossroads` command: `serve`, `check`, `explain`, `keys`, `spend`, `replay`, `feedback`,
//! and the classifier's `train`, `eval` ([`classifier`]) and `calibrate` ([`calibrate`]).
//! The commands that read the ledger name it alike ([`ledger`]).

pub mod calibrate;
pub mod classifier;
mod feedback;
mod keys;
pub mod ledger;
mod replay;
mod spend;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::route::{Action, DeploymentId};

/// A failed command: its message goes to stderr. Errors keep their types up to here.
pub(crate) type Failed = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "crossroads",
    version,
    about = "Routes each LLM request to a local specialist or a frontier model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Validate a config, print what it defines and what looks like a mistake.
    Check {
        #[arg(default_value = "routes.toml")]
        config: PathBuf,
        /// Exit 1 when there are warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Manage virtual keys in the key store (the ledger file).
    Keys {
        #[arg(long, short, default_value = "routes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Spend totals from the ledger.
    Spend {
        #[command(flatten)]
        ledger: ledger::LedgerArgs,
        /// How far back: 7d, 24h, 30m or a date (2026-11-01).
        #[arg(long, default_value = "7d")]
        since: String,
        /// team, key, model, deployment, rule, domain, tier or day.
        #[arg(long, default_value = "team")]
        by: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        csv: bool,
    },
    /// Show how a prompt or request would be routed, without calling any upstream.
    Explain {
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// A single user message.
        #[arg(long, conflicts_with = "request")]
        prompt: Option<String>,
        /// A chat-completions request body (JSON file).
        #[arg(long)]
        request: Option<PathBuf>,
        /// The `model` to ask for when using --prompt.
        #[arg(long, default_value = "auto")]
        model: String,
    },
    /// Train a classifier model from labelled JSONL (`text`, and `label` and/or
    /// `weak_correct` + `strong_correct`).
    Train(classifier::TrainArgs),
    /// Measure a model on labelled JSONL: per-class scores, routing quality, latency;
    /// the last line is one JSON object.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// Rows to measure: `validation` (where choices are made), `test` (read once per
        /// model, for reported figures), `train` or `all`.
        #[arg(long, default_value = "validation")]
        split: String,
        /// Draw the cost-quality curve against random routing into this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Fail (exit 1) unless a figure of the summary meets this bar, e.g.
        /// `macro_f1>=0.83` or `cpt50<=0.30`; repeat for more.
        #[arg(long)]
        require: Vec<String>,
    },
    /// Print the `min_difficulty` that sends a given share of traffic to the frontier,
    /// or that keeps locally answered requests at a target feedback score.
    Calibrate(calibrate::CalibrateArgs),
    /// Route the recorded traffic again through a candidate config, without calling any
    /// upstream: requests moved between tiers, projected cost and savings against what
    /// was spent, by rule and team.
    Replay(replay::ReplayArgs),
    /// Feedback given through `POST /v1/feedback`.
    Feedback {
        #[command(subcommand)]
        command: feedback::FeedbackCommand,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config, strict } => check(&config, strict),
        Command::Keys { config, command } => keys::run(&config, command),
        Command::Spend {
            ledger,
            since,
            by,
            team,
            csv,
        } => spend::run(&ledger, &since, &by, team, csv),
        Command::Explain {
            config,
            prompt,
            request,
            model,
        } => explain(&config, prompt, request, &model),
        Command::Train(args) => classifier::exit(classifier::train_command(args)),
        Command::Eval {
            model,
            data,
            split,
            plot,
            require,
        } => classifier::exit(classifier::eval_command(classifier::EvalArgs {
            model,
            data,
            split,
            plot,
            require,
        })),
        Command::Calibrate(args) => classifier::exit(calibrate::calibrate_command(args)),
        Command::Replay(args) => classifier::exit(replay::replay_command(args)),
        Command::Feedback { command } => feedback::run(command),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("error: invalid config: {e}");
        ExitCode::from(2)
    })
}

fn serve(path: &Path) -> ExitCode {
    init_tracing();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.server.workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_async(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(config: Config) -> Result<(), Failed> {
    let listen = config.server.listen;
    let grace = config.server.shutdown_grace;
    for d in &config.deployments {
        if let (Some(var), None) = (&d.api_key_env, &d.api_key) {
            tracing::warn!(deployment = %d.id, variable = %var, "API key variable is not set");
        }
    }
    let app = crate::app::build(config, config::process_env())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listen, "crossroads is serving");
    let file_watch = tokio::spawn(crate::reload::watch_file(app.state.reloader.clone()));
    let sighup = tokio::spawn(crate::reload::watch_sighup(app.state.reloader.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::server::run(listener, app.router, async {
        let _ = stop_rx.await;
    }));
    tokio::select! {
        result = &mut server => {
            result.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        () = crate::server::shutdown_signal() => {
            let _ = stop_tx.send(());
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests did not finish in time");
                server.abort();
            }
        }
    }
    file_watch.abort();
    sighup.abort();
    if let Some(cache) = &app.state.cache {
        // Answers are stored by background tasks (a Redis SET may be in flight), which
        // the runtime would cancel on exit: let them finish, within the grace period.
        if tokio::time::timeout(grace, cache.flush()).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "cache writes did not finish in time"
            );
        }
    }
    // Finished requests still owe the shared limits their settlements; unsent, their
    // reservations would hold room until their leases run out.
    if tokio::time::timeout(grace, app.state.admission.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shared-limit settlements did not finish in time"
        );
    }
    drop(app.state);
    app.ledger_writer.shutdown().await;
    tracing::info!("ledger flushed; bye");
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

fn check(path: &Path, strict: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    print!("{}", summary(&config));
    let lints = config::lint(&config);
    if lints.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("\nwarnings ({}):", lints.len());
    for l in &lints {
        println!("  {}: {}: {}", path.display(), l.path, l.message);
    }
    if strict {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A human-readable summary of a valid config.
pub fn summary(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid", config.source.display());
    let _ = writeln!(out, "\ndeployments ({}):", config.deployments.len());
    for d in &config.deployments {
        let key = match (&d.api_key_env, &d.api_key) {
            (None, _) => "no key".to_owned(),
            (Some(var), Some(_)) => format!("key from ${var}"),
            (Some(var), None) => format!("key from ${var} (NOT SET)"),
        };
        let _ = writeln!(
            out,
            "  {:<22} {:<8} {:<17} {:<28} in ${}/M out ${}/M  {}",
            d.id,
            d.tier.as_str(),
            d.provider.as_str(),
            d.model,
            crate::accounting::Usd::from_pico(d.price.input.micros() as i64 * 1_000_000),
            crate::accounting::Usd::from_pico(d.price.output.micros() as i64 * 1_000_000),
            key
        );
    }
    let name = |i: &DeploymentId| config.deployment(*i).map_or("?", |d| d.id.as_str());
    let _ = writeln!(out, "\npools ({}):", config.routes.pools.len());
    for p in &config.routes.pools {
        let order: Vec<_> = p.candidates.iter().map(name).collect();
        let _ = writeln!(out, "  {:<22} tries {}", p.id, order.join(" → "));
    }
    let _ = writeln!(out, "\nmodels: auto (rules decide)");
    for a in &config.routes.aliases {
        let pool = config.routes.pool(a.pool).map_or("?", |p| p.id.as_str());
        let _ = writeln!(out, "  {:<22} → pool {}", a.name, pool);
    }
    let classifier = config.classifier.as_ref();
    let _ = writeln!(
        out,
        "\nrules ({}, first match wins):",
        config.routes.rules.len()
    );
    for (i, r) in config.routes.rules.iter().enumerate() {
        let action = match &r.action {
            Action::Pool(p) => format!(
                "→ pool {}",
                config.routes.pool(*p).map_or("?", |p| p.id.as_str())
            ),
            Action::Reject { status, .. } => format!("→ reject {status}"),
        };
        let conditions = r.when.describe(classifier);
        let when = if conditions.is_empty() {
            "always".to_owned()
        } else {
            conditions.join(", ")
        };
        let _ = writeln!(
            out,
            "  {:>2}. {:<20} {:<28} when {}",
            i + 1,
            r.id,
            action,
            when
        );
    }
    let _ = writeln!(
        out,
        "\nreference model for savings: {} (source {}, as of {})",
        config.reference.model, config.reference.source, config.reference.as_of
    );
    let _ = writeln!(out, "ledger: {:?}", config.ledger.backend);
    let _ = writeln!(out, "limits: {}", config.limits.describe());
    let _ = writeln!(out, "cache: {}", describe_cache(config.cache.as_ref()));
    out
}

/// One line on the response cache: backend, bounds, TTL and who shares entries.
fn describe_cache(cache: Option<&config::CacheConfig>) -> String {
    let Some(c) = cache else {
        return "off".to_owned();
    };
    let backend = match &c.backend {
        config::CacheBackend::Memory { max_bytes } => {
            format!("memory, at most {}", bytes(*max_bytes))
        }
        config::CacheBackend::Redis {
            url,
            key_prefix,
            timeout,
        } => format!(
            "redis at {}, keys {key_prefix}*, {} ms per operation",
            redact_password(url.expose()),
            timeout.as_millis()
        ),
    };
    let scope = match c.scope {
        config::CacheScope::Team => "per team",
        config::CacheScope::Global => "shared by all teams",
    };
    format!(
        "{backend}, answers up to {}, TTL {} s, {scope}",
        bytes(c.max_entry_bytes as u64),
        c.ttl.as_secs_f64()
    )
}

/// `n` bytes in the largest binary unit that divides it, e.g. 64 MiB.
fn bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// A URL with its password, if any, shown as `*****`.
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("*****"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

fn explain(path: &Path, prompt: Option<String>, request: Option<PathBuf>, model: &str) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let body = match (prompt, request) {
        (Some(p), _) => serde_json::json!({
            "model": model,
            "messages": [{ "role": "user", "content": p }],
        })
        .to_string()
        .into_bytes(),
        (None, Some(file)) => match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("error: give --prompt TEXT or --request FILE.json");
            return ExitCode::from(2);
        }
    };
    let result = crate::request::Request::parse(&body).and_then(|request| {
        let runtime = crate::state::Runtime::new(config, None).map_err(|e| {
            crate::error::ApiError::Internal {
                message: e.to_string(),
            }
        })?;
        let no_headers = axum::http::HeaderMap::new();
        crate::handler::explain::explain_request(
            &Arc::new(runtime),
            &request,
            &no_headers,
            crate::pipeline::Caller::default(),
        )
    });
    match result {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", String::from_utf8_lossy(&e.to_json()));
            ExitCode::from(2)
        }
    }
}
