-- Per-minute, per-token request rollup, filled by a materialized view on events.
--
-- The view aggregates each inserted block, so the rollup counts every row
-- that reaches `events`. FINAL on `events` cannot undo a double count here,
-- which is why AuditStore.write_events skips events that are already stored
-- before it inserts. The view only sees events inserted after it exists.
-- To backfill older events, run once:
--   INSERT INTO <db>.token_minute SELECT <the SELECT below> FROM <db>.events FINAL
--   WHERE ts < <time this migration ran>

CREATE TABLE IF NOT EXISTS {database}.token_minute
(
    subject_id String,
    minute DateTime('UTC') COMMENT 'Start of the minute of event time',
    requests UInt64,
    errors_4xx UInt64 COMMENT 'Requests with status 400..499',
    errors_5xx UInt64 COMMENT 'Requests with status 500..599',
    bytes_in UInt64 COMMENT 'Sum over requests whose size was logged',
    bytes_out UInt64 COMMENT 'Sum over requests whose size was logged'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (subject_id, minute)
TTL toDateTime(minute) + toIntervalDay({token_minute_ttl_days});

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.token_minute_mv TO {database}.token_minute AS
SELECT
    subject_id,
    toStartOfMinute(toDateTime(ts, 'UTC')) AS minute,
    count() AS requests,
    countIf(status >= 400 AND status < 500) AS errors_4xx,
    countIf(status >= 500 AND status < 600) AS errors_5xx,
    toUInt64(sumIf(bytes_in, bytes_in > 0)) AS bytes_in,
    toUInt64(sumIf(bytes_out, bytes_out > 0)) AS bytes_out
FROM {database}.events
GROUP BY subject_id, minute;
