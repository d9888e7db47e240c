"""Where the stages run: in this process (``local``) or on Ray (``ray``: a local Ray or a cluster).

Both engines turn the inputs still to do into scored :class:`~emonet.batch.pipeline.Chunk` objects (stages 1
and 2) that the driver finishes and writes (:func:`emonet.batch.job.run_job`), with the same stage code.

* ``local``: a thread locates (decode, detect, track, crop) ahead of the model, a few chunks at most, while
  the main thread runs the model on the chunks available (several inputs mixed in one call).
* ``ray``: a Ray Data pipeline: ``flat_map`` over the inputs in a pool of CPU actors (locate), then
  ``map_batches`` in a pool of model actors (one GPU each when the cluster has GPUs), streamed back to the
  driver. Ray is imported only here and only for this engine (the optional extra ``[scale]``).
"""

from __future__ import annotations

import logging
import pickle
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from emonet.batch.inputs import InputItem
from emonet.batch.pipeline import BatchConfig, Chunk, Locator, Scorer
from emonet.errors import UserError
from emonet.predictor import Predictor

ENGINES = ("local", "ray")
QUEUE_CHUNKS = 4  # located chunks waiting for the model (local engine): memory stays a few chunks
GROUP_CHUNKS = 8  # chunks per model call at most (their crops are batched by the predictor's batch size)
# Ray Data hands a map's output downstream block by block: small blocks keep a long video's chunks moving
# to the model actors (and memory low) instead of piling up to Ray's default 128 MiB.
BLOCK_BYTES = 16 << 20


class EngineError(UserError):
    """The engine cannot run (Ray missing, a cluster that cannot be reached)."""


@dataclass(frozen=True)
class RayOptions:
    """``address``: None (a local Ray), ``auto`` (the cluster this machine belongs to) or ``ray://host:port``.
    ``locate_workers``/``model_workers``: actor pool sizes (None: from the cluster's CPUs and GPUs);
    ``gpus_per_model_worker``: None = 1 when the cluster has GPUs, else 0; ``num_cpus``: local Ray only."""

    address: str | None = None
    locate_workers: int | None = None
    model_workers: int | None = None
    gpus_per_model_worker: float | None = None
    num_cpus: int | None = None
    chunks_per_model_call: int = GROUP_CHUNKS


# -- local -----------------------------------------------------------------------------------------------
_END = object()


def run_local(todo: Sequence[tuple[int, InputItem]], config: BatchConfig, predictor: Predictor) -> Iterator[Chunk]:
    """Stages 1 and 2 in this process: locate in a background thread, the model in the calling thread, both
    with ``predictor`` (the driver's: one checkpoint read per process). The locate thread uses only its
    detector and crops, the model thread only its runner."""
    locator, scorer = Locator(config, predictor), Scorer(config, predictor)
    chunks: queue.Queue = queue.Queue(QUEUE_CHUNKS)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for index, item in todo:
                for chunk in locator(index, item):
                    if not put((True, chunk)):
                        return
            put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            put((False, exc))

    thread = threading.Thread(target=produce, name="emonet-batch-locate", daemon=True)
    thread.start()
    try:
        done = False
        while not done:
            group = []
            ok, item = chunks.get()  # wait for one chunk, then take what is ready without waiting
            while True:
                if not ok:
                    raise item
                if item is _END:
                    done = True
                    break
                group.append(item)
                if len(group) >= GROUP_CHUNKS:
                    break
                try:
                    ok, item = chunks.get_nowait()
                except queue.Empty:
                    break
            if group:
                yield from scorer(group)
    finally:
        stop.set()
        thread.join()
        locator.close()
        scorer.close()


# -- ray -------------------------------------------------------------------------------------------------
def import_ray():
    try:
        import ray  # lazy: the optional extra [scale]; the local engine never needs it
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray Data, which is not installed ({exc}): "
                          "pip install 'emonet-toolkit[scale]' (or pip install 'ray[data]')") from None
    return ray


def _actor_classes(config: BatchConfig, model_threads: int | None = None) -> tuple[type, type]:
    """The two Ray Data actor classes of a job, with ``config`` built in: defined here, they travel to the
    workers by value and take no constructor arguments (which Ray would keep in the object store and warn
    about for restartable actors). Chunks travel pickled: they hold arbitrary Python objects.

    ``model_threads``: the model actors' CPU threads (None: Ray's, one per CPU the actor holds). A CPU-only
    model actor is given every core of its node (see :func:`run_ray`)."""

    class RayLocate:
        """``flat_map`` actor: one input row -> its chunks, in order."""

        def __init__(self) -> None:
            self.locator = Locator(config)

        def __call__(self, row: dict) -> Iterator[dict]:
            index, item = pickle.loads(row["input"])
            for chunk in self.locator(index, item):
                yield {"chunk": pickle.dumps(chunk, protocol=5)}

    class RayScore:
        """``map_batches`` actor: a batch of chunks (from any inputs) -> the same chunks, scored."""

        def __init__(self) -> None:
            if model_threads is not None:
                import os

                import torch

                torch.set_num_threads(model_threads or os.cpu_count() or 1)
            self.scorer = Scorer(config)

        def __call__(self, batch: dict) -> dict:
            import numpy as np

            chunks = self.scorer([pickle.loads(payload) for payload in batch["chunk"]])
            out = np.empty(len(chunks), dtype=object)
            out[:] = [pickle.dumps(chunk, protocol=5) for chunk in chunks]
            return {"chunk": out}

    return RayLocate, RayScore


def start_ray(options: RayOptions, verbose: bool = False):
    """Connect to (``address``) or start (local) Ray, quietly; returns the module."""
    ray = import_ray()
    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.data"):  # Ray's start-up and execution notes; errors still show
        logging.getLogger(name).setLevel(level)
    if not ray.is_initialized():
        kwargs = {"logging_level": level, "log_to_driver": verbose}
        if options.address is None:  # starting a local Ray: no dashboard, and the CPUs asked for
            kwargs.update(include_dashboard=False, num_cpus=options.num_cpus)
        try:
            ray.init(address=options.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = options.address or "a local Ray"
            raise EngineError(f"--engine ray: cannot start or reach {where} ({exc})") from None
    return ray


def pool_sizes(ray, options: RayOptions) -> tuple[int, int, float]:
    """(locate actors, model actors, GPUs per model actor) from the options and the cluster's resources."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    per_model = options.gpus_per_model_worker if options.gpus_per_model_worker is not None else (1.0 if gpus else 0.0)
    models = options.model_workers or (max(1, int(gpus / per_model)) if per_model > 0 else 1)
    locators = options.locate_workers or max(1, cpus - models)  # every model actor also holds one CPU
    return locators, models, per_model


def run_ray(todo: Sequence[tuple[int, InputItem]], config: BatchConfig, options: RayOptions,
            verbose: bool = False) -> Iterator[Chunk]:
    """Stages 1 and 2 on Ray Data: locate actors (1 CPU each) -> model actors (GPU when present)."""
    ray = start_ray(options, verbose)
    from ray.data import ActorPoolStrategy, DataContext

    locators, models, per_model = pool_sizes(ray, options)
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the job's own bar counts inputs and faces
    context.print_on_execution_start = False
    context.target_max_block_size = BLOCK_BYTES
    rows = [{"input": pickle.dumps(entry, protocol=5)} for entry in todo]
    # one block per input up to a few thousand: long videos spread over the actors, images go in groups
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 2000)))
    # Ray gives an actor as many threads as the CPUs it holds (OMP_NUM_THREADS=1 here). A CPU model actor
    # would then run the model on one core while the locate actors (a few % of the work) leave the others
    # idle: it uses every core of its node instead, as the local engine's model thread does (0 = all).
    locate_actor, score_actor = _actor_classes(config, model_threads=None if per_model > 0 else 0)
    dataset = dataset.flat_map(locate_actor, compute=ActorPoolStrategy(size=locators), num_cpus=1)
    dataset = dataset.map_batches(score_actor, batch_size=options.chunks_per_model_call,
                                  compute=ActorPoolStrategy(size=models), num_gpus=per_model,
                                  num_cpus=1, batch_format="numpy")
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for payload in batch["chunk"]:
            yield pickle.loads(payload)


def shutdown_ray() -> None:
    """Stop the local Ray (or leave the cluster) if this process started or joined one."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
