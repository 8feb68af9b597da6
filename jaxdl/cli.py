"""The `jaxdl` command: parse the command line, then call `jaxdl.run`.

Examples::

    jaxdl train                                  # the default experiment, into ./jaxdl_runs/...
    jaxdl train --config experiments/simplenet.py --workdir /tmp/run \\
        --config.optimizer.learning_rate=3e-4 --config.model.features "(64, 64, 1)"
    jaxdl predict --workdir /tmp/run --input x.csv --output predictions.csv

Exit codes: 0 success; 2 a usage or input error (one paragraph on stderr, no traceback);
1 an internal error (with its traceback); 130 interrupted.

This module imports neither JAX nor the rest of the kit at import time, so `jaxdl --help` is
instant; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from jaxdl.errors import JaxdlError, input_error

_OVERRIDE_PREFIX = "--config."
_DATA_SUFFIXES = (".csv", ".npy")

_EPILOG = """\
examples:
  jaxdl train                                   the default experiment, into ./jaxdl_runs/
  jaxdl train --config experiments/simplenet.py --workdir runs/a --config.epochs=20
  jaxdl predict --workdir runs/a --input x.csv --output predictions.csv

exit codes: 0 success, 2 usage or input error, 1 internal error, 130 interrupted.
"""

_TRAIN_EPILOG = """\
overrides:
  --config.KEY=VALUE or --config.KEY VALUE sets a dotted key of the config, e.g.
  --config.optimizer.learning_rate=3e-4  --config.model.features="(64, 64, 1)"
  --config.optimizer.name=sgd  --config.shuffle=false  --config.data.name="'123'"
  VALUE is a Python literal (never evaluated code); a bare word is a string.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `jaxdl` argument parser, with the ``train`` and ``predict`` subcommands.

    Returns:
        An ``argparse.ArgumentParser``; each subcommand sets ``func`` (the command to run) and
        ``command_parser`` (for its usage errors).
    """
    parser = argparse.ArgumentParser(
        prog="jaxdl",
        description="A JAX functional training kit: train an experiment config, predict "
        "with a trained run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        usage="jaxdl train [-h] [--config FILE] [--workdir DIR] [--quiet] [--config.KEY=VALUE ...]",
        help="train and evaluate an experiment config",
        description="Train and evaluate an experiment config (a Python file whose "
        "get_config() returns an ml_collections.ConfigDict).",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--config",
        metavar="FILE",
        help="experiment config file (default: the bundled simplenet experiment)",
    )
    train.add_argument(
        "--workdir",
        metavar="DIR",
        help="folder for checkpoints, metrics and config.json "
        "(default: ./jaxdl_runs/<config>-<UTC time>)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument("--coordinator", metavar="HOST:PORT",
                       help="multi-host: the address of process 0 (jax.distributed)")
    train.add_argument("--num-processes", metavar="N", type=_positive_int,
                       help="multi-host: how many processes take part")
    train.add_argument("--process-id", metavar="I", type=int,
                       help="multi-host: this process's index, 0..N-1")
    train.add_argument("--distributed", action="store_true",
                       help="multi-host with the cluster's own environment (SLURM, TPU pods, "
                       "...): jax.distributed.initialize() detects the rest")
    train.set_defaults(func=_cmd_train, command_parser=train)

    predict = commands.add_parser(
        "predict",
        help="predict with a trained run",
        description="Predict with the model trained in a run folder.",
    )
    predict.add_argument("--workdir", metavar="DIR", required=True, help="a run folder")
    predict.add_argument(
        "--input", metavar="FILE", required=True, help="features, a .csv or .npy file"
    )
    predict.add_argument(
        "--output", metavar="FILE", help="a .csv or .npy file (default: CSV on stdout)"
    )
    predict.add_argument(
        "--batch-size", metavar="N", type=_positive_int, help="examples per predict step"
    )
    predict.add_argument(
        "--member", metavar="I", type=int,
        help="a population run: predict with member I (default: the mean of all members)"
    )
    predict.set_defaults(func=_cmd_predict, command_parser=predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a run's newest good checkpoint",
        description="Evaluate the newest good checkpoint of a run on one of its data splits; "
        "prints one JSON line of metrics.",
    )
    evaluate.add_argument("--workdir", metavar="DIR", required=True, help="a run folder")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test",
                          help="which split of the run's data (default: test)")
    evaluate.set_defaults(func=_cmd_evaluate, command_parser=evaluate)

    sample = commands.add_parser(
        "sample",
        help="generate text with a trained language model",
        description="Continue a prompt with a run's language model (byte tokens, e.g. "
        "experiments/charlm.py); prints the prompt and the generated text.",
    )
    sample.add_argument("--workdir", metavar="DIR", required=True, help="a run folder")
    sample.add_argument("--prompt", default="def ", help="the text to continue (default 'def ')")
    sample.add_argument("--length", metavar="N", type=_positive_int, default=200,
                        help="bytes to generate (default 200)")
    sample.add_argument("--temperature", metavar="T", type=float, default=0.8,
                        help="softmax temperature, 0 for greedy (default 0.8)")
    sample.add_argument("--top-k", metavar="K", type=int, default=0,
                        help="sample among the K most likely bytes (default: all)")
    sample.add_argument("--seed", type=int, default=0, help="the sampling seed")
    sample.add_argument("--member", metavar="I", type=int,
                        help="a population run: the member to sample from (default: the best)")
    sample.set_defaults(func=_cmd_sample, command_parser=sample)

    explain = commands.add_parser(
        "explain",
        help="feature attributions of a trained run",
        description="Attribute a trained run's predictions to its input features: a CSV "
        "of per-feature attributions and a plot (bar chart for tables, heat map for images).",
    )
    explain.add_argument("--workdir", metavar="DIR", required=True, help="a run folder")
    explain.add_argument("--input", metavar="FILE", required=True,
                         help="raw features, a .csv or .npy file")
    explain.add_argument("--output-csv", metavar="FILE", help="attributions CSV (default: stdout)")
    explain.add_argument("--output-png", metavar="FILE", help="a .png plot (default: none)")
    explain.add_argument("--method", default="integrated_gradients",
                         help="integrated_gradients (default) or saliency")
    explain.add_argument("--steps", metavar="N", type=_positive_int, default=64,
                         help="integrated-gradients path steps (default 64)")
    explain.set_defaults(func=_cmd_explain, command_parser=explain)

    plot = commands.add_parser(
        "plot",
        help="plot training curves of runs",
        description="Draw loss and metric curves (train solid, val dashed; populations as "
        "bands) of one or more runs from their metrics.jsonl into an image.",
    )
    plot.add_argument("workdirs", metavar="WORKDIR", nargs="+", help="run folders")
    plot.add_argument("--output", "-o", metavar="FILE",
                      help="a .png/.svg/.pdf path (default: WORKDIR/curves.png of the first run)")
    plot.add_argument("--metrics", metavar="NAMES",
                      type=lambda t: [m for m in t.split(",") if m],
                      help="comma-separated names, e.g. loss,accuracy (default: all, loss first)")
    plot.set_defaults(func=_cmd_plot, command_parser=plot)

    summary = commands.add_parser(
        "summary",
        usage="jaxdl summary [-h] [--config FILE] [--config.KEY=VALUE ...]",
        help="print a config's model parameters without training",
        description="Print the parameter table of an experiment config's model (shapes, "
        "counts, bytes) from its abstract state: nothing is trained or allocated.",
    )
    summary.add_argument("--config", metavar="FILE", help="experiment config file")
    summary.set_defaults(func=_cmd_summary, command_parser=summary)

    data = commands.add_parser(
        "data",
        help="prepare on-disk records of a data set",
        description="Data sets as on-disk records (one .npy per field plus meta.json), read "
        "by jaxdl.data.open_records and the grain Pipeline.",
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = data_commands.add_parser(
        "prepare",
        help="write a bundled data set or the text corpus as records",
        description="Write OUT/train, OUT/val and OUT/test (or the --split given) as records: "
        "a bundled set split and standardized as jaxdl.data.load does, or 'text', next-byte "
        "windows of the Python standard library's source. Prints one JSON line.",
    )
    prepare.add_argument("--dataset", required=True, metavar="NAME",
                         help="breast_cancer, iris, wine, digits, diabetes, or text")
    prepare.add_argument("--out", metavar="DIR", required=True,
                         help="parent folder of the split folders")
    prepare.add_argument("--split", choices=("train", "val", "test", "all"), default="all",
                         help="which split to write (default: all three)")
    prepare.add_argument("--seed", type=int, default=0,
                         help="bundled sets: the seed of the split (default 0)")
    prepare.add_argument("--images", action="store_true",
                         help="digits: x as [n, 8, 8, 1] pixels in [0, 1]")
    prepare.add_argument("--seq-len", metavar="T", type=_positive_int, default=128,
                         help="text: bytes per window (default 128)")
    prepare.add_argument("--stride", metavar="S", type=_positive_int,
                         help="text: step between windows (default: T, no overlap)")
    prepare.add_argument("--max-bytes", metavar="N", type=_positive_int,
                         help="text: cap on the train split's bytes (default: all)")
    prepare.add_argument("--overwrite", action="store_true",
                         help="replace records already in the split folders")
    prepare.add_argument("--debug", action="store_true",
                         help="show the traceback of an error too")
    prepare.set_defaults(func=_cmd_data_prepare, command_parser=prepare)
    for sub in (train, predict, evaluate, sample, explain, plot, summary):
        sub.add_argument("--debug", action="store_true",
                         help="show the traceback of an error too")
    return parser


def split_overrides(tokens: Sequence[str], error: Callable[[str], NoReturn]) -> dict[str, str]:
    """Collects ``--config.KEY=VALUE`` and ``--config.KEY VALUE`` tokens into a dict.

    Args:
        tokens: the arguments argparse did not recognise, in command-line order.
        error: called with a message for anything else (argparse's ``parser.error``).

    Returns:
        ``{"optimizer.learning_rate": "3e-4", ...}``; a key given twice keeps the last value.

    Example:
        >>> split_overrides(["--config.a.b=1", "--config.c", "x"], print)
        {'a.b': '1', 'c': 'x'}
    """
    overrides: dict[str, str] = {}
    unknown: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith(_OVERRIDE_PREFIX):
            unknown.append(token)
            continue
        key, has_value, value = token[len(_OVERRIDE_PREFIX) :].partition("=")
        if not key or not all(key.split(".")):
            error(f"argument {token}: expected --config.KEY=VALUE with a dotted KEY")
        if not has_value:
            if i >= len(tokens) or tokens[i].startswith("--"):
                error(f"argument --config.{key}: expected a value (--config.{key}=VALUE)")
            value = tokens[i]
            i += 1
        overrides[key] = value
    if unknown:
        error(f"unrecognized arguments: {' '.join(unknown)}")
    return overrides


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses a `jaxdl` command line.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The namespace, with ``overrides`` (a dict of dotted key -> value text) for ``train``.

    Raises:
        SystemExit: code 2 on a usage error (argparse prints it), 0 after ``--help``.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("train", "summary"):
        args.overrides = split_overrides(extra, args.command_parser.error)
    elif extra:
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _default_workdir(stem: str) -> pathlib.Path:
    """``./jaxdl_runs/<stem>-<UTC time>``, with a counter if that folder exists."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    workdir = pathlib.Path("jaxdl_runs") / f"{stem}-{stamp}"
    n = 2
    while workdir.exists():
        workdir = pathlib.Path("jaxdl_runs") / f"{stem}-{stamp}-{n}"
        n += 1
    return workdir


def _cmd_train(args: argparse.Namespace) -> int:
    """`jaxdl train`: load and override the config, then ``run.train_and_evaluate``."""
    from jaxdl import config as config_lib

    config_path = pathlib.Path(args.config) if args.config else config_lib.default_config_path()
    config = config_lib.apply_overrides(config_lib.load_config(config_path), args.overrides)

    if args.workdir is None:
        workdir = _default_workdir(config_path.stem)
        print(f"jaxdl: writing the run to {workdir}", file=sys.stderr)
    else:
        workdir = pathlib.Path(args.workdir).expanduser()
        if workdir.exists() and not workdir.is_dir():
            raise input_error(
                "--workdir",
                "a folder (new, or a run to resume)",
                f"{str(workdir)!r}, an existing file",
                "pass a folder path, or leave --workdir out for a fresh folder in ./jaxdl_runs.",
            )

    from jaxdl.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    _initialize_distributed(args)
    import jax

    from jaxdl import run

    quiet = args.quiet or jax.process_index() != 0  # one console, the first process's
    run.train_and_evaluate(config, workdir.absolute(), quiet=quiet)
    return 0


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


def _cmd_explain(args: argparse.Namespace) -> int:
    """`jaxdl explain`: attributions of a run's predictions on a .csv/.npy file."""
    workdir = _run_folder(args.workdir)
    input_path = _data_file("--input", args.input, must_exist=True)
    out_csv = None if args.output_csv in (None, "-") else pathlib.Path(args.output_csv).expanduser()
    out_png = None if args.output_png is None else pathlib.Path(args.output_png).expanduser()
    from jaxdl.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    from jaxdl import explain_report

    explain_report.explain_workdir(workdir.absolute(), input_path, out_csv, out_png,
                                   method=args.method, steps=args.steps)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    """`jaxdl plot`: curves of runs into an image."""
    from jaxdl.plot import main_plot

    return main_plot(args.workdirs, args.output, args.metrics)


def _cmd_summary(args: argparse.Namespace) -> int:
    """`jaxdl summary`: the parameter table of a config's model, without training."""
    from jaxdl import config as config_lib

    config_path = pathlib.Path(args.config) if args.config else config_lib.default_config_path()
    config = config_lib.apply_overrides(config_lib.load_config(config_path), args.overrides)
    from jaxdl import summary

    print(summary.summarize(config))
    return 0


def _data_file(argument: str, text: str, must_exist: bool) -> pathlib.Path:
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


def _run_folder(text: str) -> pathlib.Path:
    workdir = pathlib.Path(text).expanduser()
    if not workdir.is_dir():
        raise input_error(
            "--workdir",
            "the folder of a run written by `jaxdl train`",
            f"{text!r}, which is not a folder",
            "pass the --workdir that `jaxdl train` wrote to (it printed it).",
        )
    return workdir


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """`jaxdl evaluate`: metrics of the newest good checkpoint, as one JSON line."""
    import json

    workdir = _run_folder(args.workdir)
    from jaxdl.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    from jaxdl import run

    results = run.evaluate_from_workdir(workdir.absolute(), args.split)
    print(json.dumps({"split": args.split, **results}))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    """`jaxdl sample`: text from a run's language model."""
    workdir = _run_folder(args.workdir)
    from jaxdl.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    from jaxdl import run

    print(run.sample_from_workdir(workdir.absolute(), args.prompt, num_tokens=args.length,
                                  temperature=args.temperature, top_k=args.top_k,
                                  seed=args.seed, member=args.member))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """`jaxdl predict`: ``run.predict_from_workdir`` on a .csv/.npy file."""
    workdir = _run_folder(args.workdir)
    input_path = _data_file("--input", args.input, must_exist=True)
    output_path = None
    if args.output not in (None, "-"):
        output_path = _data_file("--output", args.output, must_exist=False)

    from jaxdl.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    from jaxdl import run

    run.predict_from_workdir(workdir.absolute(), input_path, output_path, args.batch_size,
                             member=args.member)
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    """`jaxdl data prepare`: a data set as records under --out, one JSON line of what was
    written."""
    import json

    from jaxdl.data import prepare

    splits = ("train", "val", "test") if args.split == "all" else (args.split,)
    if args.dataset == "text":
        options = dict(seq_len=args.seq_len, stride=args.stride, max_bytes=args.max_bytes)
    else:
        options = dict(seed=args.seed, images=args.images)
    written = prepare.prepare(args.dataset, pathlib.Path(args.out).expanduser(), splits,
                              overwrite=args.overwrite, **options)
    print(json.dumps({"dataset": args.dataset, "splits": {
        split: {"dir": str(r.directory), "num_examples": len(r),
                "fields": {k: {"shape": list(s.shape), "dtype": s.dtype.name}
                           for k, s in r.fields.items()}}
        for split, r in written.items()}}))
    return 0


def _report(exc: BaseException) -> None:
    """One paragraph on stderr: ``jaxdl: error: <message>``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"jaxdl: error: {text}", file=sys.stderr)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `jaxdl` command.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success; 2 usage or input error (a ``JaxdlError`` or a missing file,
        reported in one paragraph without a traceback); 1 any other exception (an internal
        error, reported with its traceback); 130 on Ctrl-C.
    """
    args = None
    try:
        args = parse_args(argv)
        return args.func(args)
    except SystemExit as exc:  # argparse: --help, usage errors
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("jaxdl: interrupted", file=sys.stderr)
        return 130
    except (JaxdlError, FileNotFoundError) as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        _report(exc)
        return getattr(exc, "exit_code", 2)  # a preempted run: 128 + signal
    except Exception:
        traceback.print_exc()
        print(
            "jaxdl: internal error: the traceback above is a bug in jaxdl or a library it uses; "
            "please report it.",
            file=sys.stderr,
        )
        return 1
