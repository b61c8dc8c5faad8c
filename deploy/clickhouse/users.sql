-- Roles and settings profiles for TokenSentry on a ClickHouse server.
--
-- tokensentry_writer: the pipeline workers. They insert into the audit
-- tables, read them (duplicate lookup, AuditStore.query) and, on a single
-- node, run the migrations: create the database, tables and views, and
-- alter TTLs. Drop the CREATE and ALTER grants on a cluster, where
-- cluster.sql is applied by an administrator instead.
--
-- tokensentry_analyst: people and dashboards, read-only. readonly = 2
-- rejects every write and DDL statement but still lets clients set
-- per-query settings such as max_threads. Queries are bounded in time and
-- memory so an unfiltered FINAL over months of events cannot starve the
-- writers.
--
-- Create the users yourself with a generated password, e.g.:
--   CREATE USER tokensentry_worker IDENTIFIED WITH sha256_password BY '<generated>'
--       DEFAULT ROLE tokensentry_writer SETTINGS PROFILE 'tokensentry_writer';
--   CREATE USER alice IDENTIFIED WITH sha256_password BY '<generated>'
--       DEFAULT ROLE tokensentry_analyst SETTINGS PROFILE 'tokensentry_analyst';
-- On a cluster add ON CLUSTER '{cluster}' to each statement, unless users
-- are replicated through Keeper (user_directories/replicated).

CREATE ROLE IF NOT EXISTS tokensentry_writer;
GRANT SELECT, INSERT, OPTIMIZE ON tokensentry.* TO tokensentry_writer;
GRANT CREATE DATABASE, CREATE TABLE, CREATE VIEW, ALTER TTL ON tokensentry.* TO tokensentry_writer;

CREATE SETTINGS PROFILE IF NOT EXISTS tokensentry_writer SETTINGS
    -- Inserts into Distributed tables return only once the shards have the
    -- rows, so the duplicate lookup of the next batch finds them.
    distributed_foreground_insert = 1,
    max_execution_time = 600
TO tokensentry_writer;

CREATE ROLE IF NOT EXISTS tokensentry_analyst;
GRANT SELECT ON tokensentry.* TO tokensentry_analyst;

CREATE SETTINGS PROFILE IF NOT EXISTS tokensentry_analyst SETTINGS
    readonly = 2,
    max_execution_time = 300,
    max_memory_usage = 10000000000,
    max_result_rows = 10000000,
    result_overflow_mode = 'throw'
TO tokensentry_analyst;
