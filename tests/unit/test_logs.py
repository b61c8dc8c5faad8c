"""Log set-up: JSON and text lines, context ids, redaction, option resolution."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.logs import bind_context, configure_logging, current_context, redact, resolve_log_options

RAW_TOKEN = "sk_live_51HqLyjWDarjtT1zdp7dc"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    yield buffer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "_TokenSentryHandler":
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_fields(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("pipeline.worker").info("committed %d offsets", 3, extra={"table": "events"})
    (line,) = json_lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "pipeline.worker"
    assert line["message"] == "committed 3 offsets"
    assert line["table"] == "events"
    assert line["ts"].endswith("Z")


def test_level_filters(stream: io.StringIO) -> None:
    configure_logging("WARNING", "json", stream=stream)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [line["message"] for line in json_lines(stream)] == ["shown"]


def test_context_ids_nest_and_reset(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("pipeline.worker")
    with bind_context(worker="w1", partition=3):
        with bind_context(batch="b17"):
            log.info("inner")
        log.info("outer")
    log.info("none")
    inner, outer, none = json_lines(stream)
    assert (inner["worker"], inner["partition"], inner["batch"]) == ("w1", 3, "b17")
    assert "batch" not in outer
    assert outer["partition"] == 3
    assert "worker" not in none
    assert current_context() == {}


def test_context_none_unbinds(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    with bind_context(worker="w1", partition=3), bind_context(partition=None):
        logging.getLogger("x").info("message")
    (line,) = json_lines(stream)
    assert "partition" not in line
    assert line["worker"] == "w1"


def test_context_per_asyncio_task(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("pipeline.worker")

    async def handle(partition: int) -> None:
        with bind_context(partition=partition):
            await asyncio.sleep(0.01)
            log.info("done")

    async def main() -> None:
        with bind_context(worker="w9"):
            await asyncio.gather(handle(0), handle(1))

    asyncio.run(main())
    lines = json_lines(stream)
    assert sorted(line["partition"] for line in lines) == [0, 1]
    assert all(line["worker"] == "w9" for line in lines)


def test_text_line_shows_context_first(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    with bind_context(batch=7, worker="w 1", partition=2):
        logging.getLogger("pipeline.worker").warning("slow write")
    line = stream.getvalue().rstrip("\n")
    assert line.endswith(' WARNING pipeline.worker worker="w 1" partition=2 batch=7: slow write')


def test_redacts_message_arguments(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("x").info("rejected GET /v1?api_key=%s", RAW_TOKEN)
    logging.getLogger("x").info("header Authorization: Bearer %s", RAW_TOKEN)
    text = stream.getvalue()
    assert RAW_TOKEN not in text
    assert text.count("<redacted>") == 2


def test_redacts_exception_text(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    try:
        raise ValueError(f"bad line: {{\"authorization\": \"Bearer {RAW_TOKEN}\"}}")
    except ValueError:
        logging.getLogger("x").exception("parse failed")
    (line,) = json_lines(stream)
    assert "ValueError" in line["exception"]
    assert RAW_TOKEN not in line["exception"]


def test_redacts_text_format_exception(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    try:
        raise RuntimeError(f"GET /x?token={RAW_TOKEN}")
    except RuntimeError:
        logging.getLogger("x").error("failed", exc_info=True)
    assert RAW_TOKEN not in stream.getvalue()
    assert "Traceback" in stream.getvalue()


def test_redacts_context_and_extra(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    with bind_context(request=f"/v1?apikey={RAW_TOKEN}"):
        logging.getLogger("x").info("m", extra={"line": f"key={RAW_TOKEN}"})
    assert RAW_TOKEN not in stream.getvalue()


def test_redacts_store_password(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    logging.getLogger("x").warning("cannot reach http://writer:pa55word@clickhouse:8123/db")
    assert "pa55word" not in stream.getvalue()
    assert "http://writer:<redacted>@clickhouse:8123/db" in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"password={RAW_TOKEN}", RAW_TOKEN),
        (f'secret="{RAW_TOKEN}"', RAW_TOKEN),
        (f"Basic {RAW_TOKEN}", RAW_TOKEN),
        (f'{{"x-api-key": "{RAW_TOKEN}"}}', RAW_TOKEN),
    ],
)
def test_redact_forms(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_redact_leaves_ids_alone() -> None:
    text = "token tk_af61b693912efc56 throttled on partition 3"
    assert redact(text) == text


def test_reconfigure_replaces_handler(stream: io.StringIO) -> None:
    configure_logging("INFO", "text", stream=io.StringIO())
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("x").warning("once")
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_TokenSentryHandler"]
    assert len(ours) == 1
    assert len(json_lines(stream)) == 1


def test_configure_rejects_unknown_format() -> None:
    with pytest.raises(ConfigError, match="invalid log format: 'xml'; use one of text, json"):
        configure_logging("INFO", "xml")


def test_resolve_defaults() -> None:
    assert resolve_log_options() == ("WARNING", "text")


def test_resolve_option_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_LOG_FORMAT", "json")
    monkeypatch.setenv("TOKENSENTRY_LOG_LEVEL", "debug")
    assert resolve_log_options() == ("DEBUG", "json")
    assert resolve_log_options("ERROR", "text") == ("ERROR", "text")


def test_resolve_reads_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log_format: json\nlog_level: INFO\nkafka:\n  partitions: 3\n", encoding="utf-8")
    assert resolve_log_options(config_file=path) == ("INFO", "json")
    monkeypatch.setenv("TOKENSENTRY_CONFIG", str(path))
    monkeypatch.setenv("TOKENSENTRY_LOG_LEVEL", "ERROR")
    assert resolve_log_options() == ("ERROR", "json")


def test_resolve_skips_unreadable_file(tmp_path: Path) -> None:
    assert resolve_log_options(config_file=tmp_path / "missing.yaml") == ("WARNING", "text")


def test_resolve_names_bad_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOKENSENTRY_LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="invalid log format from TOKENSENTRY_LOG_FORMAT: 'yaml'"):
        resolve_log_options()
    path = tmp_path / "c.yaml"
    path.write_text("log_level: loud\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"invalid log level from config file {path} key log_level: 'LOUD'"):
        resolve_log_options(config_file=path, log_format="text")
