"""The `jaxdl` commands: check the arguments, then call the experiment layer.

Each command works in two steps: called with the parsed arguments, it checks them (paths,
the config and its overrides) and returns its work, a ``Command`` taking no arguments.
``main`` turns the compilation cache on between the two (for the commands whose parser sets
``uses_cache``): an input error is reported before JAX is imported, and the cache is on
before anything compiles.

Everything beyond the standard library is imported inside the commands, so that ``jaxdl
--help`` stays instant; ``jaxdl.experiment`` is looked up at call time too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from jaxdl.errors import InputError, input_error
from jaxdl.experiment import lock

if TYPE_CHECKING:
    import ml_collections

Command = Callable[[], int]
Prepare = Callable[[argparse.Namespace], Command]

_DATA_SUFFIXES = (".csv", ".npy")


def train(args: argparse.Namespace) -> Command:
    """`jaxdl train`: load and override the config, then ``experiment.train_and_evaluate``.

    Args:
        args: the parsed ``train`` arguments, with ``overrides``.

    Returns:
        The run: it joins a multi-host run when asked, then trains; 0 when done.

    Raises:
        InputError: for a bad ``--config``, override or ``--workdir``.
    """
    config_path, config = _config(args)
    if args.workdir is None:
        workdir = _default_workdir(config_path.stem)
        print(f"jaxdl: writing the run to {workdir}", file=sys.stderr)
    else:
        workdir = pathlib.Path(args.workdir).expanduser()
        lock.check_path(workdir, "--workdir")
        if workdir.exists() and not workdir.is_dir():
            raise input_error(
                "--workdir",
                "a folder (new, or a run to resume)",
                f"{str(workdir)!r}, an existing file",
                "pass a folder path, or leave --workdir out for a fresh folder in ./jaxdl_runs.",
            )

    def run() -> int:
        _initialize_distributed(args)
        import jax

        from jaxdl import experiment

        quiet = args.quiet or jax.process_index() != 0  # one console, the first process's
        experiment.train_and_evaluate(config, workdir.absolute(), quiet=quiet)
        return 0

    return run


def predict(args: argparse.Namespace) -> Command:
    """`jaxdl predict`: ``experiment.predict_from_workdir`` on a .csv/.npy file.

    Args:
        args: the parsed ``predict`` arguments.

    Returns:
        The run: it writes the predictions; 0 when done.

    Raises:
        InputError: for a ``--workdir`` that is not a folder, or a bad ``--input``/``--output``.
    """
    workdir = _run_folder(args.workdir)
    input_path = _data_file("--input", args.input, must_exist=True)
    output_path = None
    if args.output not in (None, "-"):
        output_path = _output_file("--output", _data_file("--output", args.output,
                                                          must_exist=False))

    def run() -> int:
        from jaxdl import experiment

        experiment.predict_from_workdir(workdir.absolute(), input_path, output_path,
                                        args.batch_size, member=args.member)
        return 0

    return run


def evaluate(args: argparse.Namespace) -> Command:
    """`jaxdl evaluate`: metrics of the newest good checkpoint, as one JSON line.

    Args:
        args: the parsed ``evaluate`` arguments.

    Returns:
        The run: it prints the metrics; 0 when done.

    Raises:
        InputError: for a ``--workdir`` that is not a folder.
    """
    workdir = _run_folder(args.workdir)

    def run() -> int:
        from jaxdl import experiment

        results = experiment.evaluate_from_workdir(workdir.absolute(), args.split)
        print(json.dumps({"split": args.split, **results}))
        return 0

    return run


def sample(args: argparse.Namespace) -> Command:
    """`jaxdl sample`: text from a run's language model.

    Args:
        args: the parsed ``sample`` arguments.

    Returns:
        The run: it prints the prompt and its continuation; 0 when done.

    Raises:
        InputError: for a ``--workdir`` that is not a folder.
    """
    workdir = _run_folder(args.workdir)

    def run() -> int:
        from jaxdl import experiment

        print(experiment.sample_from_workdir(workdir.absolute(), args.prompt,
                                             num_tokens=args.length,
                                             temperature=args.temperature, top_k=args.top_k,
                                             seed=args.seed, member=args.member))
        return 0

    return run


def explain(args: argparse.Namespace) -> Command:
    """`jaxdl explain`: attributions of a run's predictions on a .csv/.npy file.

    Args:
        args: the parsed ``explain`` arguments.

    Returns:
        The run: it writes the attributions CSV, its JSON sidecar (and the plot, if asked);
        0 when done.

    Raises:
        InputError: for a ``--workdir`` that is not a folder, or a bad ``--input``,
        ``--labels``, ``--baseline`` file or output path.
    """
    workdir = _run_folder(args.workdir)
    input_path = _data_file("--input", args.input, must_exist=True)
    files = {}
    for argument, text in (("--output-csv", args.output_csv), ("--output-png", args.output_png),
                           ("--output-json", args.output_json)):
        files[argument] = None if text in (None, "-") else _output_file(
            argument, pathlib.Path(text).expanduser())
    labels = None if args.labels is None else _data_file("--labels", args.labels, True)
    baseline = args.baseline
    if baseline not in (None, "zeros", "median", "train"):
        baseline = str(_data_file("--baseline", baseline, must_exist=True))

    def run() -> int:
        from jaxdl.experiment import explain_run

        explain_run.explain_workdir(
            workdir.absolute(), input_path, files["--output-csv"], files["--output-png"],
            method=args.method, steps=args.steps, probabilities=args.probabilities,
            batch_size=args.batch_size, target=args.target, labels=labels, baseline=baseline,
            member=args.member, tolerance=args.tolerance, max_steps=args.max_steps,
            samples=args.samples, window=args.window, stride=args.stride, seed=args.seed,
            stdev=args.stdev,
            output_json=files["--output-json"], row_columns=True)
        return 0

    return run


def plot(args: argparse.Namespace) -> Command:
    """`jaxdl plot`: curves of runs into an image.

    Args:
        args: the parsed ``plot`` arguments.

    Returns:
        The run: it draws the curves; the exit code of ``main_plot``.
    """

    def run() -> int:
        from jaxdl.writers.plot import main_plot

        return main_plot(args.workdirs, args.output, args.metrics)

    return run


def summary(args: argparse.Namespace) -> Command:
    """`jaxdl summary`: the parameter table of a config's model, without training.

    Args:
        args: the parsed ``summary`` arguments, with ``overrides``.

    Returns:
        The run: it prints the table; 0 when done.

    Raises:
        InputError: for a bad ``--config`` or override.
    """
    _, config = _config(args)

    def run() -> int:
        from jaxdl.experiment import summary as summary_lib

        print(summary_lib.summarize(config))
        return 0

    return run


def data_prepare(args: argparse.Namespace) -> Command:
    """`jaxdl data prepare`: a data set as records under --out, one JSON line of what was written.

    Args:
        args: the parsed ``data prepare`` arguments.

    Returns:
        The run: it writes the records and prints where; 0 when done.
    """

    out = pathlib.Path(args.out).expanduser()
    lock.check_path(out, "--out")

    def run() -> int:
        from jaxdl.data import prepare

        splits = ("train", "val", "test") if args.split == "all" else (args.split,)
        if args.dataset == "text":
            options = dict(seq_len=args.seq_len, stride=args.stride, max_bytes=args.max_bytes)
        else:
            options = dict(seed=args.seed, images=args.images)
        with lock.exclusive(out, "--out"):  # one writer of the records at a time
            try:
                written = prepare.prepare(args.dataset, out, splits, overwrite=args.overwrite,
                                          **options)
            except InputError as e:
                raise (e.renamed("--out") if e.argument == "out" else e) from None
        print(json.dumps({"dataset": args.dataset, "splits": {
            split: {"dir": str(r.directory), "num_examples": len(r),
                    "fields": {k: {"shape": list(s.shape), "dtype": s.dtype.name}
                               for k, s in r.fields.items()}}
            for split, r in written.items()}}))
        return 0

    return run


def _config(args: argparse.Namespace) -> tuple[pathlib.Path, ml_collections.ConfigDict]:
    """The ``--config`` file (or the default one) and its config with the overrides applied."""
    from jaxdl.experiment import config as config_lib

    config_path = pathlib.Path(args.config) if args.config else config_lib.default_config_path()
    config = config_lib.load_config(config_path)
    # The file's own values first (an override cannot fix a group given as a string), then
    # the overrides, which may set keys a short file leaves to the defaults.
    config_lib.check_types(config, source=str(config_path))
    config = config_lib.with_default_keys(config, list(args.overrides))
    return config_path, config_lib.apply_overrides(config, args.overrides)


def _default_workdir(stem: str) -> pathlib.Path:
    """``./jaxdl_runs/<stem>-<UTC time>``, with a counter if that folder exists."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    workdir = pathlib.Path("jaxdl_runs") / f"{stem}-{stamp}"
    n = 2
    while workdir.exists():
        workdir = pathlib.Path("jaxdl_runs") / f"{stem}-{stamp}-{n}"
        n += 1
    return workdir


def _initialize_distributed(args: argparse.Namespace) -> None:
    """Joins JAX's multi-controller runtime when asked (before any computation)."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and all(v is None for v in given):
        return
    if not args.distributed and any(v is None for v in given):
        raise input_error(
            "--coordinator/--num-processes/--process-id", "all three together",
            f"--coordinator={args.coordinator} --num-processes={args.num_processes} "
            f"--process-id={args.process_id}",
            "pass all three, or --distributed to let the cluster environment decide")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or 1):
        raise input_error("--process-id", f"an index in [0, {args.num_processes})",
                          str(args.process_id), "number the processes 0..N-1")
    import jax

    if args.distributed:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _data_file(argument: str, text: str, must_exist: bool) -> pathlib.Path:
    """The path of a .csv/.npy file given to ``argument``."""
    path = pathlib.Path(text).expanduser()
    if must_exist and not path.is_file():
        raise input_error(
            argument,
            "an existing .csv or .npy file",
            f"{text!r}, which does not exist",
            "pass the path of a file of features.",
        )
    if path.suffix.lower() not in _DATA_SUFFIXES:
        raise input_error(
            argument, "a .csv or .npy file", repr(text), "pass a path ending in .csv or .npy."
        )
    return path


def _output_file(argument: str, path: pathlib.Path) -> pathlib.Path:
    """A file the command will write: not a folder, in a folder that exists."""
    reason = None
    if path.is_dir():
        reason = "which is a directory"
    elif not path.parent.exists():
        reason = f"whose folder {str(path.parent)!r} does not exist"
    elif not path.parent.is_dir():
        reason = f"whose folder {str(path.parent)!r} is not a folder"
    if reason is not None:
        raise lock.unwritable_file(argument, path, reason)
    return path


def _run_folder(text: str) -> pathlib.Path:
    """The ``--workdir`` of a run, which must be a folder."""
    workdir = pathlib.Path(text).expanduser()
    if not workdir.is_dir():
        raise input_error(
            "--workdir",
            "the folder of a run written by `jaxdl train`",
            f"{text!r}, which is not a folder",
            "pass the --workdir that `jaxdl train` wrote to (it printed it).",
        )
    return workdir
