"""Horizon settings (file, environment, flags) and the session-signing secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.auth import SECRET_FILE, TokenError, issue_token, load_secret, read_token
from online_feature_store.horizon.config import HorizonConfig, load_config


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "horizon.yaml"
    path.write_text("port: 9000\nsingle_person: true\nserving_address: 10.0.0.1:1\nsession_ttl_seconds: 60\n")
    env = {"OFS_HORIZON_PORT": "9100", "OFS_HORIZON_SESSION_TTL_SECONDS": "120", "UNRELATED": "x"}
    config = load_config(str(path), {"port": 9200, "host": None}, env=env)
    assert config.port == 9200  # flag
    assert config.session_ttl_seconds == 120  # environment over file
    assert config.single_person is True  # file
    assert config.serving_address == "10.0.0.1:1"
    assert config.host == "127.0.0.1"  # default (a None flag is ignored)


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFS_REGISTRY", raising=False)
    config = load_config(None, {"data_dir": str(tmp_path)}, env={})
    assert config.port == 8082
    assert config.embedded()
    assert config.resolved_database_url() == f"sqlite:///{tmp_path.resolve() / 'horizon.db'}"
    assert config.registry_url() == f"sqlite://{tmp_path.resolve() / 'registry.db'}"
    assert load_config(None, {}, env={"OFS_HORIZON_REGISTRY": "etcd://h:1"}).registry_url() == "etcd://h:1"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("prot: 1\n", {}, "unknown settings ['prot']"),
        ("", {"OFS_HORIZON_PORT": "eighty"}, "port"),
        ("port: 70000\n", {}, "port"),
        ("single_person: maybe\n", {}, "single_person"),
        ("password_profile: FAST\n", {}, "password_profile"),
        ("- a list\n", {}, "expected a mapping"),
        ("port: [\n", {}, "not valid YAML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    path = tmp_path / "horizon.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInputError) as info:
        load_config(str(path), {}, env=env)
    assert needle in str(info.value)


def test_missing_config_file() -> None:
    with pytest.raises(InvalidInputError, match="cannot read Horizon config"):
        load_config("/nonexistent/horizon.yaml", {}, env={})


def test_embedded_secret_is_generated_once_private(tmp_path: Path) -> None:
    config = HorizonConfig(data_dir=tmp_path)
    first = load_secret(config)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret(config) == first
    assert load_secret(HorizonConfig(data_dir=tmp_path / "other")) != first
    path.chmod(0o644)
    with pytest.raises(InvalidInputError, match="readable by others"):
        load_secret(config)


def test_configured_secret(tmp_path: Path) -> None:
    secret = "s" * 32
    assert load_secret(HorizonConfig(data_dir=tmp_path, secret=secret)) == secret
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(InvalidInputError, match="at least 32"):
        load_secret(HorizonConfig(secret="short"))
    with pytest.raises(InvalidInputError, match="OFS_HORIZON_SECRET"):
        load_secret(HorizonConfig(data_dir=tmp_path, database_url="postgresql+psycopg://h/db"))


def test_tokens_are_signed_and_expire() -> None:
    secret = "k" * 40
    token, session = issue_token(secret, "ann", 60)
    back = read_token(secret, token)
    assert (back.username, back.jti, back.expires_at) == ("ann", session.jti, session.expires_at)
    with pytest.raises(TokenError, match="invalid"):
        read_token("z" * 40, token)
    expired, _ = issue_token(secret, "ann", -1)
    with pytest.raises(TokenError, match="expired"):
        read_token(secret, expired)
