"""What went wrong with a command line, as one line naming the option: the CLI's side of :class:`UsageError`.

jsonargparse reports a bad value as a nested, multi-line dump (one branch per type of a Union, the
``Namespace`` given, ...); Lightning says ``No supported gpu backend found!`` without naming the option;
a constructor says which of its arguments is wrong but not where that argument sits in the config. The
functions here turn each into ``<option>: <problem>`` (:func:`parse_problem`, :func:`trainer_problem`,
:func:`option_name`), parse a command line into that (:func:`parse_command_line`), find sdcorr's own error
behind a wrapped one (:func:`known_error`) and check ``--config`` files up front so a YAML mistake names its
file (:func:`check_config_file`).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml
from jsonargparse import ArgumentError, ArgumentParser, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException

from sdcorr.errors import OptionError, SdcorrError, UsageError
from sdcorr.sources.weightless import WeightsSkipped

E = TypeVar("E", bound=BaseException)

#: jsonargparse lines that describe how it tried, not what is wrong
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "- Expected a <class 'NoneType'>",
)


def parse_problem(message: str, known_options: Iterable[str] = ()) -> str:
    """One line ``<option>: <problem>`` from a jsonargparse/argparse error message.

    Args:
        message: ``str()`` of the ``ArgumentError``, possibly many lines.
        known_options: option strings (``--trainer.max_epochs``, ...) to suggest the closest of, for an
            unknown option.
    """
    if found := re.search(r"unrecognized arguments: (\S+)", message):
        return _unknown(found[1], known_options)
    if found := re.search(r"does not accept option '([^']+)'", message):
        return _unknown(f"--{found[1]}", known_options)
    if found := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
        return f"{found[1]}: unknown command; the commands are {found[2]}"
    if found := re.search(r"the following arguments are required: (.*)", message):
        names = [name.split(".", 1)[-1] for name in found[1].split(", ")]
        return f"{', '.join(names)}: required but not given"
    if "Parser key" in message:
        return _nested(message)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def parse_command_line(parser: ArgumentParser, args: Sequence[str]) -> Namespace:
    """``parser.parse_args(args)``, with a bad option, value or config key raised as a :class:`UsageError` of one
    line that names it and points to ``<prog> --help``.

    Args:
        parser: made with ``exit_on_error=False`` (so that it raises instead of printing its usage); its
            ``prog`` (``sdcorr test``) is the command the message points to.
        args: the command line after the command's name.
    """
    try:
        return parser.parse_args(list(args))
    except ArgumentError as error:
        problem = parse_problem(str(error), option_strings(parser))
        raise UsageError(f"{problem} (options: {parser.prog} --help)") from error


def option_strings(parser: ArgumentParser) -> list[str]:
    """The long options ``parser`` takes (``--trainer.max_epochs``, ...: one per key of its defaults), for
    suggesting the closest to a misspelt one."""
    return ["--config", "--print_config", "--help", *(f"--{key}" for key in parser.get_defaults().keys())]


def cause_of(error: Optional[BaseException], kind: type[E]) -> Optional[E]:
    """The exception of type ``kind`` behind ``error`` (itself or a cause: jsonargparse and Lightning may wrap
    it), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def known_error(error: Optional[BaseException]) -> Optional[SdcorrError]:
    """The :class:`SdcorrError` behind ``error``, if any (see :func:`cause_of`)."""
    return cause_of(error, SdcorrError)


def skipped_weights(error: Optional[BaseException]) -> bool:
    """Is ``error`` (or a cause of it) a :class:`~sdcorr.sources.weightless.WeightsSkipped`?"""
    return cause_of(error, WeightsSkipped) is not None


def _unknown(option: str, known_options: Iterable[str]) -> str:
    if not option.startswith("-"):
        return f"{option}: unexpected argument"
    name = option.split("=", 1)[0]
    close = difflib.get_close_matches(name, list(known_options), n=1, cutoff=0.75)
    return f"{name}: unknown option" + (f" (did you mean {close[0]}?)" if close else "")


def _nested(message: str) -> str:
    """Follow ``Parser key`` and ``class_path`` lines down to the innermost problem."""
    path: list[str] = []
    expected: list[str] = []
    others: list[str] = []
    value: Optional[str] = None
    class_path: Optional[str] = None
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NOISE):
            continue
        if found := re.match(r'Parser key "([^"]+)":\s*(.*)', line):
            path.append(found[1])
            line = found[2]
            if not line:
                continue
        if found := re.match(r"- Problem with given class_path '([^']+)':", line):
            class_path = found[1]
            path.append("init_args")
            continue
        if found := re.match(r"Option '([^']+)' is not accepted", line):
            path.append(found[1])
            others.append(f"not an argument of {class_path}" if class_path else "unknown option")
            continue
        if found := re.match(r"(?:- )?Expected a (.+?)(?:\. Got value: (.*))?$", line):
            expected.append(found[1])
            value = found[2] if found[2] is not None else value
            continue
        if found := re.match(r"Given value: (.*)", line):
            if value is None and not re.match(r"(NestedArg|Namespace)\(|\{", found[1]):
                value = found[1]
            continue
        if class_path and path and path[-1] == "init_args" and not expected and not others:
            path[-1] = "class_path"  # the class itself could not be found or imported
            line = f"cannot import {class_path!r} ({line})"
        others.append(line.removeprefix("- "))
    problem = "; ".join(others) if others else f"expected {_types(expected)}"
    if value is not None and not others:
        problem += f"; got {value!r}"
    option = f"--{'.'.join(path)}" if path else "option"
    return f"{option}: {problem}"


def _types(expected: list[str]) -> str:
    """``["<class 'int'>", "typing.Literal['auto']"]`` -> ``"an int or one of 'auto'"``."""
    names, choices = [], []
    for text in expected:
        if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", text):
            choices.append(literal[1])
        elif found := re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>", text):
            names.append({"Sequence": "a list", "int": "an integer", "float": "a number", "str": "a string",
                          "bool": "true or false", "dict": "a mapping"}.get(found[1], found[1]))  # fmt: skip
        else:
            names.append(text)
    if choices:
        names.append(f"one of {', '.join(choices)}")
    return " or ".join(names) or "another value"


def check_config_file(path: str) -> None:
    """Raise :class:`UsageError` naming ``path`` if it is not a readable YAML mapping of options."""
    file = Path(path)
    if not file.is_file():
        if re.search(r"\n|: |\{", path):  # jsonargparse also takes the config's text itself
            return
        raise UsageError(f"--config {path}: file not found")
    try:
        content = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UsageError(f"--config {path}: not valid YAML ({where}{getattr(error, 'problem', error)})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot read ({error})") from None
    if content is not None and not isinstance(content, dict):
        raise UsageError(f"--config {path}: expected options as `key: value` lines, not a {type(content).__name__}")


def option_name(config: Mapping[str, Any], error: OptionError, sections: Mapping[str, type]) -> Optional[str]:
    """The full option (``--model.source.init_args.layers``) of ``error``'s argument in a parsed config.

    Args:
        config: the flattened parsed config: dotted keys -> values (``Namespace.items()``).
        error: names the class (``owner``) and its argument.
        sections: the classes of config sections given without ``class_path`` (``{"model": ..., ...}``).

    Returns:
        The key where ``owner``'s argument is configured; else the only key with the argument's name; else
        None (the message keeps the bare argument name).
    """
    owners = {cls.__name__ for cls in error.owner.__mro__}
    candidates = []
    for key in config:
        prefix, _, last = key.rpartition(".")
        if last != error.argument:
            continue
        candidates.append(key)
        if prefix.endswith("init_args"):
            class_path = config.get(f"{prefix.removesuffix('init_args')}class_path")
            if class_path and class_path.rsplit(".", 1)[-1] in owners:
                return f"--{key}"
        elif prefix in sections and issubclass(error.owner, sections[prefix]):
            return f"--{key}"
    return f"--{candidates[0]}" if len(candidates) == 1 else None


@contextmanager
def trainer_options(accelerator: Any) -> Iterator[None]:
    """Turn Lightning's complaints about the Trainer's (or Fabric's) settings into a :class:`UsageError`
    naming the ``--trainer`` option; ``accelerator``: the one asked for. Wrap only the construction: there
    Lightning raises ``MisconfigurationException``, ``RuntimeError`` (an unavailable accelerator) or
    ``ValueError`` about the settings only."""
    try:
        yield
    except (MisconfigurationException, RuntimeError, ValueError) as error:
        raise UsageError(trainer_problem(str(error), accelerator)) from error


def trainer_problem(message: str, accelerator: Any) -> str:
    """``--trainer.<option>: <problem>`` for a Lightning ``MisconfigurationException`` message."""
    import torch

    first = message.strip().splitlines()[0] if message.strip() else "invalid setting"
    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        return (
            f"--trainer.accelerator: {accelerator!r} asked for, but torch sees no GPU here "
            f"(torch.cuda.is_available() is False); use cpu or auto ({first})"
        )
    if found := re.search(r"\((\w+)=", first):  # "`Trainer(devices='0')` value is not a valid input ..."
        return f"--trainer.{found[1]}: {first}"
    for name in ("strategy", "precision", "devices", "num_nodes", "accelerator", "plugins"):
        if name in first.lower():
            return f"--trainer.{name}: {first}"
    if re.search(r"\b(gpu|cuda|mps|tpu|backend)\b", first, re.IGNORECASE):
        return f"--trainer.accelerator: {first}"
    return f"--trainer: {first}"


#: precisions sdcorr cannot run in: its models and caches are float32 or lower (a float64 input meets float32 weights)
UNSUPPORTED_PRECISIONS = ("64", "64-true", "double")


def check_trainer(trainer: Namespace) -> None:
    """Refuse Trainer settings that would fail or misbehave only once the run has started: an empty
    ``default_root_dir`` (the run would be written into the working directory), a float64 precision, and
    whatever Lightning itself refuses when the Trainer is built (an accelerator, device count, strategy or
    precision the machine cannot provide: checked by building a Trainer with these settings alone).

    Args:
        trainer: the parsed ``trainer`` section.

    Raises:
        UsageError: one line naming the ``--trainer`` option.
    """
    from lightning.pytorch import Trainer

    root = trainer.get("default_root_dir")
    if root is not None and not str(root).strip():
        raise UsageError(
            "--trainer.default_root_dir: empty; give the run folder (the run would be written into the working "
            "directory)"
        )
    if str(trainer.get("precision")) in UNSUPPORTED_PRECISIONS:
        raise UsageError(
            f"--trainer.precision: sdcorr runs in float32 or lower (32-true, 16-mixed, bf16-mixed); "
            f"got {trainer.get('precision')}"
        )
    settings = {key: trainer.get(key) for key in ("accelerator", "devices", "num_nodes", "precision")}
    if isinstance(trainer.get("strategy"), str):
        settings["strategy"] = trainer.get("strategy")
    settings = {key: value for key, value in settings.items() if value is not None}
    said = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # "GPU available: ..." once, by the real one
    level = said.level
    said.setLevel(logging.WARNING)  # setLevel, not the attribute: the logging module caches levels
    try:
        with trainer_options(settings.get("accelerator")):
            Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)  # fmt: skip
    finally:
        said.setLevel(level)
