"""Export a sweep's trial as a standalone model file, and load one in plain PyTorch.

``morphtune export SWEEP [--trial ID] -o model.pt`` materialises the chosen trial's model
(the best by default): a grown model at its grown shape, a sparse model with its
keep-masks (in the sparse export format), or a subnet copied out of a trained supernet.
The file records the family and config, so :func:`load_model` rebuilds the model from it
alone, without Ray or the results store; :func:`load_exported` also returns the metadata
(sweep, trial, iteration, the trial's config and the metrics it stored).

The file containers are described in :mod:`morphtune.export._file`; ``docs`` has the
user's view.
"""

from morphtune.export._errors import ExportError
from morphtune.export._evaluate import validation_accuracy
from morphtune.export._file import (
    EXPORT_FORMATS,
    ExportedModel,
    ExportFormatError,
    load_exported,
    load_model,
    write_model,
)
from morphtune.export._trial import ExportMismatch, ExportResult, check_output, export_trial

__all__ = [
    "EXPORT_FORMATS",
    "ExportError",
    "ExportFormatError",
    "ExportMismatch",
    "ExportResult",
    "ExportedModel",
    "check_output",
    "export_trial",
    "load_exported",
    "load_model",
    "validation_accuracy",
    "write_model",
]
