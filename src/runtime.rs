//! The runtime: a validated config with the clients built for it, swapped whole on
//! reload while each request keeps the one it started with.

use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::Backend;
use crate::provider::{ClientError, Upstream};

/// A validated config with the clients built for it. Swapped whole on reload; a request
/// keeps the `Arc` it started with.
pub struct Runtime {
    pub config: Config,
    /// One backend per deployment, same index as `config.deployments`.
    pub backends: Vec<Arc<Backend>>,
}

impl Runtime {
    /// Builds the backends for `config`, keeping those of `previous` whose deployment did
    /// not change, so a reload keeps their warm connections and health.
    pub fn new(config: Config, previous: Option<&Runtime>) -> Result<Self, ClientError> {
        let backends = config
            .deployments
            .iter()
            .map(|d| {
                let unchanged = previous.and_then(|p| {
                    p.config
                        .deployments
                        .iter()
                        .position(|old| old == d)
                        .and_then(|i| p.backends.get(i).cloned())
                });
                match unchanged {
                    Some(backend) => Ok(backend),
                    None => Upstream::new(d).map(|upstream| Arc::new(Backend::new(upstream))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Runtime { config, backends })
    }
}
