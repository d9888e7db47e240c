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
