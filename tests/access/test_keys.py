"""The key store on real SQLite and PostgreSQL: keys are stored hashed, listed without secrets, revoked,
rotated, expired; the bootstrap key is ensured idempotently; bad input is refused with what to fix."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from groupqwen.access.keys import KeyStore, generate_key, keys_table, parse_expiry, parse_key
from groupqwen.access.principal import SCOPES, Limits
from groupqwen.errors import InvalidRequest, NotFound
from groupqwen.telemetry.database import engine_url

NOW = 1_800_000_000.0


def stored_rows(url: str) -> list[dict[str, object]]:
    engine = sa.create_engine(engine_url(url))
    with engine.connect() as conn:
        rows = [dict(row._asdict()) for row in conn.execute(sa.select(keys_table))]
    engine.dispose()
    return rows


def test_a_key_is_stored_hashed_and_found_by_its_id(store: KeyStore, keys_url: str) -> None:
    record, key = store.create(
        "ci",
        now=NOW,
        tenant="acme",
        scopes=["chat", "admin"],
        models=["auto", "fake"],
        limits=Limits(requests_per_minute=60, tokens_per_minute=10_000, concurrent_requests=2),
        expires_at=NOW + 3600,
    )
    key_id, secret = parse_key(key) or ("", "")
    assert key.startswith("gq-") and record.key_id == key_id and len(secret) >= 43
    found = store.get(key_id)
    assert found == record
    assert found.opens_with(secret) and not found.opens_with(
        secret[:-1] + ("y" if secret.endswith("x") else "x")
    )
    principal = found.principal()
    assert principal.tenant == "acme" and principal.scopes == {"chat", "admin"}
    assert principal.models == {"auto", "fake"} and principal.limits.requests_per_minute == 60
    rows = stored_rows(keys_url)
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0].values())  # only the hash is kept
    assert rows[0]["secret_sha256"] != secret and len(str(rows[0]["secret_sha256"])) == 64
    assert store.get("0" * 16) is None


def test_listing_revoking_and_rotating(store: KeyStore) -> None:
    first, _ = store.create("first", now=NOW)
    second, old_key = store.create("second", now=NOW + 1, tenant="other")
    assert [r.key_id for r in store.list()] == [first.key_id, second.key_id]
    assert [r.key_id for r in store.list("other")] == [second.key_id]
    public = first.public(NOW)
    assert public["status"] == "active" and public["scopes"] == ["chat", "embeddings"]
    assert "secret_sha256" not in public and public["models"] is None

    rotated, new_key = store.rotate(second.key_id, now=NOW + 2)
    assert parse_key(new_key)[0] == second.key_id  # type: ignore[index]
    assert rotated.opens_with(parse_key(new_key)[1])  # type: ignore[index]
    assert not rotated.opens_with(parse_key(old_key)[1])  # type: ignore[index]
    assert (rotated.name, rotated.tenant, rotated.scopes) == (second.name, second.tenant, second.scopes)

    revoked = store.revoke(f"gq-{first.key_id}", now=NOW + 3)  # with or without the prefix
    assert revoked.revoked_at == NOW + 3 and revoked.status(NOW + 4) == "revoked"
    assert store.revoke(first.key_id, now=NOW + 9).revoked_at == NOW + 3  # again: unchanged
    with pytest.raises(InvalidRequest, match="revoked: create a new one"):
        store.rotate(first.key_id, now=NOW + 5)
    with pytest.raises(NotFound, match="no key"):
        store.revoke("feedfeedfeedfeed", now=NOW)


def test_expiry(store: KeyStore) -> None:
    record, _ = store.create("short", now=NOW, expires_at=NOW + 60)
    assert record.status(NOW + 59) == "active" and record.status(NOW + 60) == "expired"


def test_bootstrap_key_is_ensured_once_and_follows_its_secret(store: KeyStore) -> None:
    key = generate_key()
    first = store.ensure(key, "bootstrap", now=NOW)
    assert first.scopes == frozenset(SCOPES) and first.tenant == "default"
    assert store.ensure(key, "bootstrap", now=NOW + 1) == first  # a restart: the same key, unchanged
    changed = parse_key(key)[0]  # type: ignore[index]
    new_key = f"gq-{changed}.{'n' * 43}"
    assert store.ensure(new_key, "bootstrap", now=NOW + 2).opens_with("n" * 43)  # the secret changed
    store.revoke(changed, now=NOW + 3)
    assert store.ensure(new_key, "bootstrap", now=NOW + 4).revoked_at == NOW + 3  # revoked stays revoked
    assert len(store.list()) == 1
    with pytest.raises(InvalidRequest, match="groupqwen keys generate"):
        store.ensure("changeme", "bootstrap", now=NOW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": ["chat", "root"]}, "'scopes': root; choose from chat, embeddings, admin, finetune"),
        ({"scopes": []}, "'scopes': none given"),
        ({"tenant": "../etc"}, "'tenant'"),
        ({"tenant": ""}, "'tenant'"),
        ({"limits": Limits(requests_per_minute=0)}, "'requests_per_minute': at least 1"),
        ({"name": " "}, "'name'"),
    ],
)
def test_bad_input_is_refused_with_what_to_fix(
    store: KeyStore, fields: dict[str, object], message: str
) -> None:
    given = {"name": "x", **fields}
    with pytest.raises(InvalidRequest, match=message):
        store.create(now=NOW, **given)  # type: ignore[arg-type]
    assert store.list() == []


def test_parse_expiry() -> None:
    assert parse_expiry("30d", NOW) == NOW + 30 * 86400
    assert parse_expiry("12h", NOW) == NOW + 12 * 3600
    assert parse_expiry("2100-01-31", NOW) == dt.datetime(2100, 1, 31, tzinfo=dt.UTC).timestamp()
    assert (
        parse_expiry("2100-01-31T12:00:00+02:00", NOW)
        == dt.datetime(2100, 1, 31, 10, tzinfo=dt.UTC).timestamp()
    )
    with pytest.raises(InvalidRequest, match="is in the past"):
        parse_expiry("2020-01-01", NOW)
    with pytest.raises(InvalidRequest, match="neither a duration"):
        parse_expiry("soon", NOW)


def test_keys_are_unguessable_and_well_formed() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100 and all(parse_key(k) is not None for k in keys)
    for bad in (
        "",
        "gq-",
        "sk-abc",
        "gq-XYZ.0123456789012345678901234567890123",
        "gq-0123456789abcdef.short",
    ):
        assert parse_key(bad) is None
