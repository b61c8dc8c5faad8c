-- Enforcement receipts: an agent's confirmation that it applied an action.
-- One row per (action, agent). A redelivered receipt collapses on merge, so
-- read with FINAL or from receipts_final. issued_at is copied from the
-- action, so applied_at - issued_at is the enforcement latency without a join.

CREATE TABLE IF NOT EXISTS {database}.receipts
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(applied_at)
ORDER BY (action_id, agent_id)
TTL toDateTime(applied_at) + toIntervalDay({receipts_ttl_days});

CREATE VIEW IF NOT EXISTS {database}.receipts_final AS SELECT * FROM {database}.receipts FINAL;
