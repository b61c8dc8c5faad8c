-- Partition state checkpoints of the Kafka workers (pipeline/checkpoints.py),
-- written by AuditStore.save_checkpoint and read by load_checkpoint. The
-- newest version per (group_id, topic, partition) wins, so one row per
-- partition remains after merges, and FINAL reads are exact before them.
-- Workers of earlier releases created this table themselves with the same
-- statement, which IF NOT EXISTS keeps.
--
-- No TTL: a worker saves a partition again only when its offset moved, so a
-- TTL would delete the only checkpoint of a quiet partition, and its next
-- owner would start with empty baselines. The table holds one row per
-- partition and group after merges.

CREATE TABLE IF NOT EXISTS {database}.state_checkpoints
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (group_id, topic, partition);
