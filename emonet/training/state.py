"""The resumable training state: what ``training_state.pt`` holds, how it is checked on read, and the run
folder's rules (refuse to clobber another run; resume it; clear a killed run's temporaries).

:class:`ResumableState` is the :class:`~emonet.training.Trainer`'s part that saves and restores it. The file
is written atomically after every epoch and read back with ``torch.load(weights_only=True)``; anything that is
not a state this trainer can continue (torn file, other format, other model, task or parameter groups) is a
:class:`~emonet.checkpoint.CheckpointError` naming the file, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emonet.checkpoint import CheckpointError, atomic_torch_save, read_checkpoint
from emonet.fileio import remove_stale_temporaries
from emonet.training import distributed as du
from emonet.training.history import CURVES_ALL_FILE, CURVES_FILE, LOG_FILE
from emonet.training.utils import get_rng_state, set_rng_state

logger = logging.getLogger("emonet.training")

STATE_FILE = "training_state.pt"
BEST_FILE = "best.pth"
LAST_FILE = "last.pth"
CONFIG_FILE = "config.yaml"
STATE_VERSION = 1
# Every file a run writes into its folder (all through emonet.fileio.atomic_path).
RUN_FILES = (STATE_FILE, BEST_FILE, LAST_FILE, LOG_FILE, CURVES_FILE, CURVES_ALL_FILE, CONFIG_FILE)
# Key -> type of every entry a state must hold to be resumed.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "version": int, "epoch": int, "arch": str, "model": Mapping, "optimizer": Mapping, "scheduler": Mapping,
}


def read_training_state(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path``, checked: a readable ``weights_only`` file of this format and version with
    every required entry; :class:`~emonet.checkpoint.CheckpointError` naming the file otherwise."""
    state = read_checkpoint(path, what="training state")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a training state (a {type(state).__name__}, not a dict)")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training state (no {', '.join(missing)}); start again with "
                              "--overwrite or use another --output-dir")
    wrong = [f"{key} is a {type(state[key]).__name__}" for key, kind in _REQUIRED.items()
             if not isinstance(state[key], kind) or isinstance(state[key], bool)]
    if wrong:
        raise CheckpointError(f"{path}: damaged training state ({'; '.join(wrong)})")
    if state["version"] != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state['version']}, this version reads "
                              f"{STATE_VERSION}")
    if state["epoch"] < 0:
        raise CheckpointError(f"{path}: damaged training state (epoch {state['epoch']})")
    return dict(state)


class ResumableState:
    """Save and restore the :class:`~emonet.training.Trainer`'s state (model, optimizer, scheduler, scaler,
    RNG of every process, epoch, best metric). Relies on the trainer's attributes of the same names."""

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def state_dict(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain containers (``weights_only=True``-loadable).

        ``rng``: the RNG states of all processes (default: this process's only).
        """
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "arch": getattr(self.model, "arch", type(self.model).__name__),
            "model_config": dict(getattr(self.model, "config", {})),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "unfrozen": self.unfrozen,
            "world_size": self.context.world_size,
            "rng": rng if rng is not None else [get_rng_state()],
            "config": self.config.to_dict(),
            "task": self.task,
        }

    def _check_fits(self, state: Mapping[str, Any], source: str) -> None:
        """A state saved for another architecture, model config or task cannot be continued."""
        arch = getattr(self.model, "arch", type(self.model).__name__)
        model_config = dict(getattr(self.model, "config", {}))
        if state.get("arch") != arch:
            raise CheckpointError(f"{source}: saved for architecture {state.get('arch')!r}, but the model is {arch!r}")
        if state.get("model_config") != model_config:
            raise CheckpointError(f"{source}: saved for model config {state.get('model_config')}, but the model was "
                                  f"built with {model_config}")
        if state.get("task", self.task) != self.task:
            raise CheckpointError(f"{source}: saved for task {state.get('task')!r}, not {self.task!r}")

    def load_state_dict(self, state: Mapping[str, Any], source: str = "training state") -> None:
        """Restore what :meth:`state_dict` saved (model, optimizer, scheduler, scaler, RNG, epoch, best)."""
        self._check_fits(state, source)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError) as exc:  # missing/unexpected keys, other shapes
            raise CheckpointError(f"{source}: the saved weights do not fit the model ({exc})") from exc
        if state.get("unfrozen") and not self.unfrozen:
            self.unfreeze()
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{source}: optimizer state does not fit the parameter groups ({exc})") from exc
        # load_state_dict copied the saved schedule's numbers into it: rebuild it from the current config so
        # that a resumed run may extend --epochs (the step counter itself is kept).
        self.schedule = self._make_schedule()
        self.scheduler.lr_lambdas = [self.schedule] * len(self.optimizer.param_groups)
        self.epoch = int(state["epoch"])
        self.best_metric = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        self._restore_rng(state.get("rng") or [], source)

    def _restore_rng(self, rng: list[dict[str, Any]], source: str) -> None:
        if len(rng) == self.context.world_size:
            try:
                set_rng_state(rng[self.context.rank])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{source}: damaged random-number state ({exc})") from exc
        elif rng:
            logger.warning("%s: saved with %d process(es), resuming with %d: RNG streams restart from the seed",
                           source, len(rng), self.context.world_size)

    def save_state(self) -> None:
        """Write ``training_state.pt`` (rank 0, atomically); every process must call it (RNG gather)."""
        rng = du.all_gather_objects(get_rng_state(), self.context)
        if self.is_main:
            atomic_torch_save(self.state_dict(rng), self.state_path)

    def _resume(self) -> None:
        if not self.state_path.is_file():
            logger.warning("--resume: no %s in %s; starting from epoch 1", STATE_FILE, self.output_dir)
            return
        self.load_state_dict(read_training_state(self.state_path), str(self.state_path))
        if self.is_main:
            logger.info("resumed from %s after epoch %d (best %s=%s at epoch %s)", self.state_path, self.epoch,
                        self.monitor, self.best_metric, self.best_epoch)

    def _output_problem(self) -> str | None:
        """Why this run may not write into ``output_dir`` (None: it may; the folder is then ready)."""
        existing = [p for p in (self.state_path, self.output_dir / LOG_FILE) if p.exists()]
        if existing and not self.config.resume and not self.config.overwrite:
            return (f"{self.output_dir}: already holds a training run ({', '.join(p.name for p in existing)}); "
                    "pass --resume to continue it, --overwrite to start again, or another --output-dir")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # A run killed while writing left .<name>.<random><suffix> files: cleared before this run writes.
        stale = [p for name in RUN_FILES for p in remove_stale_temporaries(self.output_dir / name)]
        if stale:
            logger.info("removed %d temporary file(s) left by an interrupted run in %s: %s", len(stale),
                        self.output_dir, ", ".join(p.name for p in stale))
        if self.config.overwrite and not self.config.resume:
            for name in (STATE_FILE, LOG_FILE):
                (self.output_dir / name).unlink(missing_ok=True)
        return None

    def _prepare_output(self) -> None:
        """Refuse to clobber another run unless resuming or overwriting; trim the log to the resumed epoch."""
        problem = self._output_problem() if self.is_main else None
        problem = du.broadcast_object(problem, self.context)  # every process stops, none waits forever
        if problem:
            raise FileExistsError(problem)
        if self.config.resume:
            self._resume()
        if self.is_main:
            self.history = self.run_history.start(self.epoch)
            self.config.save(self.output_dir / CONFIG_FILE)
