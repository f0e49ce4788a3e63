"""What the analysis commands share: their record, option types, the sigma grid, keys and reference models.

- `Command`, `Result`: a command is a record of its options, checks and `run`, which returns its
  summary and the files it wrote; `python -m analysis` and `report` read nothing else.
- Option types for argparse (`type=`): comma-separated positive integers, noise levels and names,
  parsed and checked when the command line is read, before anything is loaded.
- `sigma_grid`: the geometric noise-level grid of `--num-sigmas`, `--sigma-min`, `--sigma-max`.
- `command_key`: every random draw of a command comes from `--seed` through one named derivation.
- `references`: the named analytic models, fitted by `gaussjax.fit.fit_references` (a function of the
  training set and the run's GMM rank), so a name is the same model in every figure and in the probes.

Noise levels are accepted when `sigma^2` and `1 / sigma^2` are normal float32 numbers, the range in
which gaussjax's models take them in float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

import gaussjax as gj
from gaussjax.checks import InputValueError, check_int

SIGMA_MIN = float(np.sqrt(np.finfo(np.float32).smallest_normal))  # about 1.1e-19
SIGMA_MAX = 1 / SIGMA_MIN  # about 9.2e18


@dataclasses.dataclass(frozen=True)
class Result:
    """What a command did: its summary lines (printed, and shown by `report`) and the files it wrote."""

    summary: list[str]
    files: list[Path]

    def lines(self) -> list[str]:
        """The summary, then `wrote PATH` for each file."""
        return [*self.summary, *(f"wrote {path}" for path in self.files)]


def _nothing_to_validate(context, args: argparse.Namespace) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Command:
    """One `python -m analysis` command.

    Attributes:
        name: the command's name on the command line.
        help: one line for `python -m analysis --help`.
        description: the command's `--help` text (its module's docstring).
        outputs: the names of the files it writes in `--out` (checked writable before any work).
        add_arguments: adds the command's own options to its parser (with their argparse `type`s).
        run: `(context, args) -> Result`; computes and writes.
        validate: `(context, args) -> None`; refuses options that conflict with the data (sizes, memory),
            by name. Called with the data loaded and before the network is (`context.network` is None);
            the options' own syntax is checked earlier, by their argparse types.
        needs_network: whether it analyses a network (`--run` or `--network`), or only data and run files.
        needs_run: whether it reads a run's own files (`probes.csv`, `loss.csv`), not just its network.
        num_queries: the default of `--num-queries`.
        in_report: whether `report` runs it (False for commands that take minutes).
        multi_run: whether it takes several run directories (positional `RUN ...`, its own options) instead of
            the shared `--run`, `--network`, `--step`, ... of `analysis.context`; it is then called as
            `run(None, args)` and checks everything itself.
    """

    name: str
    help: str
    description: str
    outputs: tuple[str, ...]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., Result]
    validate: Callable[..., None] = _nothing_to_validate
    needs_network: bool = True
    needs_run: bool = False
    num_queries: int = 256
    in_report: bool = True
    multi_run: bool = False

    def defaults(self, shared: argparse.Namespace) -> argparse.Namespace:
        """This command's options at their defaults, with the shared options of `shared`."""
        parser = argparse.ArgumentParser()
        self.add_arguments(parser)
        return argparse.Namespace(**{**vars(shared), **vars(parser.parse_args([]))})


# -- option types: argparse calls them on the given string (and on string defaults) -------------------------


def _items(text: str) -> list[str]:
    return [item.strip() for item in str(text).split(",") if item.strip()]


def positive_ints(text: str) -> list[int]:
    """`'1,2,5'` -> `[1, 2, 5]`: positive integers in the given order without repeats (`''` -> `[]`)."""
    try:
        values = [int(item) for item in _items(text)]
    except ValueError:
        values = [0]
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def check_sigma(option: str, value: float) -> float:
    """`value` as a float if it is a noise level in `[SIGMA_MIN, SIGMA_MAX]`, else an error naming `option`."""
    if not (np.isfinite(value) and value > 0):
        raise InputValueError(f"`{option}` must be a positive finite number, got {value}")
    if not SIGMA_MIN <= value <= SIGMA_MAX:
        raise InputValueError(f"`{option}` must be in [{SIGMA_MIN:.2g}, {SIGMA_MAX:.2g}] (sigma^2 and 1 / sigma^2 "
                              f"must be normal float32 numbers), got {value:.3g}")
    return float(value)


def noise_level(text: str) -> float:
    """One noise level (`check_sigma`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    try:
        return check_sigma("value", value)
    except InputValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("`value` ")) from None


def noise_levels(text: str) -> list[float]:
    """`'0.1,0.5,2'` -> noise levels (`check_sigma`) in the given order without repeats; at least one."""
    items = _items(text)
    if not items:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive numbers, got {text!r}")
    return list(dict.fromkeys(noise_level(item) for item in items))


def names_of(*choices: str) -> Callable[[str], list[str]]:
    """An option type: comma-separated names among `choices`, in the order of `choices`, at least one."""

    def parse(text: str) -> list[str]:
        chosen = _items(text)
        if not chosen or any(name not in choices for name in chosen):
            raise argparse.ArgumentTypeError(f"must name some of {', '.join(choices)}, got {text!r}")
        return [name for name in choices if name in chosen]

    return parse


def check_components(option: str, components: Sequence[int], num_train: int) -> None:
    """Each number of mixture components K of `option` must be in `[1, N]` (N training images)."""
    for k in components:
        check_int(option, k, minimum=1, maximum=num_train)


def sigma_grid(num: int, low: float, high: float, *, min_num: int = 1) -> np.ndarray:
    """`(num,)` geometric noise levels from `--sigma-min` (`low`) to `--sigma-max` (`high`), float64, validated.

    `num` (`--num-sigmas`) must be at least `min_num`.
    """
    if num < min_num:
        raise InputValueError(f"`--num-sigmas` must be >= {min_num}, got {num}")
    check_sigma("--sigma-min", low)
    check_sigma("--sigma-max", high)
    if low > high:
        raise InputValueError(f"need `--sigma-min` <= `--sigma-max`, got {low}, {high}")
    return np.geomspace(low, high, num)


# -- randomness and reference models ---------------------------------------------------------------------


def command_key(seed: int, purpose: str) -> jax.Array:
    """The key of one kind of draw: `fold_in(key(seed), crc32(purpose) mod 2^31)`.

    Purposes: `'queries'` (query points), `'initial-states'` (`x_T`; the same in `trajectories`, `samples`,
    `teleport` and `compare-runs`), `'anchors'`, `'kid'`, `'feature-net'`, `'floor-states'`, `'floor-subset'`,
    `'auto-skip'`. A draw depends on `--seed` and its purpose
    only, never on which other draws a command makes.
    """
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def references(context, names: Sequence[str]) -> dict:
    """`gaussjax.fit.fit_references` of the training set with its default key and the run's GMM rank
    (`context.reference_rank`), so `'gmm10'` here is the `'gmm10'` of the run's probes."""
    train = context.train
    return gj.fit.fit_references(train.flat, names, labels=train.labels, image_shape=tuple(train.images.shape[1:]),
                                 rank=context.reference_rank)


def local_model_specs(text: str) -> list[str]:
    """`'ls3,els3,pspc4,locality'` -> local model specs (`gaussjax.scores.local_spec`), without repeats."""
    from gaussjax.scores.local_spec import SPEC_HELP, check_local_spec

    specs = list(dict.fromkeys(_items(text)))
    for spec in specs:
        try:
            check_local_spec(spec)
        except InputValueError as error:
            raise argparse.ArgumentTypeError(f"must list local models ({SPEC_HELP}): {error}") from None
    return specs
