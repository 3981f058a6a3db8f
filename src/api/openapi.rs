//! `GET /openapi.json`: the OpenAPI 3 description, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives, so it
//! cannot drift from the code silently; a test checks that every route of
//! [`super::routes`] is described.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::{ErrorBody, ErrorDetail};
use super::events::IngestReport;
use super::silences::{NewSilence, SilenceList};
use crate::incident::{
    Incident, Link, RootCause, SeriesPoint, Status, SummarySource, TimeRange, TimelineEntry,
};
use crate::rules::Severity;
use crate::store::{IncidentPage, IncidentRecord, Silence};

/// The description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "faultline",
        description = "Payment-failure incidents: query, acknowledge, resolve, silence; event ingest. \
                       Bearer tokens with scopes `read`, `write` (implies read) and `ingest`. \
                       Every error is `{\"error\":{\"code\":\"...\",\"message\":\"...\"}}`."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::openapi_json,
        super::events::post_events,
        super::incidents::list,
        super::incidents::get_one,
        super::incidents::ack,
        super::incidents::resolve,
        super::rules::list,
        super::rules::reload,
        super::rules::explain,
        super::silences::list,
        super::silences::create,
        super::silences::delete,
        super::slack::interactions,
        super::pages::list_page,
        super::pages::incident_page,
    ),
    components(schemas(
        Incident, IncidentPage, IncidentRecord, RootCause, TimeRange, Link, Status, SummarySource,
        TimelineEntry, SeriesPoint, Severity, Silence, NewSilence, SilenceList, ErrorBody,
        ErrorDetail, IngestReport, EventV1, Health, Readiness, IntegrationCheck,
        super::rules::RulesView, super::rules::RuleBrief, crate::reload::ReloadStatus,
        crate::engine::ReloadSummary, crate::explain::Report, crate::explain::OpenIncident,
        crate::engine::Explanation, crate::engine::Condition, crate::incident::Episode,
        crate::incident::Reading, crate::incident::Impact, crate::incident::CodeShare
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "incidents", description = "Incidents and people's actions on them"),
        (name = "silences", description = "Mute notifications of matching incidents"),
        (name = "rules", description = "The rules in force, live explanations, reload"),
        (name = "ingest", description = "Events in"),
        (name = "ops", description = "Health, readiness, metrics, this description"),
        (name = "slack", description = "Slack interactivity (signed by Slack, no bearer token)"),
        (name = "pages", description = "HTML pages for responders"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

impl PartialSchema for Severity {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["info", "warning", "critical"]))
            .description(Some("Incident severity, from the rule"))
            .into()
    }
}

impl ToSchema for Severity {}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Integration name (`ingest`, `store`, `summarizer`, `notifier`) to its check.
    pub integrations: BTreeMap<String, IntegrationCheck>,
}

/// One integration's readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationCheck {
    /// The implementation in use (`http`, `nats`, `memory`, `clickhouse`, ...).
    pub mode: String,
    /// `ok` or `unavailable`.
    pub status: String,
}

/// A schema v1 event (CONTRACT section 1), as `POST /v1/events` takes it.
/// Documentation only: validation is `crate::event`'s.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventV1 {
    /// Unique event id, 1..128 characters.
    pub id: String,
    /// Event time, RFC 3339 with offset.
    pub ts: DateTime<Utc>,
    /// `auth`, `settlement`, `webhook` or another `[a-z_]{1,32}`.
    pub kind: String,
    /// `success`, `decline` or `failure`.
    pub outcome: String,
    /// Payment provider, 1..64 characters.
    pub provider: String,
    /// Processing region, 1..64 characters.
    pub region: String,
    /// Card BIN, 6 to 8 digits.
    pub bin: Option<String>,
    /// Merchant, 1..64 characters.
    pub merchant_id: Option<String>,
    /// Card brand, 1..32 characters.
    pub card_brand: Option<String>,
    /// Decline or failure code, 1..64 characters.
    pub error_code: Option<String>,
    /// Latency, milliseconds, >= 0.
    pub latency_ms: Option<f64>,
    /// Free text, up to 4 KiB; redacted on arrival.
    pub message: Option<String>,
    /// Extra dimensions, up to 16.
    pub attrs: Option<BTreeMap<String, String>>,
}

/// The description as JSON text.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
