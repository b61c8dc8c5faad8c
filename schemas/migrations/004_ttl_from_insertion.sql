-- Retention counts from insertion time, not event time. With event-time TTLs
-- a replay of logs older than the retention stored nothing: ClickHouse drops
-- rows that are already expired when they are inserted. token_minute keeps
-- its event-time TTL: it is a rollup for recent dashboards and has no
-- insertion column.

ALTER TABLE {database}.events MODIFY TTL toDateTime(inserted_at) + toIntervalDay({events_ttl_days});
ALTER TABLE {database}.windows MODIFY TTL toDateTime(inserted_at) + toIntervalDay({windows_ttl_days});
ALTER TABLE {database}.detections MODIFY TTL toDateTime(inserted_at) + toIntervalDay({detections_ttl_days});
ALTER TABLE {database}.actions MODIFY TTL toDateTime(inserted_at) + toIntervalDay({actions_ttl_days});
ALTER TABLE {database}.receipts MODIFY TTL toDateTime(inserted_at) + toIntervalDay({receipts_ttl_days});
