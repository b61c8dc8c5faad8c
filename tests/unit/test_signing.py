"""Action signatures: canonical encoding vectors, HMAC and Ed25519 signing, keyrings."""

import hashlib
import hmac
import json

import pytest

from pipeline.errors import ConfigError
from pipeline.signing import (
    ED25519,
    HAVE_ED25519,
    HMAC_SHA256,
    Keyring,
    SigningKey,
    Signer,
    canonical_bytes,
    canonical_json,
    generate_key,
    keyring_from_settings,
    load_keyring,
    load_or_create_keyring,
    save_keyring,
    sign,
    verify,
)
from schemas.actions import Action, ActionKind, Reason

KEY = bytes(range(32))

ACTION = Action(
    action_id="0123456789abcdef0123456789abcdef",
    kind=ActionKind.THROTTLE,
    token_id="tk_00112233aabbccdd",
    subject="tk_00112233aabbccdd",
    account="acme",
    limit_rps=2.5,
    issued_at=1767225600.0,
    expires_at=1767226200.0,
    reason="tk_00112233aabbccdd sent 40 requests/s, limit 20",
    reasons=(Reason(detection_id=7, detector="rate_limit", severity=2, score=2.0, explanation="x"),),
    policy_version="v1",
    rule="rate",
)

# The canonical encoding of ACTION with key_id "k1", written out by hand.
ACTION_CANONICAL = (
    '{"account":"acme","action_id":"0123456789abcdef0123456789abcdef","dry_run":false,'
    '"expires_at":1767226200,"grace_period_s":null,"issued_at":1767225600,"key_id":"k1",'
    '"kind":"throttle","limit_rps":2.5,"origin":"pipeline","policy_version":"v1",'
    '"reason":"tk_00112233aabbccdd sent 40 requests/s, limit 20",'
    '"reasons":[{"detection_id":7,"detector":"rate_limit","evidence":[],"explanation":"x",'
    '"score":2,"severity":2,"window_end":null,"window_start":null}],'
    '"rule":"rate","schema_version":1,"shadow_reason":"","subject":"tk_00112233aabbccdd",'
    '"token_id":"tk_00112233aabbccdd"}'
)


# ---- canonical encoding -------------------------------------------------------------


def test_rfc8785_sample_vector():
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        r' "string": "\u20ac$\u000F\u000aA' + "'" + r'\u0042\u0022\u005c\\\"\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        r'"string":"€$\u000f\nA' + "'" + r'B\"\\\\\"/"}'
    )
    assert canonical_json(json.loads(source)) == expected


def test_rfc8785_member_order_by_utf16():
    names = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    encoded = canonical_json({name: 0 for name in names})
    order = list(json.loads(encoded))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-3.25, "-3.25"),
        (1767225600.0, "1767225600"),
        (1767225600.125, "1767225600.125"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1.5e-6, "0.0000015"),
        (5e-324, "5e-324"),
        (123456789012345680000.0, "123456789012345680000"),
        (2**63 - 1, "9223372036854775807"),
    ],
)
def test_canonical_numbers(value, text):
    assert canonical_json(value) == text


def test_canonical_rejects_non_finite():
    with pytest.raises(ValueError, match="nan"):
        canonical_json(float("nan"))


def test_action_canonical_vector():
    signed = sign(ACTION, "k1", KEY)
    assert canonical_bytes(signed).decode() == ACTION_CANONICAL
    assert canonical_bytes(signed) == canonical_bytes(signed.model_dump(mode="json"))


def test_hmac_signature_vector():
    signed = sign(ACTION, "k1", KEY)
    expected = hmac.new(KEY, ACTION_CANONICAL.encode(), hashlib.sha256).hexdigest()
    assert signed.key_id == "k1"
    assert signed.signature == expected


# ---- verification -----------------------------------------------------------------------


def hmac_keyring(key_id="k1", key=KEY):
    return Keyring({key_id: SigningKey(key_id, HMAC_SHA256, key)}, key_id)


def test_verify_accepts_genuine_action():
    assert verify(sign(ACTION, "k1", KEY), hmac_keyring())


def test_verify_accepts_received_json_object():
    wire = json.loads(sign(ACTION, "k1", KEY).model_dump_json())
    assert verify(wire, hmac_keyring())


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "restore"},
        {"limit_rps": 250.0},
        {"expires_at": 1867226200.0},
        {"subject": "tk_ffffffffffffffff"},
        {"key_id": "k2"},
    ],
)
def test_verify_rejects_altered_action(change):
    wire = json.loads(sign(ACTION, "k1", KEY).model_dump_json())
    wire.update(change)
    keyring = Keyring({"k1": SigningKey("k1", HMAC_SHA256, KEY), "k2": SigningKey("k2", HMAC_SHA256, KEY[::-1])})
    assert not verify(wire, keyring)


def test_verify_rejects_added_field():
    wire = json.loads(sign(ACTION, "k1", KEY).model_dump_json())
    wire["note"] = "added in transit"
    assert not verify(wire, hmac_keyring())


def test_verify_rejects_forged_key():
    forged = sign(ACTION, "k1", b"\x00" * 32)
    assert not verify(forged, hmac_keyring())


def test_verify_rejects_unsigned_and_unknown_key():
    assert not verify(ACTION, hmac_keyring())
    assert not verify(sign(ACTION, "other", KEY), hmac_keyring())


def test_signature_does_not_depend_on_field_order():
    wire = json.loads(sign(ACTION, "k1", KEY).model_dump_json())
    reordered = dict(reversed(list(wire.items())))
    assert verify(reordered, hmac_keyring())


@pytest.mark.skipif(not HAVE_ED25519, reason="the optional cryptography package is not installed")
def test_ed25519_sign_and_verify_with_public_key_only():
    key = generate_key(ED25519, "ed-1")
    signed = sign(ACTION, key.key_id, key)
    public_ring = Keyring({key.key_id: key}, key.key_id).verify_only()
    assert public_ring.get("ed-1").secret is None
    assert verify(signed, public_ring)
    altered = signed.model_copy(update={"limit_rps": 99.0})
    assert not verify(altered, public_ring)


@pytest.mark.skipif(not HAVE_ED25519, reason="the optional cryptography package is not installed")
def test_ed25519_key_cannot_be_downgraded_to_hmac():
    key = generate_key(ED25519, "ed-1")
    public_ring = Keyring({key.key_id: key}, key.key_id).verify_only()
    # An attacker with the public key uses it as an HMAC secret.
    forged = sign(ACTION, "ed-1", key.public_key)
    assert not verify(forged, public_ring)


# ---- keys and keyrings ---------------------------------------------------------------------


def test_keyring_created_on_first_use(tmp_path):
    first = load_or_create_keyring(tmp_path)
    second = load_or_create_keyring(tmp_path)
    assert first.active == second.active
    assert first.active_key().secret == second.active_key().secret
    assert (tmp_path / "signing-keys.json").stat().st_mode & 0o777 == 0o600


def test_keyring_round_trip_and_rotation(tmp_path):
    keyring = Keyring()
    old = generate_key(HMAC_SHA256, "old")
    keyring.add(old, make_active=True)
    keyring.add(generate_key(HMAC_SHA256, "new"), make_active=True)
    path = tmp_path / "ring.json"
    save_keyring(keyring, path)
    loaded = load_keyring(path)
    assert loaded.active == "new"
    assert verify(sign(ACTION, "old", old), loaded)
    assert Signer(loaded).sign(ACTION).key_id == "new"


def test_keyring_file_errors_name_problem(tmp_path):
    path = tmp_path / "ring.json"
    path.write_text('{"keys": {"k": {"algorithm": "hmac-sha256", "secret": "zz"}}}')
    with pytest.raises(ConfigError, match=r"keys\.k\.secret is not hex"):
        load_keyring(path)
    path.write_text('{"keys": {"k": {"algorithm": "rot13", "secret": "00"}}}')
    with pytest.raises(ConfigError, match="unknown algorithm 'rot13'"):
        load_keyring(path)


def test_short_hmac_key_rejected():
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        SigningKey("k", HMAC_SHA256, b"short")


def test_keyring_from_settings_env_key_becomes_active(tmp_path):
    class FakeSecret:
        def get_secret_value(self):
            return KEY.hex()

    class FakeSettings:
        data_dir = tmp_path
        signing_keyring = None
        signing_key = FakeSecret()
        signing_key_id = "from-env"

    keyring = keyring_from_settings(FakeSettings())
    assert keyring.active == "from-env"
    assert len(keyring.keys) == 2
