"""Topic creation, the missing-topic error, and how ``tokensentry produce`` keys records."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.config import KafkaSettings
from pipeline.kafka_admin import MissingTopicError, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def _settings(bootstrap, names, **overrides) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topics=(names.log_topic,),
        action_topic=names.action_topic,
        dead_letter_topic=names.dead_letter_topic,
        receipt_topic=names.receipt_topic,
        **overrides,
    )


async def _describe(bootstrap: str, topic: str) -> tuple[int, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics([topic])
        partitions = len(topics[0]["partitions"])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = responses[0].to_object()["resources"][0]["config_entries"]
    return partitions, {entry["config_names"]: entry["config_value"] for entry in entries}


def test_kafka_admin_creates_missing_topics(bootstrap, names):
    kafka = _settings(bootstrap, names, partitions=4)

    created = asyncio.run(ensure_topics(kafka, topic_specs(kafka)))
    again = asyncio.run(ensure_topics(kafka, topic_specs(kafka)))

    assert sorted(created) == sorted(names.topics)
    assert again == []
    log_partitions, _ = asyncio.run(_describe(bootstrap, names.log_topic))
    assert log_partitions == 4
    _, action_configs = asyncio.run(_describe(bootstrap, names.action_topic))
    assert action_configs["cleanup.policy"] == "compact"
    assert action_configs["retention.ms"] == "-1"
    _, dead_letter_configs = asyncio.run(_describe(bootstrap, names.dead_letter_topic))
    assert dead_letter_configs["cleanup.policy"] == "delete"


def test_kafka_admin_missing_topic_error_names_command(bootstrap, names):
    kafka = _settings(bootstrap, names, create_topics=False)

    with pytest.raises(MissingTopicError) as error:
        asyncio.run(ensure_topics(kafka, topic_specs(kafka)))

    message = str(error.value)
    assert f"log topic '{names.log_topic}' does not exist" in message
    assert (
        f"kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {names.log_topic} "
        "--partitions 6 --replication-factor 1" in message
    )
    assert f"--topic {names.action_topic} --partitions 6 --replication-factor 1 --config cleanup.policy=compact" in message


def test_kafka_produce_keys_records_by_subject(tokensentry, names, kafka):
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    lines = [
        f'192.0.2.10 - - [{stamp}] "GET /v1/items?api_key=k-123456 HTTP/1.1" 200 12 "-" "curl/8"',
        f'192.0.2.11 - - [{stamp}] "GET /v1/items HTTP/1.1" 200 12 "-" "curl/8"',
        f'192.0.2.11 - - [{stamp}] "GET /v1/other HTTP/1.1" 200 12 "-" "curl/8"',
        "not an access log line",
    ]
    summary = tokensentry.produce(lines)
    token_id = tokensentry.command("token-id", "k-123456").stdout.strip()

    records = {record.value.decode(): record for record in kafka.read_topic(names.log_topic)}
    assert summary["lines_produced"] == len(lines)
    assert records[lines[0]].key.decode() == token_id
    assert records[lines[1]].key == b"ip:192.0.2.11"
    assert records[lines[1]].partition == records[lines[2]].partition
    assert records[lines[3]].key is None
    assert b"k-123456" not in records[lines[0]].key
