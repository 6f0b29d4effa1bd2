"""Errors that carry a complete message for the user; the CLI prints them without a traceback."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from typing import Optional


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


@contextmanager
def writing(path: str | PathLike) -> Iterator[None]:
    """Name ``path`` in any ``OSError`` raised while writing it: an :class:`OutputError` (a full disk, a folder
    without permission), one line that says which file and, for a full disk, how to go on. Every write of a
    run folder goes through this (or :func:`sdcorr.runs.folder.write_json` and ``write_text``, which use it).

    >>> with writing("runs/x/index.html"):  # doctest: +ELLIPSIS
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    sdcorr.errors.OutputError: runs/x/index.html: cannot write ([Errno 28] No space left on device); free space ...
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        hint = "; free space and rerun the same command (a test run resumes)" if error.errno == errno.ENOSPC else ""
        raise OutputError(f"{path}: cannot write ({error}){hint}") from error


class DeviceMemoryError(SdcorrError, RuntimeError):
    """Even one item does not fit in the accelerator's memory (``max_batch="auto"`` cannot go lower)."""


class UsageError(SdcorrError):
    """The command line or a config file is wrong (the CLI exits with code 2, as for a parse error)."""


class OptionError(UsageError, ValueError):
    """An argument given to a class is invalid.

    ``str()`` is ``"<argument>: <problem>"``. The CLI sets :attr:`option` to the argument's full option name
    (``--model.source.init_args.layers``), which then replaces ``argument`` in the message.

    Args:
        owner: the class (or its instance) whose argument it is.
        argument: the argument's name in ``owner.__init__``.
        problem: what is wrong, with the value given (e.g. ``"expected >= 1; got 0"``).
    """

    def __init__(self, owner: object, argument: str, problem: str) -> None:
        super().__init__(argument, problem)
        self.owner = owner if isinstance(owner, type) else type(owner)
        self.argument = argument
        self.problem = problem
        self.option: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.option or self.argument}: {self.problem}"
