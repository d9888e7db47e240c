"""emonet.fileio and emonet.images: the shared output check, stale temporaries, the one image reader."""

from __future__ import annotations

import builtins
import io
import os
import re
import stat

import numpy as np
import pytest
from PIL import Image, ImageOps

import emonet.fileio as fileio
from emonet.errors import UserError
from emonet.fileio import atomic_path, check_output, check_outputs, open_partial, remove_stale_temporaries
from emonet.images import ImageReadError, decode_image, list_images, read_image


def test_check_output_refuses_inputs_through_links(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"user data")
    (tmp_path / "link.jpg").symlink_to(photo)
    os.link(photo, tmp_path / "hard.jpg")
    for alias in (photo, tmp_path / "link.jpg", tmp_path / "hard.jpg", tmp_path / "sub" / ".." / "photo.jpg"):
        with pytest.raises(UserError, match="is also an input of this run"):
            check_output(alias, [photo])
    assert check_output(tmp_path / "out.csv", [photo]) == tmp_path / "out.csv"
    assert photo.read_bytes() == b"user data"


def test_check_output_kinds_and_places(tmp_path, monkeypatch):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is an existing directory; give a file path"):
        check_output(tmp_path / "folder")
    with pytest.raises(UserError, match="is an existing file; give a folder path"):
        check_output(tmp_path / "file.txt", kind="dir", option="--output-dir")
    with pytest.raises(UserError, match="file.txt is a file, not a folder"):
        check_output(tmp_path / "file.txt" / "out.csv")
    with pytest.raises(UserError, match="--output-dir .*is also an input"):
        check_output(tmp_path / "folder", [tmp_path / "folder"], kind="dir", option="--output-dir")
    # no permission on the nearest existing folder (root ignores modes, so ask os.access the way it answers users)
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="no permission to write in"):
        check_output(tmp_path / "new" / "deeper" / "out.csv")


def test_check_outputs_must_differ_and_link_loops_do_not_crash(tmp_path):
    with pytest.raises(UserError, match="is also the --output output"):
        check_outputs({"--output": tmp_path / "a.csv", "--plot": tmp_path / "a.csv"})
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    assert check_outputs({"--output": tmp_path / "out.csv", "--plot": None}, [tmp_path / "loop_a"]) == {
        "--output": tmp_path / "out.csv"}


def test_stale_temporaries_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "last.pth"
    stale = tmp_path / ".last.pth.k2j3_ab9.pth"  # the name atomic_path gives its temporary file
    stale.write_bytes(b"half")
    unrelated = [tmp_path / ".last.pth.backup.pth", tmp_path / "last.pth.k2j3_ab9.pth", tmp_path / ".other.pth.x1.pth"]
    for path in unrelated:
        path.write_bytes(b"keep")
    assert remove_stale_temporaries(target) == [stale]
    stale.write_bytes(b"half")
    with atomic_path(target) as tmp:  # every atomic write cleans up after a killed predecessor
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and not stale.exists() and all(p.read_bytes() == b"keep" for p in unrelated)


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_exif_orientation_as_viewers_do(tmp_path, orientation):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:10, :20] = (255, 0, 0)  # a red block in the stored top-left corner
    data = _jpeg_with_orientation(image, orientation)
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    ours = read_image(path)
    assert ours.shape == upright.shape and np.abs(ours.astype(int) - upright).max() <= 1
    assert ours.shape[:2] == ((80, 40) if orientation >= 5 else (40, 80))


def test_read_image_formats_and_damage(tmp_path):
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "deep.png"
    Image.fromarray(gray16).save(path)
    assert read_image(path).shape == (8, 8, 3) and read_image(path).dtype == np.uint8
    cmyk = io.BytesIO()
    Image.new("RGB", (6, 4), (250, 10, 10)).convert("CMYK").save(cmyk, format="JPEG")
    assert decode_image(cmyk.getvalue(), "cmyk.jpg")[0, 0, 0] > 200  # red stays red
    png_named_jpg = tmp_path / "really_png.jpg"
    Image.new("RGBA", (5, 5), (0, 200, 0, 128)).save(png_named_jpg, format="PNG")
    assert read_image(png_named_jpg)[0, 0, 1] == 200  # decoded by content, alpha dropped
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg: empty file"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.jpg: cannot decode image"):
        read_image(tmp_path / "text.jpg")


def test_list_images_keeps_broken_links_and_loops_for_error_rows(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "loop_a.jpg").symlink_to(tmp_path / "loop_b.jpg")
    (tmp_path / "loop_b.jpg").symlink_to(tmp_path / "loop_a.jpg")
    (tmp_path / "notes.txt").write_text("not an image name")
    found = list_images([tmp_path])
    assert [p.name for p in found] == ["broken.jpg", "loop_a.jpg", "loop_b.jpg", "ok.png"]
    for name in ("broken.jpg", "loop_a.jpg"):
        with pytest.raises(ImageReadError, match=f"{name}: broken symbolic link or link loop"):
            read_image(tmp_path / name)


def test_outputs_that_are_not_regular_files_are_refused_naming_the_path(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "null_link.csv").symlink_to("/dev/null")
    for path, kind in [("/dev/null", "character device"), ("/dev/full", "character device"),
                       ("/dev/stdout", ""), (tmp_path / "pipe.csv", "FIFO"), (tmp_path / "null_link.csv", "")]:
        with pytest.raises(UserError, match=rf"--output {re.escape(str(path))}: is (a|in the system folder)[^;]*{kind}"):
            check_output(path)
    with pytest.raises(UserError, match="pipe.csv: is a FIFO"):
        with atomic_path(tmp_path / "pipe.csv") as tmp:  # the writer refuses it too, not only the check
            tmp.write_text("rows")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.csv").st_mode)


def test_name_length_is_checked_before_any_work(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    fits = "a" * (limit - 10 - len(".csv") - len(".csv")) + ".csv"  # room for ".<name>.<8 chars>.csv"
    assert check_output(tmp_path / fits) == tmp_path / fits
    with atomic_path(tmp_path / fits) as tmp:
        tmp.write_text("ok")
    for length in (limit - 8, limit, limit + 45):
        with pytest.raises(UserError, match=r"the file name is \d+ bytes long; at most \d+ fit"):
            check_output(tmp_path / ("b" * length + ".csv"))
    with pytest.raises(UserError, match="folder name .* is longer than"):
        check_output(tmp_path / ("c" * (limit + 1)) / "out.csv")


def test_partial_file_never_written_through_a_leftover_link(tmp_path):
    victim = tmp_path / "victim.csv"
    victim.write_text("the user's table")
    partial = tmp_path / "out.csv.partial"
    partial.symlink_to(victim)
    with open_partial(partial, newline="") as handle:
        handle.write("frame\n")
    assert victim.read_text() == "the user's table"
    assert stat.S_ISREG(os.lstat(partial).st_mode) and partial.read_text() == "frame\n"
    with pytest.raises(KeyboardInterrupt):  # an interrupt keeps the rows written so far
        with open_partial(partial) as handle:
            handle.write("kept\n")
            raise KeyboardInterrupt
    assert partial.read_text() == "kept\n"


def test_disk_full_is_a_clear_error_that_says_what_was_kept(tmp_path, monkeypatch):
    """/dev/full fails every write with ENOSPC: the real error of a full disk, through the real writers."""
    target = tmp_path / "table.csv"
    target.write_text("previous run")
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):  # the temporary file is opened on a full disk
        return real_open("/dev/full", mode, *args, **kwargs) if str(path).startswith(str(tmp_path / ".")) else \
            real_open(path, mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", open_full)
        with pytest.raises(fileio.OutputWriteError, match=r"table.csv: cannot write \(No space left on device\); "
                                                          r"the previous table.csv is untouched"):
            fileio.write_text_atomic(target, "x" * 100_000)
    assert target.read_text() == "previous run" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    partial = tmp_path / "out.csv.partial"
    with pytest.raises(fileio.OutputWriteError, match=r"out.csv.partial: cannot write .*the partial file was removed"):
        with open_partial(partial) as handle:
            handle.write("row\n")
            handle.flush()
            os.dup2(os.open("/dev/full", os.O_WRONLY), handle.fileno())  # the disk fills up mid-run
            handle.write("y" * 100_000)
            handle.flush()
    assert not partial.exists()


def test_file_sha256_refuses_a_fifo_instead_of_waiting(tmp_path):
    os.mkfifo(tmp_path / "weights.pth")
    with pytest.raises(UserError, match="weights.pth: is a FIFO"):
        fileio.file_sha256(tmp_path / "weights.pth")


def test_list_images_follows_linked_folders_once_and_keeps_fifos(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(photos / "sub" / "a.png")
    other = tmp_path / "elsewhere"
    other.mkdir()
    Image.new("RGB", (4, 4)).save(other / "b.png")
    (photos / "linked").symlink_to(other)
    (photos / "sub" / "back").symlink_to(photos)  # a loop: listed once
    os.mkfifo(photos / "pipe.jpg")
    assert [p.relative_to(photos).as_posix() for p in list_images([photos])] == [
        "linked/b.png", "pipe.jpg", "sub/a.png"]
    with pytest.raises(ImageReadError, match="pipe.jpg: not a regular file"):
        read_image(photos / "pipe.jpg")


def test_header_caps_refuse_bombs_before_decoding(tmp_path):
    import struct
    import zlib

    def png(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")

    for width, height in [(100_000, 100_000), (30_000, 30_000), (20_000, 1), (10_001, 10_000)]:
        path = tmp_path / f"bomb_{width}x{height}.png"
        path.write_bytes(png(width, height, 1, 0))
        with pytest.raises(ImageReadError, match=rf"{path.name}: .*(megapixels|{width}x{height})"):
            read_image(path)
    wide = np.random.default_rng(1).integers(0, 255, (1, 2000, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "strip.png")
    assert np.array_equal(read_image(tmp_path / "strip.png"), wide)
