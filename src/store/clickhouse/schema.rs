//! The tables, created at start, and the migrations that move them forward.
//!
//! `schema_version` holds one row per applied migration. At start the store
//! creates the database and that table when missing, reads the highest version,
//! and applies every later migration in order, recording each. Every statement
//! is idempotent (`IF NOT EXISTS`), so two daemons starting together, or a
//! start that died half way, only repeat harmless work. A later change adds a
//! migration at the end of [`MIGRATIONS`] (e.g. `ALTER TABLE ... ADD COLUMN IF
//! NOT EXISTS`); released ones are never edited.
//!
//! The SQL runs on ClickHouse 18.16 and current releases: no `TTL`, no
//! `DateTime64`, `Map` or `LowCardinality`. Every table is partitioned by day
//! (`toYYYYMMDD`) so retention drops whole partitions
//! ([`super::ClickHouseStore::apply_retention`]).

use clickhouse::Client;

use crate::store::StoreError;

/// One migration: its version, what it does, its statements (`{db}` is
/// replaced by the database name).
pub struct Migration {
    /// Applied in increasing order.
    pub version: u32,
    /// For people reading `schema_version`.
    pub description: &'static str,
    /// Idempotent statements.
    pub statements: &'static [&'static str],
    /// Columns added after the statements, as (table, column, type with its
    /// default): each only when `system.columns` lacks it, since 18.16 has no
    /// `ADD COLUMN IF NOT EXISTS`.
    pub columns: &'static [(&'static str, &'static str, &'static str)],
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events, cell_steps, incidents, timeline, series, silences, audit",
        statements: &[
            // Raw events. Replaying NATS at restart writes some events twice:
            // rows with the same sorting key (which holds the id) collapse on merge,
            // and the store skips replayed events older than what it had stored.
            "CREATE TABLE IF NOT EXISTS {db}.events (
            ts DateTime, ts_ms Int64, id String, kind String, outcome String,
            provider String, region String, bin String, merchant_id String,
            card_brand String, error_code String, latency_ms Nullable(Float64),
            message String, attr_keys Array(String), attr_values Array(String),
            weight UInt32, inserted_at DateTime
        ) ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toYYYYMMDD(ts)
        ORDER BY (kind, provider, region, ts, id)",
            "CREATE TABLE IF NOT EXISTS {db}.cell_steps (
            ts DateTime, step_s UInt32, rule String, kind String,
            provider String, region String, bin String, merchant_id String,
            cell String, dim_keys Array(String), dim_values Array(String),
            attempts UInt64, failures UInt64, expected Float64, baseline Float64,
            inserted_at DateTime
        ) ENGINE = ReplacingMergeTree(inserted_at)
        PARTITION BY toYYYYMMDD(ts)
        ORDER BY (rule, provider, region, ts, cell)",
            "CREATE TABLE IF NOT EXISTS {db}.incidents (
            id String, version UInt64, rule String, kind String, severity String,
            status String, human_status String,
            opened_at DateTime, opened_at_ms Int64, updated_at_ms Int64,
            resolved_at_ms Nullable(Int64),
            provider String, region String, bin String, merchant_id String,
            cause_dims Array(String), root_causes String,
            window_start_ms Int64, window_end_ms Int64,
            title String, summary String, summary_source String, links String,
            prompt_version Nullable(String)
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY toYYYYMMDD(opened_at)
        ORDER BY id",
            "CREATE TABLE IF NOT EXISTS {db}.incident_timeline (
            incident_id String, seq UInt64, at DateTime, at_ms Int64,
            what String, by String, detail String
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMMDD(at)
        ORDER BY (incident_id, seq)",
            "CREATE TABLE IF NOT EXISTS {db}.incident_series (
            incident_id String, seq UInt64, at DateTime, at_ms Int64,
            events UInt64, failures UInt64, value Float64, baseline Float64
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMMDD(at)
        ORDER BY (incident_id, seq)",
            "CREATE TABLE IF NOT EXISTS {db}.silences (
            id String, version UInt64, deleted UInt8, matchers String,
            starts_at_ms Int64, ends_at_ms Int64, comment String, created_by String,
            created_at DateTime, created_at_ms Int64
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY toYYYYMMDD(created_at)
        ORDER BY id",
            "CREATE TABLE IF NOT EXISTS {db}.audit_llm_calls (
            at DateTime, at_ms Int64, incident_id String, prompt_version String,
            model String, attempt UInt32, prompt String, response String,
            outcome String, detail String, latency_ms UInt64,
            prompt_tokens UInt32, completion_tokens UInt32
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMMDD(at)
        ORDER BY (at, incident_id)",
            "CREATE TABLE IF NOT EXISTS {db}.audit_slack_calls (
            at DateTime, at_ms Int64, incident_id String, method String,
            channel String, ts Nullable(String), status String, latency_ms UInt64
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMMDD(at)
        ORDER BY (at, incident_id)",
        ],
        columns: &[],
    },
    Migration {
        version: 2,
        description: "incidents.candidates: the pieces and alternatives beside the root causes",
        statements: &[],
        columns: &[("incidents", "candidates", "String DEFAULT '[]'")],
    },
    Migration {
        version: 3,
        description: "incidents.episode: began_at, current, peak, impact, error_codes, url",
        statements: &[],
        columns: &[("incidents", "episode", "String DEFAULT '{}'")],
    },
];

/// The version the code expects.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

fn unavailable(what: &str, e: clickhouse::error::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// Creates the database and `schema_version` when missing and applies the
/// migrations not yet applied. `root` is a client without a database set (the
/// database may not exist yet). Returns the schema version now in place.
pub async fn migrate(root: &Client, db: &str) -> Result<u32, StoreError> {
    root.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await
        .map_err(|e| unavailable("creating the database", e))?;
    root.query(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_version (
            version UInt32, description String, applied_at DateTime
        ) ENGINE = MergeTree ORDER BY version"
    ))
    .execute()
    .await
    .map_err(|e| unavailable("creating schema_version", e))?;
    let current = current_version(root, db).await?;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for sql in m.statements {
            root.query(&sql.replace("{db}", db))
                .execute()
                .await
                .map_err(|e| unavailable(&format!("migration {}", m.version), e))?;
        }
        for (table, column, ty) in m.columns {
            add_column(root, db, table, column, ty)
                .await
                .map_err(|e| unavailable(&format!("migration {}", m.version), e))?;
        }
        root.query(&format!(
            "INSERT INTO {db}.schema_version (version, description, applied_at) \
             VALUES (?, ?, now())"
        ))
        .bind(m.version)
        .bind(m.description)
        .execute()
        .await
        .map_err(|e| unavailable("recording the schema version", e))?;
        tracing::info!(
            version = m.version,
            "ClickHouse schema migrated: {}",
            m.description
        );
    }
    current_version(root, db).await
}

async fn has_column(
    root: &Client,
    db: &str,
    table: &str,
    column: &str,
) -> Result<bool, clickhouse::error::Error> {
    let n = root
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(db)
        .bind(table)
        .bind(column)
        .fetch_one::<u64>()
        .await?;
    Ok(n > 0)
}

/// Adds a column unless it is there; a daemon adding it at the same moment
/// makes ours fail, which is fine once the column exists.
async fn add_column(
    root: &Client,
    db: &str,
    table: &str,
    column: &str,
    ty: &str,
) -> Result<(), clickhouse::error::Error> {
    if has_column(root, db, table, column).await? {
        return Ok(());
    }
    let added = root
        .query(&format!(
            "ALTER TABLE {db}.{table} ADD COLUMN {column} {ty}"
        ))
        .execute()
        .await;
    match added {
        Err(e) if !has_column(root, db, table, column).await? => Err(e),
        _ => Ok(()),
    }
}

/// The highest applied version (0 on an empty table).
pub async fn current_version(root: &Client, db: &str) -> Result<u32, StoreError> {
    root.query(&format!("SELECT max(version) FROM {db}.schema_version"))
        .fetch_one::<u32>()
        .await
        .map_err(|e| unavailable("reading schema_version", e))
}

/// Tables by retention family, as `[clickhouse.retention_days]` names them.
pub const RETENTION_FAMILIES: &[(&str, &[&str])] = &[
    ("events", &["events"]),
    ("aggregates", &["cell_steps"]),
    (
        "incidents",
        &[
            "incidents",
            "incident_timeline",
            "incident_series",
            "silences",
        ],
    ),
    ("audit", &["audit_llm_calls", "audit_slack_calls"]),
];
