-- TokenSentry audit schema for a replicated, sharded ClickHouse cluster.
--
-- The single-node schema lives in schemas/migrations and is applied by
-- AuditStore.migrate(). On a cluster, apply this file once instead, as a
-- user with DDL rights, and do not call migrate() from the workers:
--
--   clickhouse-client --multiquery < deploy/clickhouse/cluster.sql
--
-- {cluster}, {shard} and {replica} are the server's macros (config.xml
-- <macros>). Each audit table is a ReplicatedReplacingMergeTree named
-- <table>_local on every shard, behind a Distributed table <table> that the
-- workers and analysts use. The sharding key is taken from the record
-- itself (the subject, or the id), so every redelivered copy lands on the
-- same shard as the original, where merges and FINAL collapse it.
--
-- Columns, ORDER BY, partitions and TTLs are those of migrations 001-005
-- with the default retention (events 30 days, windows and token_minute 90,
-- no TTL on state_checkpoints, the rest 365).
-- tests/unit/test_store_deploy_sql.py checks that the column lists stay
-- equal to the migrations'. Change retention with
--   ALTER TABLE tokensentry.<table>_local ON CLUSTER '{cluster}'
--   MODIFY TTL toDateTime(<column>) + toIntervalDay(<days>);

CREATE DATABASE IF NOT EXISTS tokensentry ON CLUSTER '{cluster}';

CREATE TABLE IF NOT EXISTS tokensentry.events_local ON CLUSTER '{cluster}'
(
    event_id UInt64 COMMENT 'Deterministic id from source, partition and offset',
    ts DateTime64(3, 'UTC') COMMENT 'Event time',
    gateway LowCardinality(String) COMMENT 'Log format id, e.g. nginx_combined',
    subject_id String COMMENT 'Key id, keyed hash of the credential (tk_...), or ip:<addr>',
    subject_kind UInt8 COMMENT '0 key id, 1 keyed hash of the credential, 2 client IP',
    account String,
    client_ip String,
    method LowCardinality(String),
    host LowCardinality(String),
    path String CODEC(ZSTD(3)),
    route LowCardinality(String),
    status UInt16,
    latency_ms Float32 COMMENT 'NaN when the gateway does not log latency',
    bytes_in Int64 COMMENT '-1 when unknown',
    bytes_out Int64 COMMENT '-1 when unknown',
    user_agent String CODEC(ZSTD(3)),
    origin String CODEC(ZSTD(3)),
    referer String CODEC(ZSTD(3)),
    country LowCardinality(String) COMMENT 'ISO 3166-1 alpha-2, empty when not logged',
    asn UInt32 COMMENT '0 when unknown',
    device_id String CODEC(ZSTD(3)),
    request_id String CODEC(ZSTD(3)),
    source LowCardinality(String) COMMENT 'File path or Kafka topic',
    partition Int32 COMMENT 'Kafka partition, -1 for files',
    offset Int64 COMMENT 'Kafka offset, or 1-based line number for files',
    late Bool COMMENT 'Arrived after its window had closed',
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_offset offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/events_local', '{replica}')
PARTITION BY toYYYYMMDD(ts)
ORDER BY (subject_id, ts, event_id)
TTL toDateTime(inserted_at) + toIntervalDay(30)
SETTINGS ttl_only_drop_parts = 1, min_bytes_for_wide_part = 134217728;

CREATE TABLE IF NOT EXISTS tokensentry.events ON CLUSTER '{cluster}' AS tokensentry.events_local
ENGINE = Distributed('{cluster}', tokensentry, events_local, cityHash64(subject_id));

CREATE TABLE IF NOT EXISTS tokensentry.windows_local ON CLUSTER '{cluster}'
(
    window_id UInt64,
    subject_id String,
    subject_kind UInt8,
    account String,
    window_start DateTime64(3, 'UTC') COMMENT 'Inclusive start of the event-time window',
    window_end DateTime64(3, 'UTC') COMMENT 'Exclusive end of the event-time window',
    first_offset Int64,
    last_offset Int64,
    requests Float64,
    ratio_4xx Float64 COMMENT 'Fraction of requests, 0..1',
    ratio_401_403 Float64,
    ratio_429 Float64,
    ratio_5xx Float64,
    distinct_ips Float64,
    distinct_networks Float64,
    distinct_user_agents Float64,
    distinct_routes Float64,
    distinct_countries Float64,
    distinct_devices Float64,
    bytes_in Float64,
    bytes_out Float64,
    latency_p50_ms Float64 COMMENT 'NaN when the gateway does not log latency',
    latency_p95_ms Float64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/windows_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (subject_id, window_start, window_id)
TTL toDateTime(inserted_at) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS tokensentry.windows ON CLUSTER '{cluster}' AS tokensentry.windows_local
ENGINE = Distributed('{cluster}', tokensentry, windows_local, cityHash64(subject_id));

CREATE TABLE IF NOT EXISTS tokensentry.detections_local ON CLUSTER '{cluster}'
(
    detection_id UInt64,
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    registry_version LowCardinality(String),
    subject_id String,
    subject_kind UInt8,
    account String,
    client_ip String COMMENT 'Client IP or CIDR for client-scoped findings, else empty',
    window_id UInt64,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    score Float64,
    threshold Float64,
    severity UInt8 COMMENT '1 low, 2 medium, 3 high, 4 critical',
    explanation String,
    evidence String CODEC(ZSTD(3)) COMMENT 'JSON array of {feature, observed, expected, threshold}',
    schema_version UInt16,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_subject subject_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/detections_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (detector, window_start, detection_id)
TTL toDateTime(inserted_at) + toIntervalDay(365);

CREATE TABLE IF NOT EXISTS tokensentry.detections ON CLUSTER '{cluster}' AS tokensentry.detections_local
ENGINE = Distributed('{cluster}', tokensentry, detections_local, cityHash64(subject_id));

CREATE TABLE IF NOT EXISTS tokensentry.actions_local ON CLUSTER '{cluster}'
(
    action_id String,
    kind LowCardinality(String) COMMENT 'alert, throttle, revoke, restore, rotate, block, unblock',
    token_id String COMMENT 'Empty for client actions',
    subject String COMMENT 'Token id or CIDR the action targets',
    account String,
    limit_rps Nullable(Float64) COMMENT 'Requests per second allowed by a throttle',
    grace_period_s Nullable(Float64) COMMENT 'For rotate: seconds after issued_at the old key still works',
    issued_at DateTime64(3, 'UTC') COMMENT 'Event time of the window that triggered the action',
    expires_at DateTime64(3, 'UTC') COMMENT '1970-01-01 00:00:00 for actions without expiry',
    reason String,
    reasons String CODEC(ZSTD(3)) COMMENT 'JSON array of the detections behind the action, with their evidence',
    policy_version LowCardinality(String),
    rule LowCardinality(String),
    dry_run Bool,
    shadow_reason String COMMENT 'Why a recorded action was not published',
    origin LowCardinality(String) COMMENT 'pipeline or manual',
    key_id LowCardinality(String) COMMENT 'Signing key id, empty when unsigned',
    signature String,
    published UInt8 COMMENT '1 once the action was published on the action topic',
    schema_version UInt16,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_subject subject TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/actions_local', '{replica}', published)
PARTITION BY toYYYYMM(issued_at)
ORDER BY (kind, issued_at, action_id)
TTL toDateTime(inserted_at) + toIntervalDay(365);

CREATE TABLE IF NOT EXISTS tokensentry.actions ON CLUSTER '{cluster}' AS tokensentry.actions_local
ENGINE = Distributed('{cluster}', tokensentry, actions_local, cityHash64(subject));

CREATE TABLE IF NOT EXISTS tokensentry.dead_letters_local ON CLUSTER '{cluster}'
(
    source LowCardinality(String),
    partition Int32,
    offset Int64,
    stage LowCardinality(String) COMMENT 'Stage that rejected the record, e.g. parser',
    reason String,
    format LowCardinality(String),
    raw String CODEC(ZSTD(3)) COMMENT 'The record with credentials replaced by <redacted>',
    schema_version UInt16,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/dead_letters_local', '{replica}')
ORDER BY (stage, source, partition, offset)
TTL toDateTime(inserted_at) + toIntervalDay(365);

CREATE TABLE IF NOT EXISTS tokensentry.dead_letters ON CLUSTER '{cluster}' AS tokensentry.dead_letters_local
ENGINE = Distributed('{cluster}', tokensentry, dead_letters_local, cityHash64(source, partition, offset));

CREATE VIEW IF NOT EXISTS tokensentry.events_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.events FINAL;

CREATE VIEW IF NOT EXISTS tokensentry.windows_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.windows FINAL;

CREATE VIEW IF NOT EXISTS tokensentry.detections_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.detections FINAL;

CREATE VIEW IF NOT EXISTS tokensentry.actions_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.actions FINAL;

CREATE VIEW IF NOT EXISTS tokensentry.dead_letters_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.dead_letters FINAL;

CREATE TABLE IF NOT EXISTS tokensentry.token_minute_local ON CLUSTER '{cluster}'
(
    subject_id String,
    minute DateTime('UTC') COMMENT 'Start of the minute of event time',
    requests UInt64,
    errors_4xx UInt64 COMMENT 'Requests with status 400..499',
    errors_5xx UInt64 COMMENT 'Requests with status 500..599',
    bytes_in UInt64 COMMENT 'Sum over requests whose size was logged',
    bytes_out UInt64 COMMENT 'Sum over requests whose size was logged'
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/tokensentry/token_minute_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (subject_id, minute)
TTL toDateTime(minute) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS tokensentry.token_minute ON CLUSTER '{cluster}' AS tokensentry.token_minute_local
ENGINE = Distributed('{cluster}', tokensentry, token_minute_local, cityHash64(subject_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS tokensentry.token_minute_mv ON CLUSTER '{cluster}' TO tokensentry.token_minute_local AS
SELECT
    subject_id,
    toStartOfMinute(toDateTime(ts, 'UTC')) AS minute,
    count() AS requests,
    countIf(status >= 400 AND status < 500) AS errors_4xx,
    countIf(status >= 500 AND status < 600) AS errors_5xx,
    toUInt64(sumIf(bytes_in, bytes_in > 0)) AS bytes_in,
    toUInt64(sumIf(bytes_out, bytes_out > 0)) AS bytes_out
FROM tokensentry.events_local
GROUP BY subject_id, minute;

CREATE TABLE IF NOT EXISTS tokensentry.receipts_local ON CLUSTER '{cluster}'
(
    action_id String,
    agent_id LowCardinality(String) COMMENT 'Enforcement agent, e.g. one gateway instance',
    kind LowCardinality(String),
    subject String COMMENT 'Token id or CIDR the action targets',
    issued_at DateTime64(3, 'UTC') COMMENT 'The action issued_at',
    applied_at DateTime64(3, 'UTC') COMMENT 'When the agent applied the action, by its clock',
    received_at DateTime64(3, 'UTC') COMMENT 'When the pipeline received the receipt',
    schema_version UInt16,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/receipts_local', '{replica}')
PARTITION BY toYYYYMM(applied_at)
ORDER BY (action_id, agent_id)
TTL toDateTime(inserted_at) + toIntervalDay(365);

CREATE TABLE IF NOT EXISTS tokensentry.receipts ON CLUSTER '{cluster}' AS tokensentry.receipts_local
ENGINE = Distributed('{cluster}', tokensentry, receipts_local, cityHash64(action_id));

CREATE VIEW IF NOT EXISTS tokensentry.receipts_final ON CLUSTER '{cluster}' AS SELECT * FROM tokensentry.receipts FINAL;

CREATE TABLE IF NOT EXISTS tokensentry.state_checkpoints_local ON CLUSTER '{cluster}'
(
    group_id String,
    topic String,
    partition Int32,
    offset Int64 COMMENT 'first offset the state does not cover: resume reading here',
    version UInt64 COMMENT 'write time in ns; the newest row wins',
    owner String COMMENT 'worker that wrote the row: client id, host and pid',
    state_bytes UInt64,
    state String CODEC(ZSTD(3)) COMMENT 'Pipeline.checkpoint() pickle; restore only rows this project wrote',
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokensentry/state_checkpoints_local', '{replica}', version)
ORDER BY (group_id, topic, partition);

-- Sharded by the sort key, so all rows of one partition's checkpoints are on
-- one shard, where FINAL in load_checkpoint picks the newest.
CREATE TABLE IF NOT EXISTS tokensentry.state_checkpoints ON CLUSTER '{cluster}' AS tokensentry.state_checkpoints_local
ENGINE = Distributed('{cluster}', tokensentry, state_checkpoints_local, cityHash64(group_id, topic, partition));
