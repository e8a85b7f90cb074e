"""``groupqwen keys``: create, list, revoke and rotate API keys in the gateway's database (the one
``telemetry.database_url`` names, so every replica sees them; docs/security.md).

A new or rotated key is printed once, alone on stdout (``KEY=$(groupqwen keys create --name ci)``), and
what it is on stderr; only its hash is stored. Each change is written to the ``groupqwen.audit`` log.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from groupqwen import log
from groupqwen.cli.common import ConfigOption, settings_or_exit
from groupqwen.config import Settings

keys_app = typer.Typer(help="API keys (auth: keys): create, list, revoke, rotate.", no_args_is_help=True)
_audit = log.get("groupqwen.audit")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]
KeyIdArgument = Annotated[str, typer.Argument(help="The key's id (the 16 hex digits after gq-)")]


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    """The key store; its errors (bad input, a database that cannot be reached) as one line, exit 1."""
    import sqlalchemy as sa

    from groupqwen.access.keys import KeyStore
    from groupqwen.errors import GroupQwenError
    from groupqwen.telemetry.database import database_url

    log.setup(settings.log_level, settings.log_format)
    store = KeyStore(database_url(settings), timeout=settings.telemetry.health_timeout_s * 2)
    try:
        yield store
    except GroupQwenError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except sa.exc.SQLAlchemyError as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        typer.echo(f"error: the gateway's database cannot be used: {reason[:300]}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _check_models(settings: Settings, models: list[str]) -> None:
    from groupqwen.errors import InvalidRequest
    from groupqwen.orchestrator.router import FIXED_ROUTES

    known = [*settings.catalog(), *FIXED_ROUTES, *settings.router.routes]
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise InvalidRequest(
            f"Invalid value for 'models': {', '.join(unknown) or 'none given'}; "
            f"known models and routes: {', '.join(known)}",
            param="models",
        )


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _describe(public: dict[str, Any]) -> str:
    models = ", ".join(public["models"]) if public["models"] is not None else "every model"
    limits = ", ".join(f"{k} {v}" for k, v in public["limits"].items()) or "default limits"
    return (
        f"key gq-{public['id']} {public['name']!r}: tenant {public['tenant']}; scopes "
        f"{', '.join(public['scopes'])}; models: {models}; {limits}; expires {_when(public['expires_at'])}"
    )


def _show_new(public: dict[str, Any], key: str, as_json: bool, what: str) -> None:
    if as_json:
        typer.echo(json.dumps({**public, "key": key}))
    else:
        typer.echo(key)
    typer.echo(f"{what} {_describe(public)}; the key is shown only this once: keep it now", err=True)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the key is for (shown in listings and logs)")],
    tenant: Annotated[
        str, typer.Option(help="Whose cache, records and datasets the key uses; never another tenant's")
    ] = "default",
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: chat, embeddings, admin, finetune")
    ] = "chat,embeddings",
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated models and routes (auto, auto:fast, …) it may use; default: all"),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="A duration (30d, 12h) or a date (2027-01-31, UTC); default: never")
    ] = None,
    requests_per_minute: Annotated[int | None, typer.Option(help="Its own request rate limit")] = None,
    tokens_per_minute: Annotated[int | None, typer.Option(help="Its own token rate limit")] = None,
    concurrent: Annotated[int | None, typer.Option(help="Its own limit of requests at once")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it (once)."""
    from groupqwen.access.keys import parse_expiry
    from groupqwen.access.principal import Limits

    settings = settings_or_exit(config)
    with _store(settings) as store:
        allowed = _split(models)
        if allowed is not None:
            _check_models(settings, allowed)
        now = time.time()
        record, key = store.create(
            name,
            now=now,
            tenant=tenant,
            scopes=_split(scopes) or [],
            models=allowed,
            limits=Limits(requests_per_minute, tokens_per_minute, concurrent),
            expires_at=parse_expiry(expires, now) if expires is not None else None,
        )
        _audit.info("admin action", action="keys create", key_id=record.key_id, tenant=record.tenant)
        _show_new(record.public(now), key, as_json, "created")
    if settings.auth.mode == "off":
        typer.echo(
            "note: auth is off in this configuration: a gateway started with it serves without keys; "
            "set auth: keys (GROUPQWEN_AUTH__MODE=keys) to require them",
            err=True,
        )


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Every key (revoked and expired ones too), oldest first; never a secret."""
    settings = settings_or_exit(config)
    with _store(settings) as store:
        now = time.time()
        rows = [record.public(now) for record in store.list(tenant)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"{'ID':<19} {'NAME':<20} {'TENANT':<12} {'SCOPES':<30} {'MODELS':<24} {'EXPIRES':<16} STATUS")
    for row in rows:
        models = ",".join(row["models"]) if row["models"] is not None else "*"
        typer.echo(
            f"gq-{row['id']:<16} {row['name'][:20]:<20} {row['tenant'][:12]:<12} "
            f"{','.join(row['scopes']):<30} {models[:24]:<24} {_when(row['expires_at']):<16} {row['status']}"
        )


@keys_app.command("revoke")
def revoke(key_id: KeyIdArgument, config: ConfigOption = None) -> None:
    """Revoke a key for good: every replica refuses it within auth.key_cache_s seconds."""
    settings = settings_or_exit(config)
    with _store(settings) as store:
        record = store.revoke(key_id, now=time.time())
        _audit.info("admin action", action="keys revoke", key_id=record.key_id, tenant=record.tenant)
    typer.echo(f"revoked gq-{record.key_id} {record.name!r}", err=True)


@keys_app.command("rotate")
def rotate(key_id: KeyIdArgument, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Give a key a new secret and print it (once); the old one stops working within auth.key_cache_s."""
    settings = settings_or_exit(config)
    with _store(settings) as store:
        now = time.time()
        record, key = store.rotate(key_id, now=now)
        _audit.info("admin action", action="keys rotate", key_id=record.key_id, tenant=record.tenant)
        _show_new(record.public(now), key, as_json, "rotated")


@keys_app.command("generate")
def generate() -> None:
    """Print a fresh key without storing it: for GROUPQWEN_AUTH__BOOTSTRAP_ADMIN_KEY."""
    from groupqwen.access.keys import generate_key

    typer.echo(generate_key())
