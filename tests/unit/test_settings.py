"""Bad configuration is refused at start with a message naming each bad variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skynet.common.errors import ConfigError
from skynet.common.settings import load_settings
from skynet.uploader.settings import UploaderSettings
from skynet.watcher.settings import WatcherSettings


def test_every_bad_variable_is_named_in_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYNET_WATCH_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("SKYNET_SETTLE_MS", "soon")
    monkeypatch.setenv("SKYNET_DELETE_MODE", "yolo")
    monkeypatch.setenv("SKYNET_AMQP_URL", "http://user:hunter2@broker/")
    monkeypatch.setenv("SKYNET_SOURCE", "bad source!")
    with pytest.raises(ConfigError) as err:
        load_settings(WatcherSettings)
    text = str(err.value)
    for var in ("SKYNET_WATCH_DIR", "SKYNET_SETTLE_MS", "SKYNET_DELETE_MODE", "SKYNET_AMQP_URL", "SKYNET_SOURCE"):
        assert var in text
    assert "hunter2" not in text, "a secret was echoed in the configuration error"


def test_the_state_folder_may_not_live_inside_the_watched_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SKYNET_WATCH_DIR", str(tmp_path))
    monkeypatch.setenv("SKYNET_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(ConfigError, match="STATE_DIR"):
        load_settings(WatcherSettings)


def test_development_secrets_are_refused_in_production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYNET_WATCH_DIR", str(tmp_path))
    monkeypatch.setenv("SKYNET_TARGET", "sftp://u@h:22/x")
    monkeypatch.setenv("SKYNET_AMQP_URL", "amqp://skynet:changeme@rabbitmq/%2F")
    load_settings(UploaderSettings)  # fine for development
    monkeypatch.setenv("SKYNET_PRODUCTION", "true")
    with pytest.raises(ConfigError, match="development password") as err:
        load_settings(UploaderSettings)
    assert "changeme" not in str(err.value), "the refused secret was echoed back"


def test_the_uploader_refuses_an_unknown_target_scheme_before_doing_anything(tmp_path: Path) -> None:
    env = {"SKYNET_WATCH_DIR": str(tmp_path), "SKYNET_TARGET": "gopher://x/y", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "skynet.uploader"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "SKYNET_TARGET" in proc.stderr and "gopher" in proc.stderr


@pytest.mark.parametrize("service", ["watcher", "uploader", "notifier", "api"])
def test_each_service_starts_as_a_console_script_and_refuses_bad_configuration_clearly(
    service: str, tmp_path: Path
) -> None:
    import os
    import shutil

    script = shutil.which(f"skynet-{service}") or str(Path(sys.executable).parent / f"skynet-{service}")
    assert os.path.exists(script), f"skynet-{service} is not installed as a console script"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SKYNET_WATCH_DIR": str(tmp_path / "nowhere"),
        "SKYNET_TARGET": "s3://bucket/prefix",
        "SKYNET_AMQP_URL": "ftp://nope",
        "SKYNET_DATABASE_URL": "mysql://nope",
        "SKYNET_API_TOKEN": "read-token-0123456789",
    }
    proc = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "invalid configuration" in proc.stderr and "SKYNET_" in proc.stderr


def test_an_unknown_sftp_client_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYNET_WATCH_DIR", str(tmp_path))
    monkeypatch.setenv("SKYNET_TARGET", "sftp://u@h:22/x")
    monkeypatch.setenv("SKYNET_SFTP_CLIENT", "putty")
    with pytest.raises(ConfigError, match="SKYNET_SFTP_CLIENT"):
        load_settings(UploaderSettings)
    monkeypatch.setenv("SKYNET_SFTP_CLIENT", "paramiko")
    assert load_settings(UploaderSettings).backend_settings().sftp_client == "paramiko"


def test_the_event_linger_is_checked_and_zero_means_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYNET_WATCH_DIR", str(tmp_path))
    assert load_settings(WatcherSettings).event_linger_ms == 25
    monkeypatch.setenv("SKYNET_EVENT_LINGER_MS", "-5")
    with pytest.raises(ConfigError, match="SKYNET_EVENT_LINGER_MS"):
        load_settings(WatcherSettings)
    monkeypatch.setenv("SKYNET_EVENT_LINGER_MS", "0")
    assert load_settings(WatcherSettings).event_linger_ms == 0
