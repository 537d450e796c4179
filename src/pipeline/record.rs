//! The ledger record of one request, filled in from each stage's output as the request
//! moves through the pipeline. Pure: it touches no shared state; [`super::finish`]
//! prices the record and writes it.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::accounting::Price;
use crate::auth::KeyInfo;
use crate::cache::Lookup;
use crate::classify::Classification;
use crate::config::Config;
use crate::dispatch::{DispatchFailed, Dispatched};
use crate::ledger::LedgerRecord;
use crate::request::Request;
use crate::route::{Action, Api, DeploymentId, RouteDecision, Via};

/// A record being filled in, with what pricing it will need.
pub struct Draft {
    pub record: LedgerRecord,
    /// The deployment that answered, or the last one tried.
    pub deployment: Option<DeploymentId>,
    /// The matching rule's reference price, when it has its own.
    pub reference: Option<Price>,
    /// What the response cache did, for `x-crossroads-cache`.
    pub cache: Lookup,
}

impl Draft {
    /// The record of a request that just arrived at `endpoint`.
    pub fn new(request_id: String, endpoint: &'static str) -> Self {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Draft {
            record: LedgerRecord {
                request_id,
                ts_ms,
                endpoint: endpoint.into(),
                ..LedgerRecord::default()
            },
            deployment: None,
            reference: None,
            cache: Lookup::Bypass,
        }
    }

    /// Who is calling.
    pub fn authenticated(&mut self, key: &KeyInfo) {
        self.record.key_id = Some(key.id.clone());
        self.record.team.clone_from(&key.team);
    }

    /// What the client asked for.
    pub fn parsed(&mut self, request: &Request) {
        self.record.requested_model.clone_from(&request.model);
        self.record.stream = request.stream;
        self.record.end_user = request
            .body
            .get("user")
            .and_then(|u| u.as_str())
            .map(str::to_owned);
    }

    /// The classifier's verdict.
    pub fn classified(&mut self, config: &Config, c: &Classification) {
        let classifier = &config.classifier;
        self.record.label = Some(classifier.labels().name(c.label).to_owned());
        self.record.task = Some(classifier.task_labels().name(c.task).to_owned());
        self.record.confidence = Some(c.confidence);
        self.record.difficulty = Some(c.difficulty);
        let f = &c.features;
        self.record.prompt_tokens_est = Some(f.prompt_tokens);
        self.record.tools = Some(f.has_tools);
        self.record.images = Some(f.images);
        self.record.json_mode = Some(f.json_mode);
        self.record.pii_kinds = c
            .pii
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",");
    }

    /// The routing decision.
    pub fn routed(&mut self, config: &Config, decision: &RouteDecision) {
        let routes = &config.routes;
        if let Via::Rule(i) = decision.via {
            self.reference = routes.rules.get(i).and_then(|r| r.reference);
        }
        self.record.rule = Some(routes.via_id(decision.via).to_owned());
        self.record.shadow_rule = decision
            .shadow
            .and_then(|i| routes.rules.get(i))
            .map(|r| r.id.clone());
        if let Action::Pool(p) = decision.action
            && let Some(pool) = routes.pool(p)
        {
            self.record.pool = Some(pool.id.clone());
            // Embeddings have no cheaper tier to be routed to: they claim no savings
            // against the chat reference model, only what the cache spares their pool.
            if pool.api == Api::Embeddings {
                self.reference = pool
                    .candidates
                    .first()
                    .and_then(|d| config.deployment(*d))
                    .map(|d| d.price);
            }
        }
    }

    fn set_deployment(&mut self, config: &Config, index: DeploymentId) {
        self.deployment = Some(index);
        if let Some(d) = config.deployment(index) {
            self.record.deployment = Some(d.id.clone());
            self.record.provider = Some(d.provider.as_str().into());
            self.record.upstream_model = Some(d.model.clone());
            self.record.tier = Some(d.tier.as_str().into());
        }
    }

    /// Which deployment answered and how many attempts it took.
    pub fn dispatched(&mut self, config: &Config, d: &Dispatched) {
        self.set_deployment(config, d.deployment);
        self.record.attempts = d.attempts;
        self.record.fallbacks = d.fallbacks.to_string();
        self.record.upstream_us = Some(micros(d.upstream_latency));
    }

    /// A dispatch where every deployment failed.
    pub fn dispatch_failed(&mut self, config: &Config, f: &DispatchFailed) {
        if let Some(index) = f.last_deployment {
            self.set_deployment(config, index);
        }
        self.record.attempts = f.attempts;
        self.record.fallbacks = f.fallbacks.to_string();
    }

    /// What the response cache did; a hit is priced at 0.
    pub fn cache_lookup(&mut self, lookup: Lookup) {
        self.cache = lookup;
        self.record.cache_hit = lookup == Lookup::Hit;
    }

    /// The `x-crossroads-*` headers known so far.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        let r = &self.record;
        let pairs = [
            ("x-crossroads-request-id", Some(r.request_id.as_str())),
            ("x-crossroads-rule", r.rule.as_deref()),
            ("x-crossroads-pool", r.pool.as_deref()),
            ("x-crossroads-deployment", r.deployment.as_deref()),
            ("x-crossroads-tier", r.tier.as_deref()),
            ("x-crossroads-class", r.label.as_deref()),
            ("x-crossroads-cache", Some(self.cache.as_str())),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        headers
    }
}

pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
