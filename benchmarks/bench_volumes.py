"""Volume experts benchmark: a 2.5-D EfficientNet-Lite and a 3-D CT backbone, alone and fused.

One command::

    .venv/bin/python benchmarks/bench_volumes.py            # -> docs/benchmarks/volumes.{md,json}
    .venv/bin/python benchmarks/bench_volumes.py --quick    # -> benchmarks/out/quick/volumes.{md,json}

Data: generated CT phantoms (``make_phantom_volume``), 64^3 voxels of 1.5 mm,
written as NIfTI files: a box of soft tissue (40 HU, noise sd 20 HU) in air,
holding one lesion sphere and 0-3 small calcifications (400 HU, radius 3 mm)
at random places. The lesion's radius is ``8 + 2 z_r`` mm and its density
``70 + 25 z_d`` HU with z_r, z_d standard normal; the label is
``z_r + z_d + 0.5 e > 0`` (e standard normal), so the label lives half in the
lesion's size and half in its density.

Experts (embedded once each, in a child process of its own that reports its
peak resident memory; single torch thread; no embedding cache, so the time is
the real cost):

* ``lite0-2.5d``: ``VolumeExpert(ImageExpert("efficientnet_lite0"),
  n_slices=8, window="soft_tissue")``, ImageNet weights on 8 axial slices,
  mean-pooled;
* ``astra-3d``: ``VolumeExpert("ct_i3resnet152_astra", input_shape=(32, 64, 64))``:
  the preset's documented resampling (3 x 1.5 x 1.5 mm) and window
  (-1000..1000 HU), but the resampled volume (32 x 64 x 64) is kept as is
  instead of being padded to 160 x 224 x 224 (which costs about a minute per
  volume on one CPU thread; the network pools globally, so it takes any size).

Evaluation: ``MedMIXClassifier`` (defaults, ``random_state`` per seed) on each
expert's block alone and on both as two experts of one modality (the gate
fuses them), plus a logistic regression on the standardised concatenation as a
baseline; stratified 5-fold CV x 2 seeds, the same folds for every method;
AUROC mean and std over the 10 folds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPE = (64, 64, 64)
SPACING = (1.5, 1.5, 1.5)
EXPERTS = ("lite0-2.5d", "astra-3d")


def make_expert(name: str):
    from medmix_sklearn.experts import ImageExpert, VolumeExpert

    if name == "lite0-2.5d":
        return VolumeExpert(
            ImageExpert("efficientnet_lite0"), n_slices=8, window="soft_tissue", name=name
        )
    if name == "astra-3d":
        return VolumeExpert("ct_i3resnet152_astra", input_shape=(32, 64, 64), name=name)
    raise ValueError(name)


def make_data(n: int, folder: str, seed: int = 0):
    import nibabel

    from medmix_sklearn.datasets import make_phantom_volume

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    extent = np.array(SHAPE) * np.array(SPACING)
    paths, labels, truth = [], [], []
    for i in range(n):
        z_r, z_d, e = rng.standard_normal(3)
        radius = float(np.clip(8 + 2 * z_r, 3.0, 14.0))
        density = float(70 + 25 * z_d)
        center = rng.uniform(0.3, 0.7, size=3) * extent
        spheres = [(tuple(center), radius, density)]
        for _ in range(int(rng.integers(0, 4))):
            spheres.append((tuple(rng.uniform(0.2, 0.8, size=3) * extent), 3.0, 400.0))
        volume = make_phantom_volume(
            SHAPE, SPACING, spheres=spheres[1:] + spheres[:1], noise_sd=20.0,
            random_state=int(rng.integers(1 << 31)),
        )
        # Store in RAS order with a diagonal affine, as most NIfTI writers do.
        data = np.transpose(volume, (2, 1, 0))[::-1, ::-1, :]
        path = os.path.join(folder, f"ct{i:04d}.nii.gz")
        sx = SPACING[2]
        nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data.astype(np.int16)),
                                         np.diag([sx, SPACING[1], SPACING[0], 1.0])), path)
        paths.append(path)
        labels.append(int(z_r + z_d + 0.5 * e > 0))
        truth.append((radius, density))
    return paths, np.array(labels), np.array(truth)


def embed_child(name: str, paths_file: str, out_file: str) -> None:
    """Embed every volume with one expert; write embeddings, time and peak memory."""
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    with open(paths_file) as fh:
        paths = json.load(fh)
    expert = make_expert(name)
    embedder = MultimodalExpertEmbedder(
        [("ct", [expert], "ct")], cache_dir=None, device="cpu", batch_size=4
    )
    frame = pd.DataFrame({"ct": paths})
    start = time.perf_counter()
    embedder.fit(frame.iloc[:1])  # loads nothing heavy; checks the layout
    load_start = time.perf_counter()
    expert._get_model("cpu")
    load_s = time.perf_counter() - load_start
    start = time.perf_counter()
    out = np.asarray(embedder.transform(frame), dtype=np.float32)
    seconds = time.perf_counter() - start
    np.save(out_file, out)
    with open(out_file + ".json", "w") as fh:
        json.dump({
            "seconds": seconds,
            "load_seconds": load_s,
            "n": len(paths),
            "volumes_per_s": len(paths) / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "dim": int(expert.output_dim),
            "columns": list(embedder.get_feature_names_out()),
        }, fh)


def evaluate(blocks: dict, y: np.ndarray, n_splits: int, seeds: list[int]) -> dict:
    import pandas as pd
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medmix_sklearn import MedMIXClassifier

    frames = {k: pd.DataFrame(v["X"], columns=v["columns"]) for k, v in blocks.items()}
    both = pd.concat([frames[k] for k in EXPERTS], axis=1)
    settings = {**{f"MedMIX {k} alone": frames[k] for k in EXPERTS}, "MedMIX fused": both}
    scores: dict[str, list[float]] = {m: [] for m in [*settings, "logistic fused"]}
    for seed in seeds:
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(both, y)
        for train, test in folds:
            for method, X in settings.items():
                model = MedMIXClassifier(random_state=seed, device="cpu")
                model.fit(X.iloc[train], y[train])
                proba = model.predict_proba(X.iloc[test])[:, 1]
                scores[method].append(roc_auc_score(y[test], proba))
            base = make_pipeline(SimpleImputer(), StandardScaler(),
                                 LogisticRegression(C=0.1, max_iter=2000))
            base.fit(both.values[train], y[train])
            scores["logistic fused"].append(
                roc_auc_score(y[test], base.predict_proba(both.values[test])[:, 1])
            )
    return {m: {"mean": float(np.mean(s)), "std": float(np.std(s)), "folds": s}
            for m, s in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 volumes, 3 folds x 1 seed")
    parser.add_argument("--n", type=int, default=None, help="number of volumes")
    parser.add_argument("--embed-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--render", metavar="JSON", help="rewrite the .md next to a results .json")
    args = parser.parse_args()
    if args.embed_child:
        embed_child(*args.embed_child)
        return
    if args.render:
        with open(args.render) as fh:
            result = json.load(fh)
        with open(os.path.splitext(args.render)[0] + ".md", "w") as fh:
            fh.write(render(result))
        return
    import torch

    torch.set_num_threads(1)
    from _common import machine_description

    n = args.n or (40 if args.quick else 160)
    n_splits, seeds = (3, [0]) if args.quick else (5, [0, 1])
    out_dir = os.path.join(ROOT, "benchmarks", "out", "quick") if args.quick else os.path.join(
        ROOT, "docs", "benchmarks")
    work = os.path.join(ROOT, "benchmarks", "out", "volumes")
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    paths, y, truth = make_data(n, os.path.join(work, "nifti"))
    paths_file = os.path.join(work, "paths.json")
    with open(paths_file, "w") as fh:
        json.dump(paths, fh)
    blocks, speed = {}, {}
    for name in EXPERTS:
        out_file = os.path.join(work, f"{name}.npy")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--embed-child", name,
                        paths_file, out_file], check=True)
        with open(out_file + ".json") as fh:
            info = json.load(fh)
        blocks[name] = {"X": np.load(out_file), "columns": info.pop("columns")}
        speed[name] = info
        print(f"{name}: {info['volumes_per_s']:.2f} volumes/s, peak {info['peak_rss_mib']:.0f} MiB",
              flush=True)
    scores = evaluate(blocks, y, n_splits, seeds)
    command = "python benchmarks/bench_volumes.py" + (" --quick" if args.quick else "")
    result = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "n_volumes": n,
        "positive_rate": float(y.mean()),
        "folds": n_splits,
        "seeds": seeds,
        "speed": speed,
        "auroc": scores,
        "wall_seconds": time.perf_counter() - started,
    }
    with open(os.path.join(out_dir, "volumes.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(out_dir, "volumes.md"), "w") as fh:
        fh.write(render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [
        "# Volume experts: 2.5-D EfficientNet-Lite and a 3-D CT backbone",
        "",
        f"Generated by `{r['command']}` on {r['date']} ({r['machine']}); "
        f"{r['wall_seconds'] / 60:.1f} min wall. What the data and the experts are: the "
        "docstring of [`bench_volumes.py`](../../benchmarks/bench_volumes.py).",
        "",
        f"{r['n_volumes']} phantom CT volumes (64^3 voxels of 1.5 mm, NIfTI), "
        f"{r['positive_rate']:.0%} positive; the label lives in a lesion's size and density. "
        f"Stratified {r['folds']}-fold CV x {len(r['seeds'])} seeds, the same folds for "
        "every method; AUROC mean and std over the folds.",
        "",
        "## AUROC",
        "",
        "| method | AUROC | std |",
        "| --- | --- | --- |",
    ]
    for method, s in r["auroc"].items():
        lines.append(f"| {method} | {s['mean']:.3f} | {s['std']:.3f} |")
    fused = np.array(r["auroc"]["MedMIX fused"]["folds"])
    for name in EXPERTS:
        alone = np.array(r["auroc"][f"MedMIX {name} alone"]["folds"])
        diff = fused - alone
        lines.append("")
        lines.append(
            f"Fused minus {name} alone, fold by fold: {diff.mean():+.3f} (std {diff.std():.3f}); "
            f"fused ahead on {int((diff > 0).sum())} of {len(diff)} folds."
        )
    lines += [
        "",
        "## Embedding cost (CPU, one torch thread)",
        "",
        "| expert | width | volumes/s | model load (s) | peak memory (MiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in r["speed"].items():
        lines.append(f"| {name} | {s['dim']} | {s['volumes_per_s']:.2f} | "
                     f"{s['load_seconds']:.1f} | {s['peak_rss_mib']:.0f} |")
    lines += [
        "",
        "Throughput counts reading the NIfTI file, resampling, windowing and the model; "
        "peak memory is the resident size of the process that embedded with that expert "
        "alone (Python, torch and the model included).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
