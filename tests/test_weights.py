"""emonet.hub and the download command: weights by name (checkout, cache, download on first use through a
file:// mirror), verification by git blob SHA-1, clear failures, nothing half-saved."""

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest
from conftest import REPO_ROOT

from emonet import hub
from emonet.checkpoint import load_model
from emonet.classes import EMONET_8_CLASSES
from emonet.cli import main as cli_main
from emonet.cli.options import resolve_weight_names
from emonet.errors import UserError


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    source = tmp_path / "remote" / "emonet_8.pth"
    source.parent.mkdir()
    source.write_bytes(b"pretend checkpoint bytes")
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], url=source.as_uri(),
                               git_blob_sha1=hub.git_blob_sha1(source))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    return source


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A checkout weights/ folder and an EMONET_HOME of this test's own; downloads allowed, no mirror."""
    checkout = tmp_path / "checkout_weights"
    checkout.mkdir()
    (checkout / "README.md").write_text("# weights/\n")
    monkeypatch.setattr(hub, "CHECKOUT_WEIGHTS_DIR", checkout)
    monkeypatch.setenv(hub.HOME_ENV, str(tmp_path / "home"))
    for name in (hub.NO_DOWNLOAD_ENV, hub.MIRROR_ENV):
        monkeypatch.delenv(name, raising=False)
    return {"checkout": checkout, "cache": tmp_path / "home" / "weights"}


@pytest.fixture
def mirror(isolated, official_checkpoint_8, tmp_path, monkeypatch):
    """A file:// mirror holding a generated official-format emonet_8.pth; its SHA-1 is made the expected one
    through the documented hook (replacing the record), never by skipping the check."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    shutil.copy(official_checkpoint_8, folder / "emonet_8.pth")
    monkeypatch.setenv(hub.MIRROR_ENV, folder.as_uri() + "/")
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], git_blob_sha1=hub.git_blob_sha1(folder / "emonet_8.pth"))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    return folder / "emonet_8.pth"


def test_download_verifies_and_saves(fake_official, tmp_path, capsys):
    dest = hub.download_weights("emonet_8", tmp_path / "weights", progress=False)
    assert dest.read_bytes() == fake_official.read_bytes() and hub.verify_weights(dest, "emonet_8")
    assert [p.name for p in dest.parent.iterdir()] == ["emonet_8.pth"]  # no temporary left behind
    err = capsys.readouterr().err
    assert "licence CC BY-NC-ND 4.0" in err and fake_official.as_uri() in err  # said before downloading


def test_checksum_mismatch_saves_nothing(fake_official, tmp_path, monkeypatch):
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], git_blob_sha1="0" * 40)
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    with pytest.raises(hub.DownloadError, match="checksum mismatch"):
        hub.download_weights("emonet_8", tmp_path / "weights", progress=False)
    assert list((tmp_path / "weights").iterdir()) == []


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_5"], url="http://127.0.0.1:9/emonet_5.pth")
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_5", info)
    with pytest.raises(RuntimeError, match="offline") as error:
        hub.download_weights("emonet_5", tmp_path, timeout=5, progress=False)
    assert isinstance(error.value, UserError) and "emonet_5.pth" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_from_emonet_home(isolated, tmp_path, monkeypatch):
    assert hub.cache_dir() == tmp_path / "home" / "weights"
    assert hub.search_dirs() == [isolated["checkout"], tmp_path / "home" / "weights"]
    assert hub.download_dir() == hub.cache_dir()  # EMONET_HOME set: an explicit choice, even in a checkout
    monkeypatch.delenv(hub.HOME_ENV)
    assert hub.cache_dir() == Path(platformdirs.user_cache_dir("emonet")) / "weights"
    assert hub.download_dir() == isolated["checkout"]  # a checkout, no EMONET_HOME: weights/ as the README says
    monkeypatch.setattr(hub, "CHECKOUT_WEIGHTS_DIR", None)  # an installed package
    assert hub.download_dir() == hub.cache_dir() and hub.search_dirs() == [hub.cache_dir()]


def test_checkout_weights_dir_only_in_a_source_checkout():
    # this test runs from the checkout: weights/ with its README is next to the package
    assert hub.CHECKOUT_WEIGHTS_DIR == REPO_ROOT / "weights" == hub._checkout_weights_dir()


def test_name_downloads_through_the_mirror_on_first_use_then_comes_from_the_cache(mirror, isolated, capsys):
    path = hub.resolve_weights("emonet_8")
    assert path == isolated["cache"] / "emonet_8.pth" and path.read_bytes() == mirror.read_bytes()
    err = capsys.readouterr().err
    assert "licence CC BY-NC-ND 4.0" in err and (mirror.parent.as_uri() + "/emonet_8.pth") in err
    assert sorted(p.name for p in path.parent.iterdir()) == ["emonet_8.pth"]
    mirror.unlink()  # from now on the cache serves it: no second download
    model = load_model("emonet_8")
    assert model.class_names == EMONET_8_CLASSES and model.checkpoint_path == str(path)
    assert capsys.readouterr().err == ""


def test_checkout_folder_is_looked_in_first(isolated, official_checkpoint_8, monkeypatch, capsys):
    monkeypatch.setenv(hub.NO_DOWNLOAD_ENV, "1")
    local = isolated["checkout"] / "emonet_8.pth"
    shutil.copy(official_checkpoint_8, local)
    info = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], git_blob_sha1=hub.git_blob_sha1(local))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", info)
    isolated["cache"].mkdir(parents=True)
    shutil.copy(official_checkpoint_8, isolated["cache"] / "emonet_8.pth")
    assert hub.resolve_weights("emonet_8") == local
    assert capsys.readouterr().err == ""  # verified: no warning


def test_offline_error_names_the_full_expected_path(isolated, monkeypatch):
    monkeypatch.setenv(hub.NO_DOWNLOAD_ENV, "1")
    expected = isolated["cache"] / "emonet_5.pth"
    for load in (hub.resolve_weights, load_model):
        with pytest.raises(hub.WeightsNotFound) as error:
            load("emonet_5")
        assert isinstance(error.value, UserError) and isinstance(error.value, FileNotFoundError)
        assert str(expected) in str(error.value) and hub.NO_DOWNLOAD_ENV in str(error.value)
    assert not isolated["cache"].exists()


def test_failed_or_corrupt_download_leaves_no_file(mirror, isolated, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.MIRROR_ENV, (tmp_path / "empty_mirror").as_uri())  # the file is not there
    with pytest.raises(hub.WeightsNotFound) as error:
        hub.resolve_weights("emonet_8")
    assert str(isolated["cache"] / "emonet_8.pth") in str(error.value) and "cannot download" in str(error.value)
    corrupt = tmp_path / "corrupt_mirror"
    corrupt.mkdir()
    (corrupt / "emonet_8.pth").write_bytes(mirror.read_bytes()[: mirror.stat().st_size // 2])  # truncated
    monkeypatch.setenv(hub.MIRROR_ENV, corrupt.as_uri())
    with pytest.raises(hub.WeightsNotFound, match="checksum mismatch"):
        hub.resolve_weights("emonet_8")
    assert list(isolated["cache"].iterdir()) == []  # neither a half file nor a temporary


def test_a_path_works_and_a_renamed_file_warns_once_but_loads(isolated, official_checkpoint_8, tmp_path, capsys):
    assert hub.resolve_weights(official_checkpoint_8) == official_checkpoint_8
    renamed = tmp_path / "emonet_8.pth"  # a file of one's own under an official name
    shutil.copy(official_checkpoint_8, renamed)
    assert load_model(renamed).n_expression == 8
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "not the official emonet_8" in warning[0] and str(renamed) in warning[0]
    load_model(renamed)
    assert capsys.readouterr().err == ""  # hashed once per process


def test_missing_file_hints(isolated):
    own = hub.missing_weights_hint("runs/x/best.pth")
    assert "download" not in own and "--output-dir" in own
    official = hub.missing_weights_hint("weights/emonet_8.pth")
    assert "python -m emonet download emonet_8" in official and str(isolated["cache"] / "emonet_8.pth") in official
    with pytest.raises(FileNotFoundError) as error:
        load_model("runs/x/best.pth")
    assert "runs/x/best.pth" in str(error.value) and "download" not in str(error.value)


def test_cli_weights_name_offline_names_the_path(isolated, sample_images_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hub.NO_DOWNLOAD_ENV, "1")
    code = cli_main(["predict", "--weights", "emonet_8", str(sample_images_dir), "--output", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and str(isolated["cache"] / "emonet_8.pth") in err and "python -m emonet download" in err
    assert not (tmp_path / "o.csv").exists()


def test_cli_resolves_weight_names_of_every_command(mirror, isolated, official_checkpoint_8):
    # emonet.cli.run_command calls this before any command: one --weights (predict, video, batch, evaluate,
    # export, review, finetune) or several (app, demo); paths pass through untouched
    one = argparse.Namespace(weights="emonet_8")
    resolve_weight_names(one)
    assert one.weights == str(isolated["cache"] / "emonet_8.pth")
    several = argparse.Namespace(weights=["emonet_8", str(official_checkpoint_8), "runs/x/best.pth"])
    resolve_weight_names(several)
    assert several.weights == [one.weights, str(official_checkpoint_8), "runs/x/best.pth"]
    untouched = argparse.Namespace(weights="weights/emonet_8.pth")
    resolve_weight_names(untouched)
    assert untouched.weights == "weights/emonet_8.pth"


def test_verify_cli(tmp_path):
    (tmp_path / "emonet_8.pth").write_bytes(b"not the official file")
    result = subprocess.run([sys.executable, "weights/download.py", "--verify", "--dir", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "emonet_8.pth: checksum does NOT match" in result.stdout and "emonet_5.pth: missing" in result.stdout


def test_download_command_writes_the_checkout_folder_or_the_given_one(mirror, isolated, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(hub.HOME_ENV)  # a checkout without EMONET_HOME: weights/ of the checkout
    assert cli_main(["download", "emonet_8", "--no-progress"]) == 0
    assert (isolated["checkout"] / "emonet_8.pth").read_bytes() == mirror.read_bytes()
    assert cli_main(["download", "emonet_8", "--output-dir", str(tmp_path / "elsewhere"), "--no-progress"]) == 0
    assert (tmp_path / "elsewhere" / "emonet_8.pth").is_file()
    assert cli_main(["download", "emonet_8", "--verify", "--output-dir", str(tmp_path / "elsewhere")]) == 0
    assert "OK (official emonet_8)" in capsys.readouterr().out


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
