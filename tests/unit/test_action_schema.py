"""The action message schema and the published JSON Schema files."""

import json

import pytest
from pydantic import ValidationError

from pipeline.cli import main
from pipeline.commands.schema import SCHEMA_DIR, export, schema_documents, stale_files
from pipeline.errors import ConfigError
from schemas.actions import Action, ActionKind, ActionReceipt


def test_published_json_schemas_are_current():
    stale = stale_files(SCHEMA_DIR)
    assert stale == [], f"stale JSON Schemas {stale}; run `tokensentry schema export`"


def test_published_json_schemas_match_byte_for_byte():
    for file_name, text in schema_documents().items():
        assert (SCHEMA_DIR / file_name).read_bytes() == text.encode("utf-8"), file_name


def test_export_writes_only_changed_files(tmp_path):
    assert sorted(export(tmp_path)) == sorted(schema_documents())
    assert export(tmp_path) == []
    (tmp_path / "action.v1.json").write_text("{}")
    assert export(tmp_path) == ["action.v1.json"]


def test_export_to_regular_file_names_path(tmp_path, capsys):
    target = tmp_path / "schemas.json"
    target.write_text("{}")

    assert main(["schema", "export", "--dir", str(target)]) == 2
    err = capsys.readouterr().err

    assert str(target) in err
    assert "not a directory" in err
    assert "Traceback" not in err


def test_export_to_regular_file_raises_config_error(tmp_path):
    target = tmp_path / "schemas.json"
    target.write_text("{}")

    with pytest.raises(ConfigError):
        export(target)


def test_action_schema_lists_every_field():
    schema = json.loads((SCHEMA_DIR / "action.v1.json").read_text())
    assert set(schema["properties"]) == set(Action.model_fields)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"action_id", "kind", "subject", "issued_at", "reason"}


def test_action_round_trips_through_json():
    action = Action(
        action_id="a1",
        kind=ActionKind.ROTATE,
        token_id="key:k",
        subject="key:k",
        grace_period_s=3600.0,
        issued_at=1.0,
        reason="leaked in a public repository",
        origin="manual",
        rule="manual",
    )
    assert Action.model_validate_json(action.model_dump_json()) == action


def test_message_without_new_fields_still_validates():
    old = {"action_id": "a", "kind": "revoke", "token_id": "key:k", "subject": "key:k", "issued_at": 1.0, "reason": "r"}
    action = Action.model_validate(old)
    assert action.grace_period_s is None
    assert action.shadow_reason == ""


def test_unknown_field_rejected():
    with pytest.raises(ValidationError, match="extra"):
        Action.model_validate({"action_id": "a", "kind": "revoke", "subject": "s", "issued_at": 1.0, "reason": "r", "x": 1})


def test_receipt_requires_agent_and_action():
    with pytest.raises(ValidationError, match="agent_id"):
        ActionReceipt(agent_id="", action_id="a", kind=ActionKind.REVOKE, subject="key:k", issued_at=1.0, applied_at=2.0)

