"""Property-based tests (Hypothesis) of the boundaries: the option parser, the image reader, the output files.

Arbitrary numbers, bytes and file kinds must give a value, an :class:`~emonet.errors.UserError` (exit 2 with a
message naming the flag or file), never another exception, and never touch a file not named as an output.
The parsers are used in-process (no subprocess): the whole file runs in well under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import os
import stat
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from emonet.cli import available_commands, command_parser
from emonet.cli.options import NumberType
from emonet.errors import UserError
from emonet.fileio import atomic_path, check_output, open_partial, write_text_atomic
from emonet.images import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageReadError, decode_image, read_image

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the option parser ---------------------------------------------------------------------------------------
@functools.cache
def _parser(command: str) -> argparse.ArgumentParser:
    """The command's real parser, with required options and groups (``visibility``'s ``--output`` or
    ``--in-place``) made optional: the property is about one flag."""
    parser = command_parser(command, f"emonet {command}")
    for action in parser._actions:
        action.required = False
    for group in parser._mutually_exclusive_groups:
        group.required = False
    return parser


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    return ["x" for action in parser._actions if not action.option_strings and action.nargs != 0]


@functools.cache
def _numeric_options() -> list[tuple[str, str, argparse.Action]]:
    """(command, flag, action) of every numeric option of every command."""
    found = []
    for command in available_commands():
        for action in _parser(command)._actions:
            if action.option_strings and isinstance(action.type, NumberType):
                flag = next(o for o in action.option_strings if o.startswith("--"))
                found.append((command, flag, action))
    return found


def test_every_numeric_option_is_typed_with_its_range():
    """No bare ``type=int``/``type=float`` (they take nan, inf, -5): each numeric option names its range."""
    assert len(_numeric_options()) > 40
    # a bare int/float is left only with its own choices (``--classes`` 5 or 8): argparse refuses anything else
    bare = [(command, action.option_strings) for command in available_commands()
            for action in _parser(command)._actions if action.type in (int, float) and not action.choices]
    assert not bare


def _parse(command: str, argv: list[str]) -> tuple[int, argparse.Namespace | None, str]:
    parser, err = _parser(command), io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return 0, parser.parse_args([*_positionals(parser), *argv]), ""
    except SystemExit as exc:
        return int(exc.code or 0), None, err.getvalue()


def _oracle(number_type: NumberType, text: str) -> int | float | None:
    """The value an option of this type must accept ``text`` as, or None (must be refused)."""
    try:
        value = number_type.kind(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    low_ok = number_type.low is None or value > number_type.low or (value == number_type.low and not number_type.low_open)
    high_ok = number_type.high is None or value < number_type.high or (
        value == number_type.high and not number_type.high_open)
    return value if low_ok and high_ok else None


NUMBER_TEXTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e309", "0", "1", "0.5", "65535", "65536", "-1", "1e-4",
                     " 3 ", "1_000", "0x10", "", "--", "-", "1,5", "١٢"]),
    st.text(max_size=10),
)


@FAST
@given(data=st.data(), text=NUMBER_TEXTS)
def test_numeric_options_accept_exactly_their_range(data, text):
    command, flag, action = data.draw(st.sampled_from(_numeric_options()), label="option")
    values = [text] * (action.nargs if isinstance(action.nargs, int) else 1)
    code, namespace, stderr = _parse(command, [flag, *values])
    expected = _oracle(action.type, text)
    if code == 0:
        got = getattr(namespace, action.dest)
        got = got[0] if isinstance(got, list) else got
        assert expected is not None and got == expected and math.isfinite(got), (command, flag, text, got)
    else:
        assert code == 2 and "Traceback" not in stderr
        assert flag in stderr or any(o in stderr for o in action.option_strings), stderr
        # a valid number is refused only where argparse reads it as an option (a leading '-')
        assert expected is None or text.strip().startswith("-"), (command, flag, text, stderr)


@pytest.mark.parametrize("command,argv,flag", [
    ("video", ["--fps", "nan"], "--fps"), ("video", ["--fps", "inf"], "--fps"), ("video", ["--fps", "-5"], "--fps"),
    ("video", ["--one-euro-beta", "nan"], "--one-euro-beta"), ("video", ["--max-frames", "-1"], "--max-frames"),
    ("app", ["--max-upload-mb", "nan"], "--max-upload-mb"), ("app", ["--port", "99999"], "--port"),
    ("predict", ["--min-face-score", "2"], "--min-face-score"), ("predict", ["--min-face-score", "nan"], "--min-face-score"),
])
def test_the_numbers_of_the_issue_are_refused_naming_the_flag(command, argv, flag):
    code, _, stderr = _parse(command, argv)
    assert code == 2 and f"argument {flag}" in stderr, stderr


def test_no_prefix_abbreviations():
    """``predict --weight W`` (a prefix of --weights) is an unknown option, not silently --weights."""
    for command in available_commands():
        parser = _parser(command)
        assert parser.allow_abbrev is False, command
    code, _, stderr = _parse("predict", ["--weight", "w.pth"])
    assert code == 2 and "unrecognized arguments: --weight" in stderr


# -- the image reader ----------------------------------------------------------------------------------------
def _png(width: int, height: int, bit_depth: int, color_type: int, payload: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real baseline JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(_small_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# Sides: mostly small (a decode is cheap), sometimes beyond every cap (must be refused before decoding).
SIDES = st.one_of(st.integers(0, 64), st.integers(MAX_IMAGE_SIDE - 2, MAX_IMAGE_SIDE + 2), st.integers(0, 2**31 - 1))
PNG_FORMATS = st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 4), (8, 6), (16, 6), (4, 3)])


def _assert_image_or_error(data: bytes, claimed: tuple[int, int] | None) -> None:
    started = time.perf_counter()
    try:
        image = decode_image(data, "claimed.img")
    except ImageReadError as exc:
        assert "claimed.img" in str(exc)
        return
    finally:
        assert time.perf_counter() - started < 10, "decoding took too long: a bomb was decoded?"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.flags.c_contiguous
    height, width = image.shape[:2]
    assert width <= MAX_IMAGE_SIDE and height <= MAX_IMAGE_SIDE and width * height <= MAX_IMAGE_PIXELS
    if claimed is not None:
        assert (width, height) == claimed


@FAST
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_are_an_image_or_an_image_read_error(data):
    _assert_image_or_error(data, None)


@FAST
@given(width=SIDES, height=SIDES, fmt=PNG_FORMATS, payload=st.binary(max_size=256))
def test_png_headers_claiming_any_size(width, height, fmt, payload):
    claimed = _png(width, height, *fmt, payload)
    _assert_image_or_error(claimed, (width, height))
    if min(width, height) >= 1 and (max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS):
        with pytest.raises(ImageReadError, match="megapixels"):  # refused from the header, never decoded
            decode_image(claimed, "bomb.png")


@FAST
@given(width=st.one_of(st.integers(0, 64), st.integers(1, 65535)), height=st.one_of(st.integers(0, 64), st.integers(1, 65535)))
def test_jpeg_headers_claiming_any_size(width, height):
    assume(width * height <= 4096 * 4096 or width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE)
    _assert_image_or_error(_jpeg_claiming(width, height), (width, height))


@FAST
@given(width=st.integers(1, 40), height=st.integers(1, 40), deep=st.booleans(), seed=st.integers(0, 2**16))
def test_real_images_of_any_aspect_and_depth_read_exactly(width, height, deep, seed):
    """1xN, Nx1 and 16-bit grey images decode to their pixels (16-bit scaled by 1/257)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 65535 if deep else 255, (height, width), dtype=np.uint16 if deep else np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), "grey.png")
    expected = np.round(pixels / 257.0).astype(np.uint8) if deep else pixels
    assert image.shape == (height, width, 3)
    assert np.abs(image[..., 0].astype(int) - expected).max() <= 1 and (image[..., 0] == image[..., 2]).all()


# -- the file boundary ---------------------------------------------------------------------------------------
KINDS = ["missing", "regular", "link-to-victim", "broken-link", "fifo", "directory", "link-to-device", "link-loop"]


def _make(path: Path, kind: str, victim: Path) -> None:
    if kind == "regular":
        path.write_text("old output")
    elif kind == "link-to-victim":
        path.symlink_to(victim)
    elif kind == "broken-link":
        path.symlink_to(path.parent / "nowhere" / "at-all")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
        (path / "inside.txt").write_text("user data")
    elif kind == "link-to-device":
        path.symlink_to("/dev/null")
    elif kind == "link-loop":
        path.symlink_to(path)


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its kind, and the content of regular files (links are not followed)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            content = path.read_bytes() if stat.S_ISREG(mode) else (os.readlink(path) if stat.S_ISLNK(mode) else None)
            found[str(path.relative_to(root))] = (stat.S_IFMT(mode), content)
    return found


def _assert_only_touched(before: dict, after: dict, named: set[str]) -> None:
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= named, f"touched files not named as outputs: {sorted(changed - named)}"


@FAST
@given(kind=st.sampled_from(KINDS), name_length=st.one_of(st.integers(1, 40), st.integers(230, 300)),
       suffix=st.sampled_from([".csv", ".json", "", ".partial"]))
def test_check_output_then_atomic_write_never_touches_another_file(kind, name_length, suffix):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        victim = root / "victim.jpg"
        victim.write_bytes(b"the user's photo")
        output = root / ("o" * name_length + suffix)
        try:
            _make(output, kind, victim)
        except OSError:
            assume(False)  # a name too long to create at all: nothing to test for this kind
        before = _snapshot(root)
        try:
            checked = check_output(output, [victim] if kind != "link-to-victim" else [])
        except UserError as exc:
            assert str(output.name)[:20] in str(exc) or "--output" in str(exc)
            assert kind in ("fifo", "directory", "link-to-device") or name_length > 200, (kind, str(exc))
            _assert_only_touched(before, _snapshot(root), set())
            return
        assert kind not in ("fifo", "directory", "link-to-device")
        write_text_atomic(checked, "new rows")  # an accepted output must be writable (no ENAMETOOLONG later)
        assert stat.S_ISREG(os.lstat(output).st_mode) and output.read_text() == "new rows"
        assert victim.read_bytes() == b"the user's photo"  # a link is replaced, never written through
        _assert_only_touched(before, _snapshot(root), {output.name})


@FAST
@given(kind=st.sampled_from(KINDS), fail=st.booleans())
def test_partial_files_are_created_exclusively_never_through_links(kind, fail):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        victim = root / "victim.csv"
        victim.write_text("the user's table")
        partial = root / "out.csv.partial"
        _make(partial, kind, victim)
        before = _snapshot(root)
        try:
            with open_partial(partial, newline="") as handle:
                handle.write("frame,valence\n")
                if fail:
                    raise OSError(28, os.strerror(28))  # as a full disk reports itself
        except UserError as exc:
            assert "out.csv.partial" in str(exc)
            if fail and kind not in ("fifo", "directory"):
                assert "removed" in str(exc) and not os.path.lexists(partial)
            else:
                assert kind in ("fifo", "directory"), (kind, str(exc))
                _assert_only_touched(before, _snapshot(root), set())
        else:
            assert not fail and stat.S_ISREG(os.lstat(partial).st_mode)
            assert partial.read_text() == "frame,valence\n"
        assert victim.read_text() == "the user's table"
        _assert_only_touched(before, _snapshot(root), {partial.name})


@FAST
@given(kind=st.sampled_from(KINDS + ["device"]))
def test_read_image_refuses_what_is_not_a_regular_file_without_waiting(kind):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        victim = root / "victim.png"
        Image.new("RGB", (3, 2), (10, 20, 30)).save(victim)
        path = Path("/dev/null") if kind == "device" else root / "input.png"
        if kind != "device":
            _make(path, kind, victim)
        started = time.perf_counter()
        try:
            image = read_image(path)
        except ImageReadError as exc:
            assert str(path) in str(exc) and kind != "link-to-victim"
        else:
            assert kind == "link-to-victim" and image.shape == (2, 3, 3)
        assert time.perf_counter() - started < 5  # a FIFO is refused, never read (no hang)


def test_failed_atomic_write_keeps_the_previous_file_and_says_so(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("previous")
    with pytest.raises(UserError, match=r"table.csv: cannot write \(No space left on device\); the previous "
                                        r"table.csv is untouched; the temporary file was removed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, os.strerror(28))
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    with pytest.raises(OSError):  # also an OSError: callers that fall back on an unwritable cache still do
        with atomic_path(tmp_path / "new.json"):
            raise OSError(122, os.strerror(122))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
