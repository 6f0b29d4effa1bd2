"""What ``test``, ``predict``, ``plan`` and ``match`` share: the config files and options they take.

:class:`ConfiguredCLI` is a LightningCLI without subcommands (``run=False``; :mod:`sdcorr.cli.main` chose
the command): the ``trainer``, ``model`` (:class:`~sdcorr.module.CorrespondenceModule`) and ``data`` (any
:class:`~datamodules.base.PairDataModule` by class_path) sections, ``seed_everything`` (Lightning seeds
before anything is built), the run-folder callbacks' sections (see :mod:`sdcorr.cli.run_folder`), layered
YAML files (``--config a.yaml --config b.yaml``) and ``--print_config``. It builds everything a Trainer
needs unless a command builds less (:meth:`ConfiguredCLI.build`); running the command is the caller's.

Only LightningCLI's public hooks are overridden: ``add_arguments_to_parser``, ``parse_arguments``,
``before_instantiate_classes``, ``instantiate_classes`` and ``instantiate_trainer``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from datamodules.base import PairDataModule
from sdcorr.cli.errors import (
    check_trainer,
    known_error,
    option_name,
    parse_command_line,
    skipped_weights,
    trainer_options,
)
from sdcorr.cli.quiet import VERBOSE_VARIABLE, hide_third_party_noise
from sdcorr.cli.run_folder import run_folder_callbacks
from sdcorr.errors import OptionError, OutputError, UsageError
from sdcorr.matchers.base import Matcher
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.module import CorrespondenceModule
from sdcorr.sources.base import Source
from sdcorr.sources.weightless import without_weights


class ConfiguredCLI(LightningCLI):
    """Parse a command's config files and options, seed, and build what the command needs.

    Args:
        prog: the command, as ``--help`` and error messages name it (``sdcorr test``).
        description: what the command does, the first line of its ``--help``.
        args: the command line after the command's name.
        needs_data: whether the ``data`` section is required; without it, a ``data`` section is accepted
            (so that a benchmark config works) and ignored.

    Attributes (after construction): ``config`` (the parsed options), ``model``, ``datamodule``, ``trainer``
    and ``matcher``: what :meth:`build` built, None where it built nothing.
    """

    def __init__(
        self,
        prog: str,
        description: str,
        args: Sequence[str],
        needs_data: bool = True,
    ) -> None:
        self.sections: dict[str, type] = {"model": CorrespondenceModule}
        self.needs_data = needs_data
        self.model = self.datamodule = self.trainer = self.matcher = None
        super().__init__(
            CorrespondenceModule,
            PairDataModule if needs_data else None,
            subclass_mode_data=True,
            # the inner optimisation needs autograd: never run test/predict under inference_mode
            # progress bars only on a terminal: in a pipe or a log file they are noise
            trainer_defaults={"inference_mode": False, "enable_progress_bar": sys.stdout.isatty()},
            save_config_callback=None,  # config.yaml is the run folder's, see sdcorr.cli.run_folder
            # a bad option or config key raises (main prints one line) instead of printing the whole usage
            parser_kwargs={"prog": prog, "description": description, "exit_on_error": False},
            args=list(args),
            run=False,
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The run-folder callbacks' sections; the logger's files (W&B's wandb/, CSVLogger's versions) go in
        the run's folder, wherever that is."""
        self.sections.update(run_folder_callbacks(parser))
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir", apply_on="parse")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (always a list here: never ``sys.argv``); a bad option or value raises
        :class:`~sdcorr.errors.UsageError` with one line naming it."""
        self.config = parse_command_line(parser, args)
        check_logger_folder(self.config, args)

    def before_instantiate_classes(self) -> None:
        """Quiet by default: third-party noise is hidden unless ``test --verbose true`` or ``SDCORR_VERBOSE=1``."""
        if not self.config.get("verbose") and os.environ.get(VERBOSE_VARIABLE) != "1":
            hide_third_party_noise()

    def instantiate_classes(self) -> None:
        """:meth:`check`, then :meth:`build`; a constructor's :class:`~sdcorr.errors.OptionError` gets the full
        option name of the argument it names."""
        try:
            self.check()
            self.build()
        except Exception as error:  # jsonargparse may wrap it
            known = known_error(error)
            if isinstance(known, OptionError) and known.option is None:
                known.option = option_name(dict(self.config.items()), known, self.sections)
            raise

    def check(self) -> None:
        """Refuse a bad option before any work, the same way for every command (``plan`` refuses what ``test``
        would): build every section the options describe (data, model, the run folder's callbacks) without
        weights (see :mod:`sdcorr.sources.weightless`), then check the Trainer's settings
        (:func:`~sdcorr.cli.errors.check_trainer`). A pretrained source is checked up to its weights; the
        others are then built around a source without any."""
        config = self.config.clone()
        if not self.needs_data:
            config.data = None
        with without_weights():
            try:
                self.parser.instantiate_classes(config)
            except Exception as error:  # jsonargparse may wrap it
                if not skipped_weights(error):
                    raise
                config.model.source = Namespace(class_path=f"{Source.__module__}.{Source.__name__}")
                self.parser.instantiate_classes(config)
        check_trainer(self.config.trainer)

    def build(self) -> None:
        """Build what the command needs; here everything: the datamodule, the model and the Trainer with its
        callbacks (Lightning's ``instantiate_classes``). Override to build less."""
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's Trainer; an accelerator, device or precision it cannot provide is a
        :class:`~sdcorr.errors.UsageError` naming the ``--trainer`` option."""
        with trainer_options(self.config.trainer.accelerator):
            return super().instantiate_trainer(**kwargs)

    def save_config(self, path: Path) -> None:
        """Write the resolved config of this command to ``path``."""
        try:
            self.parser.save(self.config, str(path), overwrite=True)
        except OSError as error:
            raise OutputError(f"{path}: cannot write ({error})") from error


def check_logger_folder(config: Namespace, args: Sequence[str]) -> None:
    """Refuse a logger ``save_dir`` given on the command line or in a ``--config`` file that is not the run
    folder: a run writes only under its folder, so the logger's ``save_dir`` follows
    ``trainer.default_root_dir`` (a link), and a different one would otherwise be dropped without a word.

    Raises:
        UsageError: naming ``--trainer.logger.init_args.save_dir`` and the run folder.
    """
    given = [arg.split("=", 1)[1] if "=" in arg else args[i + 1]
             for i, arg in enumerate(args) if re.fullmatch(r"--trainer\.logger\.(init_args\.)?save_dir(=.*)?", arg)
             and ("=" in arg or i + 1 < len(args))]  # fmt: skip
    for path in [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]:
        try:
            logger = ((yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}).get("logger")
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # the config itself is checked elsewhere
        for entry in logger if isinstance(logger, list) else [logger]:
            if isinstance(entry, dict) and (entry.get("init_args") or {}).get("save_dir") is not None:
                given.append(str(entry["init_args"]["save_dir"]))
    root = config.trainer.get("default_root_dir")
    for save_dir in given:
        if root is None or Path(save_dir).expanduser().resolve() != Path(root).expanduser().resolve():
            raise UsageError(
                f"--trainer.logger.init_args.save_dir: {save_dir!r} is not the run folder ({root}); a run writes "
                "only under its folder, so the logger's files go there: leave save_dir out, or set "
                "--trainer.default_root_dir"
            )


def build_sections(config: Namespace, data: bool = False, matcher: bool = False, model: bool = False) -> Namespace:
    """Build some sections of a parsed config and nothing else (``plan`` loads no model).

    Args:
        config: what :class:`ConfiguredCLI` parsed.
        data: build the datamodule (``data``).
        matcher: build the model's matcher alone (``model.matcher``; the paper's PromptMatcher if not given).
        model: build the model (``model``).

    Returns:
        ``data``, ``matcher`` and ``model``: the objects built, None for the others.
    """
    parser = ArgumentParser(exit_on_error=False)
    given = {}
    if data:
        parser.add_subclass_arguments(PairDataModule, "data")
        given["data"] = config.data
    if matcher:
        parser.add_argument("--matcher", type=Optional[Matcher])
        given["matcher"] = config.model.matcher
    if model:
        parser.add_class_arguments(CorrespondenceModule, "model")
        given["model"] = config.model
    built = getattr(parser, "instantiate", parser.instantiate_classes)(Namespace(**given))  # renamed in 4.49
    return Namespace(
        data=built.get("data"),
        matcher=(built.get("matcher") or PromptMatcher()) if matcher else None,
        model=built.get("model"),
    )
