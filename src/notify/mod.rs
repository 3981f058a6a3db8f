//! Where incidents go: stdout (embedded default) or Slack ([`slack`]).
//!
//! A [`Notifier`] hears every [`Transition`] the pipeline decides people should
//! know about. It knows nothing of statistics: it renders the incident as it is.
//! Everything it lets out passes through [`crate::redact`].

pub mod slack;
mod stdout;

pub use slack::SlackNotifier;
pub use stdout::StdoutNotifier;

use async_trait::async_trait;

use crate::incident::{Incident, Transition};

/// Errors at the notify boundary. Messages never carry tokens.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Writing failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The remote service could not be reached or timed out.
    #[error("notifier unavailable: {0}")]
    Unavailable(String),
    /// The remote service answered with an error.
    #[error("notifier rejected the message: {0}")]
    Rejected(String),
}

/// Tells people about incidents.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Announces one transition: opened, updated or resolved.
    async fn notify(&self, t: &Transition) -> Result<(), NotifyError>;

    /// A better summary (the LLM's) arrived after the incident was announced
    /// with the template's: `incident` carries it. Slack edits its post in
    /// place; the default does nothing.
    async fn summary_updated(&self, incident: &Incident) -> Result<(), NotifyError> {
        let _ = incident;
        Ok(())
    }

    /// A person changed the incident (`acknowledged`, `resolved`, `silenced`)
    /// through the API or a Slack button; `incident` is its state after the
    /// change and `by` the person (token name or Slack user). Slack edits its
    /// post and replies in the thread; the default does nothing.
    async fn acted(&self, incident: &Incident, what: &str, by: &str) -> Result<(), NotifyError> {
        let _ = (incident, what, by);
        Ok(())
    }

    /// Returns once everything handed over so far has been delivered (or given
    /// up on): shutdown waits for it, with a deadline. The default has nothing
    /// queued.
    async fn flush(&self) {}

    /// The rules were reloaded: routing by rule follows `rules` from now on.
    /// The default routes nothing by rule.
    fn rules_reloaded(&self, rules: &crate::rules::RuleSet) {
        let _ = rules;
    }
}
