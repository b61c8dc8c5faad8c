"""Token identity: keyed hashing, subject choice and scrubbing of raw credentials."""

import math
import os
import stat

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.identity import (
    TokenHasher,
    event_ids,
    identify,
    load_or_create_secret,
    scrub_text,
    split_target,
)
from pipeline.parsers.base import RAW_FIELDS, ParsedChunk
from schemas.events import EVENT_COLUMNS, SubjectKind

SECRET = bytes(range(32))
RAW_TOKEN = "sk_live_PLANTED0123456789"


def make_row(**values) -> tuple:
    defaults = {
        "ts": 1_700_000_000.0,
        "client_ip": "203.0.113.7",
        "method": "GET",
        "host": "",
        "target": "/v1/orders",
        "route": "",
        "status": 200,
        "latency_ms": math.nan,
        "bytes_in": -1,
        "bytes_out": 10,
        "user_agent": "curl/8",
        "referer": "",
        "origin": "",
        "country": "",
        "asn": 0,
        "request_id": "",
        "key_id": "",
        "account": "",
        "credential": "",
        "device_id": "",
    }
    defaults.update(values)
    return tuple(defaults[name] for name in RAW_FIELDS)


def chunk_of(*rows: tuple) -> ParsedChunk:
    return ParsedChunk(
        line_rows=list(rows),
        positions=list(range(1, len(rows) + 1)),
        formats=["nginx_combined"] * len(rows),
    )


def test_token_hasher_ignores_bearer_scheme():
    hasher = TokenHasher(SECRET)
    assert hasher.token_id("Bearer " + RAW_TOKEN) == hasher.token_id(RAW_TOKEN)


def test_token_hasher_depends_on_secret():
    assert TokenHasher(SECRET).token_id(RAW_TOKEN) != TokenHasher(b"x" * 32).token_id(RAW_TOKEN)


def test_token_hasher_id_format():
    token_id = TokenHasher(SECRET).token_id(RAW_TOKEN)
    assert token_id.startswith("tk_")
    assert len(token_id) == 19
    assert RAW_TOKEN not in token_id


def test_token_hasher_rejects_short_secret():
    with pytest.raises(ConfigError, match="at least 16"):
        TokenHasher(b"short")


def test_secret_file_created_private_and_reused(tmp_path):
    first = load_or_create_secret(tmp_path)
    second = load_or_create_secret(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "token-hash.key").st_mode)
    assert first == second
    assert len(first) == 32
    assert mode == 0o600


def test_secret_file_with_garbage_names_the_file(tmp_path):
    (tmp_path / "token-hash.key").write_text("not-hex\n")
    with pytest.raises(ConfigError, match="token-hash.key is not hex"):
        load_or_create_secret(tmp_path)


@pytest.mark.parametrize(
    ("target", "path", "credential"),
    [
        ("/v1/a", "/v1/a", ""),
        ("/v1/a?x=1", "/v1/a", ""),
        ("/v1/a?x=1&api_key=abc", "/v1/a", "abc"),
        ("/v1/a?access_token=t1", "/v1/a", "t1"),
        ("/v1/a?KEY=K2&z", "/v1/a", "K2"),
        ("/v1/a?token=", "/v1/a", ""),
    ],
)
def test_split_target_finds_query_credentials(target, path, credential):
    assert split_target(target) == (path, credential)


def test_identify_prefers_logged_key_id():
    events = identify(chunk_of(make_row(key_id="key_42", credential=RAW_TOKEN)), TokenHasher(SECRET), "f.log")
    assert events["subject_id"][0] == "key:key_42"
    assert events["subject_kind"][0] == SubjectKind.KEY_ID


def test_identify_hashes_header_credential():
    hasher = TokenHasher(SECRET)
    events = identify(chunk_of(make_row(credential="Bearer " + RAW_TOKEN)), hasher, "f.log")
    assert events["subject_id"][0] == hasher.token_id(RAW_TOKEN)
    assert events["subject_kind"][0] == SubjectKind.TOKEN_HASH


def test_identify_hashes_query_credential_and_drops_query():
    hasher = TokenHasher(SECRET)
    events = identify(chunk_of(make_row(target=f"/v1/a?api_key={RAW_TOKEN}&page=2")), hasher, "f.log")
    assert events["subject_id"][0] == hasher.token_id(RAW_TOKEN)
    assert events["path"][0] == "/v1/a"


def test_identify_falls_back_to_client_ip():
    events = identify(chunk_of(make_row(client_ip="2001:db8::1")), TokenHasher(SECRET), "f.log")
    assert events["subject_id"][0] == "ip:2001:db8::1"
    assert events["subject_kind"][0] == SubjectKind.CLIENT_IP


def test_identify_output_has_every_event_column_and_no_raw_token():
    events = identify(
        chunk_of(make_row(credential=RAW_TOKEN), make_row(target=f"/x?key={RAW_TOKEN}")), TokenHasher(SECRET), "f.log"
    )
    assert set(events) == set(EVENT_COLUMNS)
    for name, column in events.items():
        assert column.dtype == EVENT_COLUMNS[name], name
        assert len(column) == 2, name
        if column.dtype == object:
            assert not any(RAW_TOKEN in value for value in column), name


def test_identify_route_defaults_to_path():
    events = identify(chunk_of(make_row(target="/a?b=1"), make_row(route="orders-api")), TokenHasher(SECRET), "f")
    assert events["route"].tolist() == ["/a", "orders-api"]


def test_event_ids_unique_and_deterministic():
    offsets = np.arange(1, 100_001, dtype=np.int64)
    first = event_ids("logs", 3, offsets)
    assert len(np.unique(first)) == len(offsets)
    assert np.array_equal(first, event_ids("logs", 3, offsets))
    assert not np.array_equal(first, event_ids("logs", 4, offsets))


@pytest.mark.parametrize(
    "line",
    [
        f'1.2.3.4 - - [x] "GET /a?api_key={RAW_TOKEN}&b=1 HTTP/1.1" 200 1 "-" "ua"',
        f'1.2.3.4 - - [x] "GET /a HTTP/1.1" 200 1 "-" "ua" key="{RAW_TOKEN}" rt=0.1',
        f'1.2.3.4 - - [x] "GET /a HTTP/1.1" 200 1 "-" "ua" auth="Bearer {RAW_TOKEN}"',
        f'{{"request": {{"headers": {{"authorization": "Bearer {RAW_TOKEN}", "x-api-key": "{RAW_TOKEN}"}}}}}}',
        f'{{"request_Authorization": "Basic {RAW_TOKEN}"}}',
        f"Authorization: Bearer {RAW_TOKEN}",
        f'{{"headers": {{"apikey": "{RAW_TOKEN}"}}}}',
        f"X-Api-Key: {RAW_TOKEN}",
        f'{{"headers": {{"X-Api-Key": ["{RAW_TOKEN}"]}}}}',
        f'{{"token": "{RAW_TOKEN}"}}',
        f'{{"api-key": "{RAW_TOKEN}"}}',
        f"password={RAW_TOKEN}",
        f"Cookie: session={RAW_TOKEN}",
        f"/v1/items%3Fapi_key%3D{RAW_TOKEN}",
        f"/v1/items;api_key={RAW_TOKEN}",
        f"https://app.example.com/cb#access_token={RAW_TOKEN}",
        f"https://user:{RAW_TOKEN}@kong:8000/v1",
        f"MyClient/1.0 (Bearer {RAW_TOKEN})",
        f"Authorization: Bearer sk:{RAW_TOKEN}",
        f"free text with {RAW_TOKEN} and no name",
    ],
)
def test_scrub_text_removes_planted_token(line):
    scrubbed = scrub_text(line)
    assert RAW_TOKEN not in scrubbed
    assert "<redacted>" in scrubbed


def test_scrub_text_keeps_ordinary_text():
    line = '1.2.3.4 - - [x] "GET /search?q=keyboard HTTP/1.1" 200 1 "-" "Mozilla/5.0"'
    assert scrub_text(line) == line


@pytest.mark.parametrize("column", ["referer", "user_agent", "origin", "host", "target"])
def test_identify_scrubs_free_text_columns(column):
    values = {
        "referer": f"https://app.example.com/cb?api_key={RAW_TOKEN}",
        "user_agent": f"MyClient/1.0 (Bearer {RAW_TOKEN})",
        "origin": f"https://user:{RAW_TOKEN}@app.example.com",
        "host": f"u:{RAW_TOKEN}@kong:8000",
        "target": f"/v1/items;api_key={RAW_TOKEN}",
    }
    events = identify(chunk_of(make_row(**{column: values[column]})), TokenHasher(SECRET), "f")
    for name, values_out in events.items():
        if values_out.dtype == object:
            assert RAW_TOKEN not in values_out[0], name
