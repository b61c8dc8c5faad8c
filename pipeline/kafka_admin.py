"""Kafka cluster access shared by ``run``, ``produce`` and ``actions``: client options and topics.

``client_options`` turns ``KafkaSettings`` into the keyword arguments every
aiokafka client takes (bootstrap servers, client id, SASL and SSL).
``ensure_topics`` checks that the topics TokenSentry reads and writes exist.
It creates the missing ones when ``kafka.create_topics`` is true, and
otherwise raises ``MissingTopicError`` with the ``kafka-topics.sh`` command
that creates each one.

Topic layout (``topic_specs``):

- log topics: ``kafka.partitions`` partitions, the broker's retention. The
  gateway (or ``tokensentry produce``) keys each record by token, so one
  token's requests stay in one partition.
- dead-letter topic: rejected records, kept 14 days for inspection.
- action topic: compacted and keyed by subject, so a reader that starts from
  the beginning finds the latest decision for every subject. Records are
  never deleted for age (``retention.ms=-1``). ``min.compaction.lag.ms`` of
  one day keeps every action for at least a day, so an enforcement agent
  that was down for less than that still reads each action, not only the
  latest per subject.
- receipt topic: acknowledgements from enforcement agents, kept 30 days.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError, TokenSentryError

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000

# Kafka protocol error codes that create_topics returns per topic.
TOPIC_ALREADY_EXISTS = 36

# How long ensure_topics waits for new topics to appear in the metadata:
# CreateTopics returns once the controller committed them, and brokers list
# them a moment later.
TOPIC_METADATA_TIMEOUT_S = 30.0

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaUnavailableError(TokenSentryError):
    """The Kafka cluster could not be reached or returned an error."""

    retriable = True


class MissingTopicError(ConfigError):
    """A topic TokenSentry needs does not exist and may not be created automatically."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """Creation parameters of one topic: partitions, replication factor and topic configs."""

    name: str
    role: str
    """Topic role named in messages: 'log', 'dead-letter', 'action' or 'receipt'."""
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)

    def create_command(self, bootstrap_servers: str) -> str:
        """Return the ``kafka-topics.sh`` command line that creates this topic."""
        words = [
            "kafka-topics.sh",
            "--bootstrap-server",
            bootstrap_servers,
            "--create",
            "--topic",
            self.name,
            "--partitions",
            str(self.partitions),
            "--replication-factor",
            str(self.replication_factor),
        ]
        for name, value in self.configs.items():
            words += ["--config", f"{name}={value}"]
        return shlex.join(words)


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Return the connection keyword arguments shared by aiokafka's consumer, producer and admin client.

    Raises:
        ConfigError: a SASL protocol is set without a supported mechanism or
            credentials, or an SSL file cannot be loaded.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=kafka.ssl_cafile,
                certfile=kafka.ssl_certfile,
                keyfile=kafka.ssl_keyfile,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot load the Kafka SSL files (kafka.ssl_cafile, kafka.ssl_certfile, kafka.ssl_keyfile): {exc}"
            ) from None
    if kafka.security_protocol.startswith("SASL_"):
        if kafka.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"kafka.sasl_mechanism is {kafka.sasl_mechanism!r} but kafka.security_protocol is "
                f"{kafka.security_protocol}; set it to one of {', '.join(SASL_MECHANISMS)}"
            )
        if not kafka.sasl_username or kafka.sasl_password is None:
            raise ConfigError(
                f"kafka.security_protocol is {kafka.security_protocol}; set kafka.sasl_username and "
                "kafka.sasl_password (env: TOKENSENTRY_KAFKA__SASL_USERNAME, TOKENSENTRY_KAFKA__SASL_PASSWORD)"
            )
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def topic_specs(kafka: KafkaSettings, log_topics: Iterable[str] | None = None) -> list[TopicSpec]:
    """Return the specs of every topic a worker uses: log topics, dead letters, actions and receipts."""
    partitions = kafka.partitions
    replication = kafka.replication_factor
    specs = [log_topic_spec(kafka, name) for name in (kafka.topics if log_topics is None else log_topics)]
    specs.append(
        TopicSpec(
            kafka.dead_letter_topic,
            "dead-letter",
            partitions,
            replication,
            {"cleanup.policy": "delete", "retention.ms": str(14 * DAY_MS)},
        )
    )
    specs.append(action_topic_spec(kafka))
    specs.append(
        TopicSpec(
            kafka.receipt_topic,
            "receipt",
            partitions,
            replication,
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        )
    )
    return specs


def log_topic_spec(kafka: KafkaSettings, name: str) -> TopicSpec:
    """Return the spec of one log topic: ``kafka.partitions`` partitions, broker defaults otherwise."""
    return TopicSpec(name, "log", kafka.partitions, kafka.replication_factor)


def action_topic_spec(kafka: KafkaSettings) -> TopicSpec:
    """Return the spec of the compacted action topic (see the module docstring for the configs)."""
    return TopicSpec(
        kafka.action_topic,
        "action",
        kafka.partitions,
        kafka.replication_factor,
        {
            "cleanup.policy": "compact",
            "retention.ms": "-1",
            "min.compaction.lag.ms": str(DAY_MS),
            "delete.retention.ms": str(DAY_MS),
            # Compaction works on closed segments only; the default of 7 days
            # would keep every action uncompacted for a week.
            "segment.ms": str(DAY_MS),
        },
    )


async def ensure_topics(kafka: KafkaSettings, specs: Sequence[TopicSpec]) -> list[str]:
    """Create the topics in ``specs`` that do not exist, and return the names created.

    Existing topics are left as they are; an action topic without
    ``cleanup.policy=compact`` is logged as a warning, because it then loses
    enforcement state to retention.

    Raises:
        MissingTopicError: topics are missing and ``kafka.create_topics`` is
            false; the message names each one with its ``kafka-topics.sh`` command.
        KafkaUnavailableError: the cluster cannot be reached, or it rejected a
            topic (invalid name, replication factor above the broker count).
    """
    admin = AIOKafkaAdminClient(**client_options(kafka))
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailableError(
            f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}; "
            "check --bootstrap-servers (kafka.bootstrap_servers) and that the brokers are running"
        ) from None
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing and not kafka.create_topics:
            raise MissingTopicError(_missing_topics_message(missing, kafka.bootstrap_servers))
        if missing:
            await _create_topics(admin, missing)
            await _wait_for_topics(admin, [spec.name for spec in missing])
        for spec in specs:
            if spec.role == "action" and spec.name in existing:
                await _check_compacted(admin, spec.name)
        return [spec.name for spec in missing]
    except KafkaError as exc:
        raise KafkaUnavailableError(f"Kafka admin request to {kafka.bootstrap_servers} failed: {exc}") from None
    finally:
        await admin.close()


async def topic_partitions(kafka: KafkaSettings, topic: str) -> list[int] | None:
    """Return the partition ids of ``topic``, or None when it does not exist.

    Raises:
        KafkaUnavailableError: the cluster cannot be reached.
    """
    admin = AIOKafkaAdminClient(**client_options(kafka))
    try:
        await admin.start()
        descriptions = await admin.describe_topics([topic])
    except KafkaError as exc:
        raise KafkaUnavailableError(f"cannot describe topic {topic} at {kafka.bootstrap_servers}: {exc}") from None
    finally:
        await admin.close()
    for description in descriptions:
        if description["topic"] == topic and description["error_code"] == 0:
            return sorted(partition["partition"] for partition in description["partitions"])
    return None


def _missing_topics_message(missing: Sequence[TopicSpec], bootstrap_servers: str) -> str:
    lines = [
        f"{spec.role} topic {spec.name!r} does not exist; create it with: {spec.create_command(bootstrap_servers)}"
        for spec in missing
    ]
    lines.append("or set kafka.create_topics: true (env: TOKENSENTRY_KAFKA__CREATE_TOPICS=true) to create them on start")
    return "\n".join(lines)


async def _create_topics(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    new_topics = [
        NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=dict(spec.configs))
        for spec in specs
    ]
    response = await admin.create_topics(new_topics)
    by_name = {spec.name: spec for spec in specs}
    failures = []
    for result in response.to_object()["topic_errors"]:
        spec = by_name[result["topic"]]
        code = result["error_code"]
        if code == 0:
            logger.info(
                "created %s topic %s (%d partitions, replication factor %d, %s)",
                spec.role,
                spec.name,
                spec.partitions,
                spec.replication_factor,
                ", ".join(f"{name}={value}" for name, value in spec.configs.items()) or "broker defaults",
            )
        elif code == TOPIC_ALREADY_EXISTS:
            # Another worker created it between list_topics and create_topics.
            logger.info("%s topic %s was created concurrently by another client", spec.role, spec.name)
        else:
            failures.append(f"{spec.name}: {result['error_message']} (Kafka error code {code})")
    if failures:
        raise KafkaUnavailableError("Kafka rejected the creation of topics: " + "; ".join(failures))


async def _wait_for_topics(admin: AIOKafkaAdminClient, names: Sequence[str]) -> None:
    deadline = time.monotonic() + TOPIC_METADATA_TIMEOUT_S
    while True:
        listed = set(await admin.list_topics())
        absent = [name for name in names if name not in listed]
        if not absent:
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"topics {', '.join(absent)} were created but are still missing from the cluster metadata "
                f"after {TOPIC_METADATA_TIMEOUT_S:g} s; check the broker logs"
            )
        await asyncio.sleep(0.1)


async def _check_compacted(admin: AIOKafkaAdminClient, topic: str) -> None:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    for response in await admin.describe_configs([resource]):
        for result in response.to_object()["resources"]:
            for entry in result["config_entries"]:
                if entry["config_names"] == "cleanup.policy" and "compact" not in entry["config_value"]:
                    logger.warning(
                        "action topic %s has cleanup.policy=%s, not compact: retention will delete old "
                        "decisions, so an enforcement agent that reads from the beginning misses them. "
                        "Fix: kafka-configs.sh --alter --entity-type topics --entity-name %s "
                        "--add-config cleanup.policy=compact",
                        topic,
                        entry["config_value"],
                        topic,
                    )
