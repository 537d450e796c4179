//! Live config: `routes.toml` is reloaded on file change, on SIGHUP and on
//! `POST /admin/reload`. A new config is loaded and validated off the request path and
//! swapped in atomically; an invalid one is refused, logged and counted, and the old one
//! keeps serving. Requests in flight finish on the runtime they started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, watch};

use crate::config::{self, EnvLookup};
use crate::metrics::{ReloadCounter, ReloadLabels};
use crate::runtime::Runtime;

/// What started a reload, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    File,
    Signal,
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
        }
    }
}

/// Swaps the live runtime for one built from the config file.
pub struct Reloader {
    path: PathBuf,
    env: EnvLookup,
    tx: watch::Sender<Arc<Runtime>>,
    reloads: ReloadCounter,
    /// One reload at a time: two triggers at once must not race to publish.
    busy: Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        env: EnvLookup,
        tx: watch::Sender<Arc<Runtime>>,
        reloads: ReloadCounter,
    ) -> Self {
        Reloader {
            path,
            env,
            tx,
            reloads,
            busy: Mutex::new(()),
        }
    }

    /// The live runtime's receiver.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Runtime>> {
        self.tx.subscribe()
    }

    /// Loads, validates and publishes the config file. On error the old config stays.
    pub async fn reload(&self, trigger: Trigger) -> Result<(), ReloadError> {
        let _one_at_a_time = self.busy.lock().await;
        let path = self.path.clone();
        let previous = self.tx.borrow().clone();
        let env = self.env.clone();
        let built = tokio::task::spawn_blocking(move || {
            let config = config::load_with_env(&path, env.as_ref())?;
            Ok::<_, ReloadError>(Runtime::new(config, Some(&previous))?)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()));
        match built {
            Ok(runtime) => {
                warn_about_restart_only_changes(&self.tx.borrow(), &runtime);
                self.tx.send_replace(Arc::new(runtime));
                self.reloads.count(&ReloadLabels {
                    result: "ok",
                    trigger: trigger.as_str(),
                });
                tracing::info!(path = %self.path.display(), trigger = trigger.as_str(), "config reloaded");
                Ok(())
            }
            Err(e) => {
                self.reloads.count(&ReloadLabels {
                    result: "error",
                    trigger: trigger.as_str(),
                });
                tracing::error!(error = %e, trigger = trigger.as_str(), "config reload refused; the previous config keeps serving");
                Err(e)
            }
        }
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Client(#[from] crate::provider::ClientError),
    #[error("reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Warns about the changes a reload does not apply.
fn warn_about_restart_only_changes(old: &Runtime, new: &Runtime) {
    for what in restart_only_changes(&old.config, &new.config) {
        tracing::warn!("{what} changed: it applies at the next restart");
    }
}

/// The settings that differ between `old` and `new` but are bound at startup: the
/// listen address, the workers, the shutdown grace, the ledger, the cache, where limits
/// are counted and the budget warning level.
pub fn restart_only_changes(old: &config::Config, new: &config::Config) -> Vec<&'static str> {
    [
        ("server.listen", old.server.listen != new.server.listen),
        ("server.workers", old.server.workers != new.server.workers),
        (
            "server.shutdown_grace_ms",
            old.server.shutdown_grace != new.server.shutdown_grace,
        ),
        ("[ledger]", old.ledger != new.ledger),
        ("[cache]", old.cache != new.cache),
        ("[limits]", old.limits != new.limits),
        (
            "budgets.warn_at",
            old.budgets.warn_at != new.budgets.warn_at,
        ),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect()
}

/// Reloads whenever the file's modification time or size changes, polling at the live
/// config's `server.config_poll_ms`.
pub async fn watch_file(reloader: Arc<Reloader>) {
    let fingerprint = |path: &PathBuf| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut last = fingerprint(&reloader.path);
    loop {
        let poll = reloader.tx.borrow().config.server.config_poll;
        let Some(poll) = poll else {
            // Watching is off; look again later in case a reload turns it on.
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        tokio::time::sleep(poll).await;
        let now = fingerprint(&reloader.path);
        if now.is_some() && now != last {
            last = now;
            let _ = reloader.reload(Trigger::File).await;
        }
    }
}

/// Reloads on every SIGHUP.
pub async fn watch_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = reloader.reload(Trigger::Signal).await;
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
}
