"""emonet.fileio and emonet.images: the shared output check, stale temporaries, the one image reader."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

import emonet.fileio as fileio
from emonet.errors import UserError
from emonet.fileio import atomic_path, check_output, check_outputs, remove_stale_temporaries
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
