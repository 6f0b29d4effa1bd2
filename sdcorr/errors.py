"""Errors that carry a complete message for the user; the CLI prints them without a traceback."""


class SdcorrError(Exception):
    """Base class: the message says what was wrong (file, field, expectation) and what to do."""


class DataError(SdcorrError, ValueError):
    """Bad input data; the message names the file and the field."""


class ModelLoadError(SdcorrError, OSError):
    """A model could not be loaded; the message says what to do instead."""


class InferenceModeError(SdcorrError, RuntimeError):
    """The method needs autograd but runs under ``torch.inference_mode()``."""


class NumericalError(SdcorrError, FloatingPointError):
    """A loss or map became NaN or infinite (for example fp16 overflow)."""


class OutputError(SdcorrError, OSError):
    """The output folder cannot be written."""


class DeviceMemoryError(SdcorrError, RuntimeError):
    """Even one item does not fit in the accelerator's memory (``max_batch="auto"`` cannot go lower)."""
