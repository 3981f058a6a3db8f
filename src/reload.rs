//! Rules changed while the daemon runs: hot reload on SIGHUP, on file change and
//! on `POST /rules/reload`.
//!
//! A reload reads the whole rules folder and validates it first: a folder with
//! any error keeps the rules in force and reports every error (log, metrics,
//! the API's answer, `GET /rules`). A valid folder goes to the engine loop,
//! which swaps it in between two batches of events ([`Engine::reload`]: unchanged
//! and retuned rules keep their windows, baselines and open incidents), then to
//! the outputs and the notifier (summaries and Slack routing use the new
//! definitions).
//!
//! File changes are noticed by polling a fingerprint of the folder (names and
//! contents of its rule files) every `rules_reload_interval`: no inotify, so it
//! works the same on every file system, in containers and on config maps whose
//! files are swapped by symlink. A file caught half-written fails validation and
//! is retried when its content changes again.
//!
//! [`Engine::reload`]: crate::engine::Engine::reload

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::engine::ReloadSummary;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pipeline::EngineHandle;
use crate::rules::RuleSet;

/// The rule set in force, shared by the outputs, the notifier and the API.
#[derive(Debug)]
pub struct LiveRules {
    current: RwLock<Arc<RuleSet>>,
}

impl LiveRules {
    /// Starts with `rules`.
    pub fn new(rules: RuleSet) -> LiveRules {
        LiveRules {
            current: RwLock::new(Arc::new(rules)),
        }
    }

    /// The rules in force now.
    pub fn get(&self) -> Arc<RuleSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `rules` in force.
    pub fn set(&self, rules: Arc<RuleSet>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = rules;
    }
}

/// Why a reload did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The folder has errors; the rules in force are kept.
    #[error("rules not reloaded, the rules in force are kept: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The engine has stopped (the daemon is shutting down).
    #[error("the engine has stopped")]
    Stopped,
}

/// What `GET /rules` reports about reloads.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ReloadStatus {
    /// Folder the rules are read from; null for the rules built into the binary.
    pub dir: Option<String>,
    /// When the rules in force were loaded.
    pub loaded_at: Option<DateTime<Utc>>,
    /// Reloads applied since start.
    pub reloads: u64,
    /// The last reload attempt that failed, when it is newer than the last
    /// success: the errors, each naming file, rule and field.
    pub last_error: Option<Vec<String>>,
    /// When that failure happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// What the last applied reload did per rule.
    pub last_reload: Option<ReloadSummary>,
}

/// Reloads the rules of one folder.
pub struct Reloader {
    dir: PathBuf,
    live: Arc<LiveRules>,
    engine: EngineHandle,
    notifier: Arc<dyn Notifier>,
    metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    /// Fingerprint of the folder last loaded or last refused, so a broken file
    /// is reported once, not at every poll.
    seen: Mutex<Option<u64>>,
    /// One reload at a time.
    gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader of `dir` (whose rules are in `live` now) into `engine`.
    pub fn new(
        dir: PathBuf,
        live: Arc<LiveRules>,
        engine: EngineHandle,
        notifier: Arc<dyn Notifier>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        metrics.set_rules_loaded(live.get().rules.len() as u64);
        Reloader {
            seen: Mutex::new(fingerprint(&dir)),
            status: Mutex::new(ReloadStatus {
                dir: Some(dir.display().to_string()),
                loaded_at: Some(Utc::now()),
                ..ReloadStatus::default()
            }),
            dir,
            live,
            engine,
            notifier,
            metrics,
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The status `GET /rules` shows.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads, validates and applies the folder now. `why` names the trigger in logs.
    pub async fn reload(&self, why: &str) -> Result<ReloadSummary, ReloadError> {
        let _one = self.gate.lock().await;
        let print = fingerprint(&self.dir);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = print;
        let rules = match RuleSet::load_dir(&self.dir) {
            // The attributes explained with come from the settings, not the folder.
            Ok(r) => r.with_explain(&self.live.get().explain),
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.metrics.rules_reload("error");
                tracing::error!(trigger = why, errors = ?errors, "rules not reloaded; the rules in force are kept");
                let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                st.last_error = Some(errors.clone());
                st.last_error_at = Some(Utc::now());
                return Err(ReloadError::Invalid(errors));
            }
        };
        let rules = Arc::new(rules);
        let summary = self
            .engine
            .reload(rules.clone())
            .await
            .ok_or(ReloadError::Stopped)?;
        self.live.set(rules.clone());
        self.notifier.rules_reloaded(&rules);
        self.metrics.rules_reload("ok");
        self.metrics.set_rules_loaded(rules.rules.len() as u64);
        tracing::info!(
            trigger = why,
            kept = summary.kept.len(),
            retuned = ?summary.retuned,
            restarted = ?summary.restarted,
            added = ?summary.added,
            removed = ?summary.removed,
            "rules reloaded"
        );
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.loaded_at = Some(Utc::now());
        st.reloads += 1;
        st.last_error = None;
        st.last_error_at = None;
        st.last_reload = Some(summary.clone());
        Ok(summary)
    }

    /// Reloads on SIGHUP, and when the folder's content changes (checked every
    /// `interval`; zero turns polling off), until `stop` turns true.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut hup = hangup();
        let mut tick = tokio::time::interval(if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            interval
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                Some(()) = recv_hangup(&mut hup) => {
                    let _ = self.reload("SIGHUP").await;
                }
                _ = tick.tick(), if !interval.is_zero() => {
                    let now = fingerprint(&self.dir);
                    let changed = *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now;
                    if changed {
                        let _ = self.reload("file change").await;
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Without a rules folder there is nothing to reload, but SIGHUP must not stop
/// the daemon (its default action): it is logged and ignored until `stop`.
pub async fn ignore_hangup(mut stop: watch::Receiver<bool>) {
    let mut hup = hangup();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(()) = recv_hangup(&mut hup) => {
                tracing::warn!("SIGHUP: the rules are built into the binary; start with --rules DIR to reload them");
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// A hash of the folder's rule files (names and contents), `None` when it
/// cannot be read.
fn fingerprint(dir: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .map(|p| {
            let content = std::fs::read(&p).unwrap_or_default();
            (p, content)
        })
        .collect();
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_content_not_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "rules: []\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let a = fingerprint(dir.path());
        std::fs::write(dir.path().join("a.yaml"), "rules: []\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "y").unwrap();
        assert_eq!(a, fingerprint(dir.path()), "same rule content, same print");
        std::fs::write(dir.path().join("a.yaml"), "rules: [] \n").unwrap();
        assert_ne!(a, fingerprint(dir.path()));
        assert_eq!(fingerprint(&dir.path().join("missing")), None);
    }
}
