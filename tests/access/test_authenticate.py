"""``Authenticator``: a header → the principal, or a 401 that says what is wrong without repeating the key;
keys trusted for ``key_cache_s`` (revocation reaches every replica within it), and used as last seen while
the database cannot be read. Real SQLite and PostgreSQL; the clock is a FakeClock."""

from __future__ import annotations

import pytest
from servers import PostgresServer

from groupqwen.access.authenticate import NO_KEY, Authenticator
from groupqwen.access.keys import KeyStore, generate_key, parse_key
from groupqwen.access.principal import ANONYMOUS
from groupqwen.errors import AuthenticationFailed, KeysUnavailable
from groupqwen.testing import FakeClock


def replica(url: str, clock: FakeClock, fresh_s: float = 10.0, stale_s: float = 600.0) -> Authenticator:
    return Authenticator(KeyStore(url), fresh_s=fresh_s, stale_s=stale_s, clock=clock)


async def test_auth_off_is_anonymous_whatever_is_sent() -> None:
    off = Authenticator(None)
    assert await off.principal(None) is ANONYMOUS
    assert await off.principal("Bearer anything") is ANONYMOUS


async def test_what_each_bad_header_is_told(keys_url: str) -> None:
    clock = FakeClock()
    gateway = replica(keys_url, clock)
    assert gateway.store is not None
    _, key = gateway.store.create("ci", now=clock.time())
    expired_record, expired = gateway.store.create("old", now=clock.time(), expires_at=clock.time() + 5)
    key_id = parse_key(key)[0]  # type: ignore[index]
    cases = {
        None: NO_KEY,
        "": NO_KEY,
        "Bearer ": NO_KEY,
        f"Basic {key}": "must read 'Bearer YOUR_KEY'",
        "Bearer sk-proj-abcdef": "it is not a GroupQwen key",
        f"Bearer {key[:-3]}xyz": f"Incorrect API key provided: gq-{key_id}.****",
        f"Bearer gq-{'0' * 16}.{'a' * 43}": f"Incorrect API key provided: gq-{'0' * 16}.****",
    }
    for header, message in cases.items():
        with pytest.raises(AuthenticationFailed) as failed:
            await gateway.principal(header)
        assert message in failed.value.message
        assert key.split(".")[1] not in failed.value.message  # never the secret
    assert (await gateway.principal(f"Bearer {key}")).key_id == key_id
    assert (await gateway.principal(f"bearer   {key}  ")).key_id == key_id  # the scheme in any case
    clock.advance(5)
    with pytest.raises(AuthenticationFailed, match=f"gq-{expired_record.key_id} expired at 2026-"):
        await gateway.principal(f"Bearer {expired}")
    gateway.close()


async def test_revocation_reaches_every_replica_within_key_cache_s(keys_url: str) -> None:
    clock = FakeClock()
    first, second = replica(keys_url, clock), replica(keys_url, clock)
    cli = KeyStore(keys_url)  # `groupqwen keys revoke`, from anywhere
    record, key = cli.create("ci", now=clock.time())
    header = f"Bearer {key}"
    assert (await first.principal(header)).key_id == record.key_id
    cli.revoke(record.key_id, now=clock.time())
    with pytest.raises(AuthenticationFailed, match="has been revoked"):
        await second.principal(header)  # never looked it up: refused at once
    assert (await first.principal(header)).key_id == record.key_id  # trusted for key_cache_s at most
    clock.advance(10)
    with pytest.raises(AuthenticationFailed, match="has been revoked"):
        await first.principal(header)

    # rotation: the old secret stops working within the same bound, the new one works at once elsewhere
    other, old_key = cli.create("other", now=clock.time())
    assert (await first.principal(f"Bearer {old_key}")).key_id == other.key_id
    _, new_key = cli.rotate(other.key_id, now=clock.time())
    assert (await second.principal(f"Bearer {new_key}")).key_id == other.key_id
    clock.advance(10)
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        await first.principal(f"Bearer {old_key}")
    for part in (first, second):
        part.close()
    cli.close()


async def test_a_database_outage_keeps_recent_keys_working(
    pg_keys_url: str, postgres: PostgresServer
) -> None:
    clock = FakeClock()
    gateway = replica(pg_keys_url, clock, fresh_s=10, stale_s=60)
    assert gateway.store is not None
    _, seen = gateway.store.create("seen", now=clock.time())
    _, unseen = gateway.store.create("unseen", now=clock.time())
    await gateway.principal(f"Bearer {seen}")
    postgres.stop()
    try:
        clock.advance(30)  # past key_cache_s, within key_stale_s: as last seen
        assert (await gateway.principal(f"Bearer {seen}")).name == "seen"
        with pytest.raises(KeysUnavailable, match="cannot be checked"):
            await gateway.principal(f"Bearer {unseen}")
        clock.advance(31)  # past key_stale_s: no longer
        with pytest.raises(KeysUnavailable):
            await gateway.principal(f"Bearer {seen}")
    finally:
        postgres.start()
    assert (await gateway.principal(f"Bearer {unseen}")).name == "unseen"  # back: checked again
    gateway.close()


async def test_a_start_with_the_database_down(pg_keys_url: str, postgres: PostgresServer) -> None:
    """Without a bootstrap key the gateway starts (keys are checked once the database answers); a bootstrap
    key needs the database at start."""
    gateway = replica(pg_keys_url, FakeClock())
    postgres.stop()
    try:
        assert gateway.bootstrap(None) is None
        with pytest.raises(KeysUnavailable, match="cannot be reached"):
            gateway.bootstrap(generate_key())
    finally:
        postgres.start()
    assert gateway.bootstrap(generate_key()) is not None
    gateway.close()
