"""Option definitions shared by every command: the same flag name means the same thing everywhere.

* ``--output`` is a file, ``--output-dir`` a folder, ``--data-root`` a dataset folder;
* ``--num-workers`` parallel workers (threads or processes, said in each help text);
* ``--device``/``--backend``/``--precision``/``--smoothing`` take the same choices everywhere;
* ``--no-progress`` hides progress bars;
* ``--verbose`` (every command, added by :mod:`emonet.cli`) shows the native libraries' log lines.

Renamed flags keep their old spelling for one release: it still works and prints a deprecation warning.
No heavy import here: ``python -m emonet --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from emonet.inference.backends import PRECISIONS, backend_names  # the library's one registry (no PyTorch import)

# The names accepted on the command line.
DEVICES_HELP = "auto | cpu | cuda | cuda:N | mps (default auto)"
PRECISION_CHOICES = list(PRECISIONS)
DETECTOR_CHOICES = ["auto", "short", "full"]
SMOOTHING_CHOICES = ["none", "ema", "one-euro", "emonet"]
DEFAULT_SMOOTHING = "one-euro"  # video and demo alike; the raw values stay in valence_raw/arousal_raw


# Typed values: every numeric option is checked once, here, where it is defined. A value that is not a number,
# not finite (nan, inf) or out of range is an argparse error naming the flag (exit 2), never a traceback later.
class NumberType:
    """An argparse ``type=``: parses ``kind`` (int or float) and checks that it is finite and within range."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = self.describe()  # argparse names the type by it in its own messages

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            brackets = ("(" if self.low_open else "[", ")" if self.high_open else "]")
            return f"{noun} in {brackets[0]}{self.low:g}, {self.high:g}{brackets[1]}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {self.high:g}"
        return noun

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text.strip())
        except (ValueError, TypeError, AttributeError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        if not math.isfinite(value) or not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __repr__(self) -> str:
        return f"NumberType({self.describe()})"


def finite_float(min: float | None = None, max: float | None = None, *,  # noqa: A002 - named as in the issue
                 min_open: bool = False, max_open: bool = False) -> NumberType:
    """``type=`` for a finite float in [min, max] (``min_open``/``max_open`` exclude the bound)."""
    return NumberType(float, min, max, min_open, max_open)


def int_range(min: int | None = None, max: int | None = None) -> NumberType:  # noqa: A002
    """``type=`` for an integer in [min, max]."""
    return NumberType(int, min, max)


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = finite_float(0, min_open=True)
non_negative_float = finite_float(0)
probability = finite_float(0, 1)
percentage = finite_float(0, 100)
port = int_range(0, 65535)  # 0 lets the system pick a free one
seed = int_range(0, 2**32 - 1)  # NumPy's range


class _DeprecatedAlias(argparse.Action):
    """Stores like ``store`` (or ``store_true`` with ``nargs=0``); warns when an old spelling is used."""

    def __init__(self, option_strings, dest, deprecated: tuple[str, ...] = (), const: Any = None, nargs=None, **kwargs):
        self.deprecated = tuple(deprecated)
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated:
            current = next(o for o in self.option_strings if o not in self.deprecated and o.startswith("--"))
            print(f"warning: {option_string} is deprecated and will be removed in the next release; "
                  f"use {current}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_option(p: argparse.ArgumentParser, *names: str, deprecated: tuple[str, ...] = (), **kwargs: Any) -> None:
    """``p.add_argument(*names, *deprecated, ...)`` where the ``deprecated`` spellings warn when used."""
    if not deprecated:
        p.add_argument(*names, **kwargs)
        return
    if kwargs.pop("action", None) == "store_true":
        kwargs.update(nargs=0, const=True, default=kwargs.get("default", False))
    p.add_argument(*names, *deprecated, action=_DeprecatedAlias, deprecated=deprecated, **kwargs)


def add_weights(p: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--weights", required=required, default=default,
                   help="checkpoint: an official name (emonet_8, emonet_5: downloaded on first use, see "
                   "weights/README.md), the path of an official file or of a checkpoint trained with this project")


def resolve_weight_names(args: argparse.Namespace) -> None:
    """Replace an official checkpoint's name in ``args.weights`` (one value or a list) by its file, found or
    downloaded (:func:`emonet.hub.resolve_weights`): so every command takes ``--weights emonet_8``."""
    value = getattr(args, "weights", None)
    values = value if isinstance(value, list) else [value]
    # a name has no suffix and no folder: only then import the hub (PyTorch), so other commands start fast
    if not any(isinstance(v, str) and "." not in v and "/" not in v and "\\" not in v for v in values):
        return
    from emonet.hub import is_official_name, resolve_weights

    resolved = [str(resolve_weights(v)) if is_official_name(v) else v for v in values]
    args.weights = resolved if isinstance(value, list) else resolved[0]


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICES_HELP)


def add_inference(p: argparse.ArgumentParser, batch_default_help: str | None = None) -> None:
    """Device, backend, precision and batch size: how a model runs (see docs/performance.md)."""
    add_device(p)
    p.add_argument("--backend", default="auto", choices=list(backend_names()), type=str.lower,
                   help="inference backend (default auto: at fp32 the fastest path exact within 1e-4 on this machine, "
                   "probed once per checkpoint and cached; torch = eager PyTorch, the reference; see docs/performance.md)")
    p.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES, type=str.lower,
                   help="fp32 (default) | bf16 | fp16 | int8, as the backend supports; bf16/fp16/int8 are used only "
                   "when they pass the verification rule for this checkpoint (mean |dV/A| <= 0.02, expression "
                   "agreement >= 97%%), else refused with the figures")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=batch_default_help or "faces per forward pass (default: 4 on a CPU, where larger batches are "
                   "slower per face; 32 on a GPU)")


def add_detection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto",
                   help="MediaPipe model: short-range, full-range, or both merged (default)")
    p.add_argument("--min-face-score", type=probability, default=0.5, help="minimum detection confidence (default 0.5)")


# emonet.crops.CROP_METHODS, spelled here so that building a parser imports no OpenCV (a test keeps them equal)
CROP_CHOICES = ["detector", "mesh", "refine"]
DEFAULT_CROP = "mesh"
CROP_HELP = (
    "where each face's crop comes from (EmoNet was trained on crops of the 68-landmark box): mesh (default: "
    "the box of MediaPipe FaceMesh's 68 iBUG-layout points, a few ms per face; the detector box where "
    "FaceMesh finds no face, counted in the summary), detector (the detector box, the behaviour before "
    "--crop), refine (the mesh crop, then a second crop from EmoNet's own 68 landmarks: TWO forwards per face, "
    "twice the model time; EmoNet checkpoints only). See docs/crops.md"
)


def add_crop(p: argparse.ArgumentParser, help_suffix: str = "") -> None:
    """``--crop detector|mesh|refine``: the crop method of detected faces (see :mod:`emonet.crops`)."""
    p.add_argument("--crop", choices=CROP_CHOICES, default=DEFAULT_CROP, type=str.lower,
                   help=CROP_HELP + help_suffix)


def add_output(p: argparse.ArgumentParser, what: str, required: bool = True, deprecated: tuple[str, ...] = (),
               default: str | None = None) -> None:
    """``--output`` (``-o``): a file."""
    add_option(p, "--output", "-o", deprecated=deprecated, dest="output", required=required, default=default,
               metavar="FILE", help=what)


def add_output_dir(p: argparse.ArgumentParser, what: str, required: bool = True, deprecated: tuple[str, ...] = (),
                   default: str | None = None) -> None:
    """``--output-dir``: a folder (created if needed)."""
    add_option(p, "--output-dir", deprecated=deprecated, dest="output_dir", required=required, default=default,
               metavar="DIR", help=what)


def add_data_root(p: argparse.ArgumentParser, what: str, required: bool = True, deprecated: tuple[str, ...] = (),
                  default: str | None = None) -> None:
    """``--data-root``: the dataset folder."""
    add_option(p, "--data-root", deprecated=deprecated, dest="data_root", required=required, default=default,
               metavar="DIR", help=what)


def add_num_workers(p: argparse.ArgumentParser, what: str, default: int, deprecated: tuple[str, ...] = ()) -> None:
    add_option(p, "--num-workers", deprecated=deprecated, dest="num_workers", type=non_negative_int, default=default,
               metavar="N", help=f"{what} (default {default})")


def add_progress(p: argparse.ArgumentParser, has_bar: bool = True) -> None:
    """``--no-progress`` on every command, so that scripts can pass it everywhere."""
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar" if has_bar else "accepted for uniformity (this command shows no progress bar)")


def add_verbose(p: argparse.ArgumentParser) -> None:
    """``--verbose``: keep MediaPipe/TensorFlow Lite/absl/glog/OpenCV log lines (quiet by default)."""
    p.add_argument("--verbose", action="store_true",
                   help="show the log lines of MediaPipe, TensorFlow Lite and OpenCV (hidden by default)")


def add_smoothing(p: argparse.ArgumentParser) -> None:
    """Temporal smoothing of each face track (video and demo share these)."""
    p.add_argument("--smoothing", choices=SMOOTHING_CHOICES, default=DEFAULT_SMOOTHING,
                   help="per-face temporal smoothing: one-euro (default; raw values are kept in valence_raw/arousal_raw), none, ema (exponential), emonet (5-frame weights)")
    p.add_argument("--ema-alpha", type=finite_float(0, 1, min_open=True), default=0.4, help="weight of the newest frame for --smoothing ema (default 0.4)")
    p.add_argument("--one-euro-min-cutoff", type=positive_float, default=1.0, help="One-Euro cutoff at rest, Hz (default 1.0)")
    p.add_argument("--one-euro-beta", type=non_negative_float, default=0.5, help="One-Euro speed coefficient (default 0.5)")
