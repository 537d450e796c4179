//! Config validation: every mistake is named with the file, the field path and what is
//! wrong; `crossroads check` exits non-zero on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::standard_config;
use crossroads::config::{ConfigError, from_toml_str};

fn base() -> String {
    standard_config(
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
    )
}

fn error_for(toml: &str) -> ConfigError {
    from_toml_str(toml, Path::new("routes.toml"), &|_| None).expect_err("config should be invalid")
}

#[test]
fn the_standard_test_config_is_valid() {
    from_toml_str(&base(), Path::new("routes.toml"), &|_| None).unwrap();
}

#[test]
fn the_shipped_routes_toml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let config = crossroads::config::load(&path).unwrap();
    assert!(config.routes.rules.iter().any(|r| r.id == "default"));
    assert!(
        config
            .deployments
            .iter()
            .any(|d| d.tier == crossroads::config::Tier::Local)
    );
    assert!(
        config
            .deployments
            .iter()
            .any(|d| d.tier == crossroads::config::Tier::Frontier)
    );
}

#[test]
fn unknown_field_names_its_path() {
    let e = error_for(&base().replace("tier = \"local\"", "tier = \"local\"\nbase_ur = \"x\""));
    assert_eq!(e.file, "routes.toml");
    assert_eq!(e.path, "deployments[0].base_ur");
    assert!(e.message.contains("unknown field `base_ur`"), "{e}");
}

#[test]
fn unknown_pool_in_a_rule() {
    let e = error_for(&base().replace(
        "id = \"default\"\npool = \"frontier\"",
        "id = \"default\"\npool = \"frontiers\"",
    ));
    assert_eq!(e.path, "rules[2].pool");
    assert!(e.message.contains("unknown pool `frontiers`"), "{e}");
}

#[test]
fn missing_default_rule() {
    let e = error_for(&base().replace("[[rules]]\nid = \"default\"\npool = \"frontier\"", ""));
    assert_eq!(e.path, "rules");
    assert!(e.message.contains("default rule is required"), "{e}");
}

#[test]
fn rule_after_the_default_is_unreachable() {
    let toml = format!(
        "{}\n[[rules]]\nid = \"late\"\nwhen = {{ tools = true }}\npool = \"local\"\n",
        base()
    );
    let e = error_for(&toml);
    assert_eq!(e.path, "rules[3]");
    assert!(e.message.contains("can never match"), "{e}");
}

#[test]
fn bad_url() {
    let e = error_for(&base().replacen("http://127.0.0.1:9/v1", "not a url", 1));
    assert_eq!(e.path, "deployments[0].base_url");
    let e = error_for(&base().replacen("http://127.0.0.1:9/v1", "ftp://host/v1", 1));
    assert_eq!(e.path, "deployments[0].base_url");
}

#[test]
fn price_missing_for_a_model() {
    let e = error_for(&base().replace("model = \"gpt-4.1-mini\"\ntier", "model = \"gpt-9\"\ntier"));
    assert_eq!(e.path, "deployments[2].price");
    assert!(e.message.contains("no price for model `gpt-9`"), "{e}");
}

#[test]
fn unknown_label_names_the_known_ones() {
    let e = error_for(&base().replace("label = [\"coding\"]", "label = [\"cooking\"]"));
    assert_eq!(e.path, "rules[1].when.label");
    assert!(
        e.message.contains("no label `cooking`") && e.message.contains("coding"),
        "{e}"
    );
}

#[test]
fn wrong_types_and_ranges() {
    let e =
        error_for(&base().replace("request_timeout_ms = 5000", "request_timeout_ms = \"soon\""));
    assert_eq!(e.path, "server.request_timeout_ms");
    let e = error_for(&base().replace("min_confidence = 0.5", "min_confidence = 1.5"));
    assert_eq!(e.path, "rules[1].when.min_confidence");
    let e = error_for(&base().replace("pii = true", "pii_kinds = [\"dna\"]"));
    assert_eq!(e.path, "rules[0].when.pii_kinds");
    let e = error_for(&base().replace("[server]", "[server]\nworkers = 100000"));
    assert_eq!(e.path, "server.workers");
}

#[test]
fn workers_default_to_one_per_core() {
    let parse = |toml: &str| {
        from_toml_str(toml, Path::new("routes.toml"), &|_| None)
            .expect("valid")
            .server
            .workers
    };
    assert_eq!(parse(&base()), None);
    assert_eq!(
        parse(&base().replace("[server]", "[server]\nworkers = 0")),
        None
    );
    assert_eq!(
        parse(&base().replace("[server]", "[server]\nworkers = 1")),
        Some(1)
    );
}

#[test]
fn duplicate_ids_and_unknown_references() {
    let e = error_for(&base().replace("id = \"frontier-b\"", "id = \"frontier-a\""));
    assert_eq!(e.path, "deployments[2].id");
    let e = error_for(&base().replace(
        "deployments = [\"frontier-a\", \"frontier-b\"]",
        "deployments = [\"frontier-a\", \"frontier-z\"]",
    ));
    assert_eq!(e.path, "pools[1].deployments[1]");
    let e = error_for(&base().replace("[[pools]]\nid = \"frontier\"\ndeployments = [\"frontier-a\", \"frontier-b\"]", "[[pools]]\nid = \"frontier\"\ndeployments = [\"frontier-a\", \"frontier-b\"]\nfallback = \"local\""));
    assert!(e.message.contains("loops back"), "{e}");
}

#[test]
fn secrets_come_from_the_environment() {
    let toml = base().replacen(
        "tier = \"frontier\"",
        "tier = \"frontier\"\napi_key_env = \"TEST_FRONTIER_KEY\"",
        1,
    );
    let config = from_toml_str(&toml, Path::new("routes.toml"), &|name| {
        (name == "TEST_FRONTIER_KEY").then(|| "sk-test-123".to_owned())
    })
    .unwrap();
    let d = config
        .deployments
        .iter()
        .find(|d| d.id == "frontier-a")
        .unwrap();
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-test-123");
    assert_eq!(format!("{:?}", d.api_key), "Some(*****)");
}

#[test]
fn check_command_prints_a_summary_or_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("frontier-a") && text.contains("code-local"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        base().replace(
            "pool = \"frontier\"\n\n[[prices]]",
            "pool = \"nowhere\"\n\n[[prices]]",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("rules[2].pool") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn environment_overrides_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, base()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["check"])
        .arg(&path)
        .env("CROSSROADS__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn check_warns_about_shadowed_rules_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let shadowed = base().replace(
        "[[rules]]\nid = \"default\"",
        "[[rules]]\nid = \"sure-code\"\nwhen = { label = [\"coding\"], min_confidence = 0.9 }\npool = \"frontier\"\n\n[[rules]]\nid = \"default\"",
    );
    std::fs::write(&path, shadowed).unwrap();
    let run = |strict: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crossroads"));
        cmd.arg("check").arg(&path);
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rules[2]: rule `sure-code` can never match: rule `code-local`"),
        "{text}"
    );
    assert_eq!(run(true).status.code(), Some(1));
}

#[test]
fn check_prints_the_cache_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let check = |toml: String| {
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_crossroads"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("cache: "))
            .unwrap_or_else(|| panic!("no cache line in:\n{text}"))
            .to_owned()
    };
    assert_eq!(check(base()), "off");
    assert_eq!(
        check(format!(
            "{}\n[cache]\nmax_bytes = 67108864\nmax_entry_bytes = 65536\nttl_ms = 90000\n",
            base()
        )),
        "memory, at most 64 MiB, answers up to 64 KiB, TTL 90 s, per team"
    );
    let redis = check(format!(
        "{}\n[cache]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379/2\"\nscope = \"global\"\n",
        base()
    ));
    assert_eq!(
        redis,
        "redis at redis://:*****@127.0.0.1:6379/2, keys crossroads:cache:*, 100 ms per operation, \
         answers up to 1 MiB, TTL 3600 s, shared by all teams"
    );
}

#[test]
fn a_cost_model_prices_a_self_hosted_deployment() {
    let model = "cost_model = { usd_per_hour = 2.0, input_tokens_per_second = 10000, output_tokens_per_second = 1000 }";
    let toml = base().replace("price = { input = 0, output = 0 }", model);
    let config = from_toml_str(&toml, Path::new("routes.toml"), &|_| None).unwrap();
    let local = config
        .deployments
        .iter()
        .find(|d| d.id == "local-a")
        .unwrap();
    // $2/h over 3.6M output tokens an hour; input is ten times faster.
    assert_eq!(local.price.output.micros(), 555_556);
    assert_eq!(local.price.input.micros(), 55_556);
    assert_eq!(local.price.cached_input, local.price.input);

    let both = base().replace(
        "price = { input = 0, output = 0 }",
        &format!("price = {{ input = 0, output = 0 }}\n{model}"),
    );
    assert_eq!(error_for(&both).path, "deployments[0].cost_model");
    let stalled = toml.replace(
        "output_tokens_per_second = 1000",
        "output_tokens_per_second = 0",
    );
    let e = error_for(&stalled);
    assert_eq!(e.path, "deployments[0].cost_model.output_tokens_per_second");
    assert!(e.message.contains("positive"), "{e}");
    let negative = toml.replace("usd_per_hour = 2.0", "usd_per_hour = -2.0");
    assert_eq!(
        error_for(&negative).path,
        "deployments[0].cost_model.usd_per_hour"
    );
}

#[test]
fn a_deployment_default_above_what_admission_reserves_is_refused() {
    let with_default = |n: u64| {
        base().replacen(
            "tier = \"local\"",
            &format!("tier = \"local\"\ndefault_max_tokens = {n}"),
            1,
        ) + "\n[budgets]\ndefault_max_tokens = 1000\n"
    };
    let e = error_for(&with_default(1001));
    assert_eq!(e.path, "deployments[0].default_max_tokens");
    assert!(
        e.message
            .contains("exceeds budgets.default_max_tokens (1000)"),
        "{e}"
    );
    let config = from_toml_str(&with_default(1000), Path::new("routes.toml"), &|_| None).unwrap();
    assert_eq!(config.deployments[0].default_max_tokens, Some(1000));
}

const EMBEDDINGS: &str = r#"
[[deployments]]
id = "embed-a"
provider = "openai_compatible"
api = "embeddings"
base_url = "http://127.0.0.1:9/v1"
model = "text-embedding-3-small"
tier = "frontier"
price = { input = 0.02, output = 0 }

[[pools]]
id = "embed"
deployments = ["embed-a"]
"#;

#[test]
fn embeddings_deployments_are_reached_only_through_their_own_pools_and_aliases() {
    let valid = base() + EMBEDDINGS + "\n[[aliases]]\nname = \"embed\"\npool = \"embed\"\n";
    let config = from_toml_str(&valid, Path::new("routes.toml"), &|_| None).unwrap();
    let pool = config
        .routes
        .pools
        .iter()
        .find(|p| p.id == "embed")
        .unwrap();
    assert_eq!(pool.api, crossroads::route::Api::Embeddings);
    assert_eq!(config.routes.pools[0].api, crossroads::route::Api::Chat);

    let mixed = base().replacen(
        "id = \"frontier-b\"",
        "id = \"frontier-b\"\napi = \"embeddings\"",
        1,
    );
    let e = error_for(&mixed);
    assert_eq!(e.path, "pools[1].deployments[1]");
    assert!(e.message.contains("must serve the same API"), "{e}");

    let falls_back_to_chat = (base() + EMBEDDINGS).replace(
        "deployments = [\"embed-a\"]",
        "deployments = [\"embed-a\"]\nfallback = \"frontier\"",
    );
    let e = error_for(&falls_back_to_chat);
    assert_eq!(e.path, "pools[2].fallback");
    assert!(
        e.message.contains("its fallback `frontier` serves chat"),
        "{e}"
    );

    let routed_by_a_rule =
        base() + EMBEDDINGS + "\n[[rules]]\nid = \"vectors\"\npool = \"embed\"\n";
    let e = error_for(&routed_by_a_rule);
    assert_eq!(e.path, "rules[3].pool");
    assert!(e.message.contains("rules route chat requests"), "{e}");

    let anthropic = (base() + EMBEDDINGS).replace(
        "provider = \"openai_compatible\"\napi = \"embeddings\"",
        "provider = \"anthropic\"\napi = \"embeddings\"",
    );
    let e = error_for(&anthropic);
    assert_eq!(e.path, "deployments[3].api");
    assert!(e.message.contains("Anthropic serves no embeddings"), "{e}");
}

#[test]
fn a_budget_share_must_be_in_zero_to_one() {
    for bad in ["0", "1.5", "-0.2"] {
        let toml = base().replacen(
            "[[rules]]\nid = \"default\"",
            &format!(
                "[[rules]]\nid = \"near\"\nwhen = {{ min_budget_used = {bad} }}\npool = \"local\"\n\n[[rules]]\nid = \"default\""
            ),
            1,
        );
        let e = error_for(&toml);
        assert_eq!(e.path, "rules[2].when.min_budget_used", "{bad}");
        assert!(e.message.contains("not in (0, 1]"), "{e}");
    }
}
