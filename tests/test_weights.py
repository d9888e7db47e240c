"""weights/download.py and emonet.hub: verification by git blob SHA-1, clear failures, nothing half-saved."""

import dataclasses
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from emonet import hub


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    source = tmp_path / "remote" / "emonet_8.pth"
    source.parent.mkdir()
    source.write_bytes(b"pretend checkpoint bytes")
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], url=source.as_uri(),
                               git_blob_sha1=hub.git_blob_sha1(source))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    return source


def test_download_verifies_and_saves(fake_official, tmp_path):
    dest = hub.download_weights("emonet_8", tmp_path / "weights")
    assert dest.read_bytes() == fake_official.read_bytes() and hub.verify_weights(dest, "emonet_8")
    assert [p.name for p in dest.parent.iterdir()] == ["emonet_8.pth"]  # no temporary left behind


def test_checksum_mismatch_saves_nothing(fake_official, tmp_path, monkeypatch):
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], git_blob_sha1="0" * 40)
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        hub.download_weights("emonet_8", tmp_path / "weights")
    assert list((tmp_path / "weights").iterdir()) == []


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_5"], url="http://127.0.0.1:9/emonet_5.pth")
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_5", info)
    with pytest.raises(RuntimeError, match="offline") as error:
        hub.download_weights("emonet_5", tmp_path, timeout=5)
    assert "emonet_5.pth" in str(error.value)
    assert not (tmp_path / "emonet_5.pth").exists()


def test_verify_cli(tmp_path):
    (tmp_path / "emonet_8.pth").write_bytes(b"not the official file")
    result = subprocess.run([sys.executable, "weights/download.py", "--verify", "--dir", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "emonet_8.pth: checksum does NOT match" in result.stdout and "emonet_5.pth: missing" in result.stdout


def test_first_run_fetches_the_official_weights_unless_offline(fake_official, tmp_path, monkeypatch, capsys):
    from emonet import quickstart

    monkeypatch.setattr(quickstart, "WEIGHTS_DIR", tmp_path / "weights")
    default = tmp_path / "weights" / "emonet_8.pth"
    monkeypatch.setenv(quickstart.NO_DOWNLOAD_ENV, "1")
    assert not quickstart.fetch_official_weights(default) and not default.exists()
    assert "offline run (EMONET_NO_DOWNLOAD)" in capsys.readouterr().out
    assert not quickstart.fetch_official_weights(default, offline=True)
    monkeypatch.delenv(quickstart.NO_DOWNLOAD_ENV)
    # a path of the user's own is never downloaded to
    assert not quickstart.fetch_official_weights(tmp_path / "mine.pth") and not (tmp_path / "mine.pth").exists()
    assert quickstart.fetch_official_weights(default)  # first run: downloaded, verified, licence said
    out = capsys.readouterr().out
    assert "CC BY-NC-ND 4.0" in out and "SHA-1 verified" in out
    assert default.read_bytes() == fake_official.read_bytes()
    fake_official.unlink()  # offline from now on: the verified file is used as it is
    assert quickstart.fetch_official_weights(default)
    default.unlink()
    assert not quickstart.fetch_official_weights(default)
    assert "could not download" in capsys.readouterr().out and not default.exists()
