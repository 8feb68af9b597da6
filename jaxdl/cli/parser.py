"""The `jaxdl` argument parser: one small function per subcommand, and the override tokens.

Each subcommand sets three defaults: ``prepare`` (a function of :mod:`jaxdl.cli.commands`),
``command_parser`` (for its usage errors) and ``uses_cache`` (whether ``main`` turns JAX's
persistent compilation cache on before the command runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

from jaxdl.cli import commands

_OVERRIDE_PREFIX = "--config."

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


def _finish(sub: argparse.ArgumentParser, prepare: commands.Prepare, uses_cache: bool) -> None:
    """Adds ``--debug`` (last in every command's help) and the command's defaults."""
    sub.add_argument("--debug", action="store_true", help="show the traceback of an error too")
    sub.set_defaults(prepare=prepare, command_parser=sub, uses_cache=uses_cache)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
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
    _finish(train, commands.train, uses_cache=True)


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
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
    _finish(predict, commands.predict, uses_cache=True)


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a run's newest good checkpoint",
        description="Evaluate the newest good checkpoint of a run on one of its data splits; "
        "prints one JSON line of metrics.",
    )
    evaluate.add_argument("--workdir", metavar="DIR", required=True, help="a run folder")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test",
                          help="which split of the run's data (default: test)")
    _finish(evaluate, commands.evaluate, uses_cache=True)


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    sample = subparsers.add_parser(
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
    _finish(sample, commands.sample, uses_cache=True)


def _steps(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got {text!r}"
                                         ) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


_EXPLAIN_EPILOG = """\
methods: integrated_gradients (default), expected_gradients (GradientSHAP over training
  rows), gradient_x_input, saliency, smoothgrad (noise tunnel over saliency), occlusion.
What is explained: each row's --target output, as a logit (--probabilities: probability),
  in the run's normalized input space; the baseline is zeros there (the training mean of
  a standardized run) unless --baseline. The CSV leads with row, target, output,
  reference, gap (sum of attributions - (output - reference)), relative_gap and steps;
  a JSON sidecar (next to --output-csv) records the settings. See docs/explain.md.
"""


def _add_explain(subparsers: argparse._SubParsersAction) -> None:
    explain = subparsers.add_parser(
        "explain",
        help="feature attributions of a trained run",
        description="Attribute a trained run's predictions to its input features: a CSV "
        "of per-feature attributions, a JSON record of what was explained, and a plot "
        "(per target class: bar chart for tables, heat map for images).",
        epilog=_EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = explain.add_argument
    add("--workdir", metavar="DIR", required=True, help="a run folder")
    add("--input", metavar="FILE", required=True,
        help="raw features, a .csv or .npy file (image runs: flat pixels per CSV row)")
    add("--output-csv", metavar="FILE", help="attributions CSV (default: stdout)")
    add("--output-png", metavar="FILE", help="a .png plot (default: none)")
    add("--output-json", metavar="FILE",
        help="what was explained, as JSON (default: the CSV's path with .json; none on stdout)")
    add("--method", default="integrated_gradients", help="see below (default "
        "integrated_gradients)")
    add("--target", default="predicted", metavar="WHICH",
        help="predicted (default), true (needs --labels), all (one row per class) or a "
        "class index")
    add("--labels", metavar="FILE", help="one class index per input row, .csv or .npy")
    add("--probabilities", action="store_true", help="explain probabilities, not logits")
    add("--baseline", metavar="B", help="zeros (default), median (of the training rows), "
        "train (expected_gradients' default: 100 training rows) or a .csv/.npy of raw row(s)")
    add("--steps", metavar="N", type=_steps, default=64,
        help="integrated-gradients path steps, or auto (default 64)")
    add("--tolerance", metavar="T", type=_positive_float, default=0.01,
        help="--steps auto: the largest relative completeness gap per row (default 0.01)")
    add("--max-steps", metavar="N", type=_positive_int, default=1024,
        help="--steps auto: the cap (default 1024)")
    add("--samples", metavar="N", type=_positive_int, default=64,
        help="expected_gradients / smoothgrad draws per row (default 64)")
    add("--stdev", metavar="S", type=_positive_float,
        help="input noise: smoothgrad's (default 0.15), GradientSHAP's for "
        "expected_gradients (default none), in normalized input units")
    add("--window", metavar="K", type=_positive_int, default=2,
        help="occlusion: the window (default 2: 2x2 pixels, 2 columns)")
    add("--stride", metavar="S", type=_positive_int, default=1,
        help="occlusion: the step between windows (default 1)")
    add("--seed", type=int, default=0, help="random draws (expected_gradients, smoothgrad)")
    add("--batch-size", metavar="N", type=_positive_int, default=256,
        help="rows per compiled program (default 256)")
    add("--member", metavar="I", type=int,
        help="a population run: explain member I (default: the best member)")
    _finish(explain, commands.explain, uses_cache=True)


def _add_plot(subparsers: argparse._SubParsersAction) -> None:
    plot = subparsers.add_parser(
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
    _finish(plot, commands.plot, uses_cache=False)


def _add_summary(subparsers: argparse._SubParsersAction) -> None:
    summary = subparsers.add_parser(
        "summary",
        usage="jaxdl summary [-h] [--config FILE] [--config.KEY=VALUE ...]",
        help="print a config's model parameters without training",
        description="Print the parameter table of an experiment config's model (shapes, "
        "counts, bytes) from its abstract state: nothing is trained or allocated.",
    )
    summary.add_argument("--config", metavar="FILE", help="experiment config file")
    _finish(summary, commands.summary, uses_cache=False)


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
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
    _finish(prepare, commands.data_prepare, uses_cache=False)


_SUBCOMMANDS = (_add_train, _add_predict, _add_evaluate, _add_sample, _add_explain, _add_plot,
                _add_summary, _add_data)


def build_parser() -> argparse.ArgumentParser:
    """The `jaxdl` argument parser, with one subcommand per command (``data`` has ``prepare``).

    Returns:
        An ``argparse.ArgumentParser``; each subcommand sets ``prepare`` (checks the arguments
        and returns the command's work), ``command_parser`` (for its usage errors) and
        ``uses_cache`` (whether the command runs with the compilation cache).
    """
    parser = argparse.ArgumentParser(
        prog="jaxdl",
        description="A JAX functional training kit: train an experiment config, predict "
        "with a trained run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_subcommand in _SUBCOMMANDS:
        add_subcommand(subparsers)
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
        The namespace, with ``overrides`` (a dict of dotted key -> value text) for ``train``
        and ``summary``.

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
