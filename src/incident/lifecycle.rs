//! Open / update / resolve, with hysteresis applied by the engine.

use super::Incident;

/// What happened to an incident at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A new incident.
    Opened(Incident),
    /// An open incident changed (evidence, severity, candidates).
    Updated(Incident),
    /// It ended.
    Resolved(Incident),
}

/// Keeps open incidents by fingerprint.
#[derive(Debug, Default)]
pub struct IncidentManager {}
