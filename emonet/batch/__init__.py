"""Corpus jobs: ``python -m emonet batch``, images and videos of files, folders and manifests, on this machine
(``local``) or on Ray (``ray``), written as a resumable Parquet dataset (see docs/batch.md).

Modules, each importing only the ones above it in this list:

* :mod:`~emonet.batch.inputs`: expanding files, folders and manifests into image/video inputs;
* :mod:`~emonet.batch.output`: the output folder (Parquet shards, ledger, job record, lock);
* :mod:`~emonet.batch.sinks`: where the driver puts finished inputs (that folder, or ``predict``'s one table file);
* :mod:`~emonet.batch.pipeline`: the three stages (locate, model, finish) and :class:`BatchConfig`;
* :mod:`~emonet.batch.engines`: where stages 1-2 run (``local`` or Ray Data; Ray imported lazily);
* :mod:`~emonet.batch.job`: the driver loop (:func:`run_job`) and its summary.
"""

from emonet.batch.engines import ENGINES, RayOptions
from emonet.batch.inputs import InputItem, expand_inputs
from emonet.batch.job import run_job
from emonet.batch.output import BatchOutput, batch_columns, open_output
from emonet.batch.pipeline import BatchConfig

__all__ = ["ENGINES", "BatchConfig", "BatchOutput", "InputItem", "RayOptions", "batch_columns", "expand_inputs",
           "open_output", "run_job"]
