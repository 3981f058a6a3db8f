-- faultline tables for a replicated ClickHouse cluster named `faultline`.
--
-- Same tables, columns, engines, PARTITION BY and ORDER BY as migration 1 in
-- src/store/clickhouse/schema.rs (which uses no TTL: retention drops daily
-- partitions). Each table `t` becomes:
--   faultline.t_local  Replicated<Engine>MergeTree, one copy per replica;
--   faultline.t        Distributed over t_local, under the name faultline
--                      queries, so its SQL (including `FINAL`) runs unchanged.
-- Needs, on every node, cluster.xml (remote_servers `faultline`, macros
-- {shard}/{replica}, zookeeper) in config.d, and a reachable Keeper/ZooKeeper.
-- Only SQL that ClickHouse 18.16 and current releases both accept.
--
-- Apply once, from any one node (ON CLUSTER runs it on every node):
--   clickhouse-client --multiquery < replicated.sql
-- Every statement is IF NOT EXISTS, so running it again is harmless.
--
-- Then start faultline with clickhouse.database = "faultline" (the default),
-- pointed at any node (or a load balancer over them). At start faultline runs
-- CREATE DATABASE IF NOT EXISTS, CREATE TABLE IF NOT EXISTS schema_version and
-- migration 1, whose statements are all CREATE TABLE IF NOT EXISTS faultline.<t>:
-- those names already exist here (the Distributed tables, and the replicated
-- schema_version below), so its DDL is a no-op; it only records version 1 in
-- schema_version. It never touches the *_local tables.
--
-- Not automatic on a cluster (see README.md):
--   * retention: faultline lists partitions of `faultline.<t>` in system.parts,
--     where a Distributed table has none, so it drops nothing. Drop old days on
--     the local tables yourself, e.g. daily:
--       ALTER TABLE faultline.events_local ON CLUSTER faultline DROP PARTITION 20260101
--   * future migrations (e.g. ALTER TABLE ... ADD COLUMN) that faultline would
--     run against faultline.<t> must be applied here by hand, ON CLUSTER, to
--     both <t>_local and <t>, before the faultline that needs them starts.

CREATE DATABASE IF NOT EXISTS faultline ON CLUSTER faultline;

-- faultline's migration bookkeeping. Not sharded: the ZooKeeper path has no
-- {shard}, so every node of every shard holds the same replicated copy and
-- whichever node faultline connects to sees the same version.
CREATE TABLE IF NOT EXISTS faultline.schema_version ON CLUSTER faultline (
    version UInt32, description String, applied_at DateTime
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/faultline/schema_version', '{replica}')
ORDER BY version;

-- events: raw events, by far the biggest table. Sharded by the event id so a
-- replayed event lands on the shard that holds the first copy and
-- ReplacingMergeTree collapses it there (rand() would defeat that).
CREATE TABLE IF NOT EXISTS faultline.events_local ON CLUSTER faultline (
    ts DateTime, ts_ms Int64, id String, kind String, outcome String,
    provider String, region String, bin String, merchant_id String,
    card_brand String, error_code String, latency_ms Nullable(Float64),
    message String, attr_keys Array(String), attr_values Array(String),
    weight UInt32, inserted_at DateTime
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/events', '{replica}', inserted_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (kind, provider, region, ts, id);

CREATE TABLE IF NOT EXISTS faultline.events ON CLUSTER faultline
AS faultline.events_local
ENGINE = Distributed(faultline, faultline, events_local, cityHash64(id));

-- cell_steps: per-step cell aggregates. Sharded by (rule, cell): a cell's
-- whole series stays on one shard, and a replayed step (same sorting key)
-- lands beside the row it replaces.
CREATE TABLE IF NOT EXISTS faultline.cell_steps_local ON CLUSTER faultline (
    ts DateTime, step_s UInt32, rule String, kind String,
    provider String, region String, bin String, merchant_id String,
    cell String, dim_keys Array(String), dim_values Array(String),
    attempts UInt64, failures UInt64, expected Float64, baseline Float64,
    inserted_at DateTime
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/cell_steps', '{replica}', inserted_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (rule, provider, region, ts, cell);

CREATE TABLE IF NOT EXISTS faultline.cell_steps ON CLUSTER faultline
AS faultline.cell_steps_local
ENGINE = Distributed(faultline, faultline, cell_steps_local, cityHash64(rule, cell));

-- incidents: one row per version, read with FINAL. Sharded by the incident id
-- so every version of an incident is on one shard and FINAL (run per shard)
-- keeps the newest.
CREATE TABLE IF NOT EXISTS faultline.incidents_local ON CLUSTER faultline (
    id String, version UInt64, rule String, kind String, severity String,
    status String, human_status String,
    opened_at DateTime, opened_at_ms Int64, updated_at_ms Int64,
    resolved_at_ms Nullable(Int64),
    provider String, region String, bin String, merchant_id String,
    cause_dims Array(String), root_causes String,
    window_start_ms Int64, window_end_ms Int64,
    title String, summary String, summary_source String, links String,
    prompt_version Nullable(String)
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/incidents', '{replica}', version)
PARTITION BY toYYYYMMDD(opened_at)
ORDER BY id;

CREATE TABLE IF NOT EXISTS faultline.incidents ON CLUSTER faultline
AS faultline.incidents_local
ENGINE = Distributed(faultline, faultline, incidents_local, cityHash64(id));

-- incident_timeline and incident_series: sharded by incident id, beside
-- their incident; a retried row (same incident_id, seq) lands on the same
-- shard and collapses.
CREATE TABLE IF NOT EXISTS faultline.incident_timeline_local ON CLUSTER faultline (
    incident_id String, seq UInt64, at DateTime, at_ms Int64,
    what String, by String, detail String
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/incident_timeline', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (incident_id, seq);

CREATE TABLE IF NOT EXISTS faultline.incident_timeline ON CLUSTER faultline
AS faultline.incident_timeline_local
ENGINE = Distributed(faultline, faultline, incident_timeline_local, cityHash64(incident_id));

CREATE TABLE IF NOT EXISTS faultline.incident_series_local ON CLUSTER faultline (
    incident_id String, seq UInt64, at DateTime, at_ms Int64,
    events UInt64, failures UInt64, value Float64, baseline Float64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/incident_series', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (incident_id, seq);

CREATE TABLE IF NOT EXISTS faultline.incident_series ON CLUSTER faultline
AS faultline.incident_series_local
ENGINE = Distributed(faultline, faultline, incident_series_local, cityHash64(incident_id));

-- silences: versioned like incidents, read with FINAL; sharded by silence id.
CREATE TABLE IF NOT EXISTS faultline.silences_local ON CLUSTER faultline (
    id String, version UInt64, deleted UInt8, matchers String,
    starts_at_ms Int64, ends_at_ms Int64, comment String, created_by String,
    created_at DateTime, created_at_ms Int64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/faultline/silences', '{replica}', version)
PARTITION BY toYYYYMMDD(created_at)
ORDER BY id;

CREATE TABLE IF NOT EXISTS faultline.silences ON CLUSTER faultline
AS faultline.silences_local
ENGINE = Distributed(faultline, faultline, silences_local, cityHash64(id));

-- Audit rows (plain MergeTree, append only). Sharded by incident id, beside
-- the incident they concern.
CREATE TABLE IF NOT EXISTS faultline.audit_llm_calls_local ON CLUSTER faultline (
    at DateTime, at_ms Int64, incident_id String, prompt_version String,
    model String, attempt UInt32, prompt String, response String,
    outcome String, detail String, latency_ms UInt64,
    prompt_tokens UInt32, completion_tokens UInt32
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/faultline/audit_llm_calls', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (at, incident_id);

CREATE TABLE IF NOT EXISTS faultline.audit_llm_calls ON CLUSTER faultline
AS faultline.audit_llm_calls_local
ENGINE = Distributed(faultline, faultline, audit_llm_calls_local, cityHash64(incident_id));

CREATE TABLE IF NOT EXISTS faultline.audit_slack_calls_local ON CLUSTER faultline (
    at DateTime, at_ms Int64, incident_id String, method String,
    channel String, ts Nullable(String), status String, latency_ms UInt64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/faultline/audit_slack_calls', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (at, incident_id);

CREATE TABLE IF NOT EXISTS faultline.audit_slack_calls ON CLUSTER faultline
AS faultline.audit_slack_calls_local
ENGINE = Distributed(faultline, faultline, audit_slack_calls_local, cityHash64(incident_id));
