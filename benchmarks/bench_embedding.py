"""Embedding throughput and the cost of cross-validation with the embedding cache.

Prints one JSON object:

(a) ``throughput``: items per second of ``MultimodalExpertEmbedder`` (no disk
    cache, and a cold disk cache) against a plain hand-written batched loop over
    the same loaded models and items, in the same process. Target ratio >= 1.0.
(b) ``cross_validation``: wall time of 5-fold ``cross_val_score`` of
    ``Pipeline(embedder, LogisticRegression)`` with a cold cache, divided by the
    wall time of one cold embedding pass of the same data. Target <= 1.3.

The experts are the offline presets ``efficientnet_lite0`` and
``all-MiniLM-L6-v2`` when their weight packages are installed, else tiny random
models. Images are generated PNG files, texts generated sentences.

Usage::

    python benchmarks/bench_embedding.py            # about 2-4 minutes on 2 cores
    python benchmarks/bench_embedding.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.experts import ImageExpert, TextExpert, find_preset

WORDS = (
    "no evidence of acute cardiopulmonary disease normal chest heart size lungs clear "
    "pneumonia effusion pleural consolidation opacity right left lower lobe mild moderate "
    "severe possible likely patient history cough fever pain shortness breath"
).split()


def write_tiny_bert(directory: Path) -> str:
    """A two-layer random BERT, for machines without the MiniLM weights."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return str(directory)


def make_experts(workdir: Path):
    lite0, minilm = find_preset("efficientnet_lite0"), find_preset("all-MiniLM-L6-v2")
    if lite0 is not None and lite0.is_available():
        image = ImageExpert("efficientnet_lite0")
    else:
        image = ImageExpert("test_efficientnet", pretrained=False)
    if minilm is not None and minilm.is_available():
        text = TextExpert("all-MiniLM-L6-v2")
    else:
        text = TextExpert(write_tiny_bert(workdir / "tiny_bert"), name="tiny-bert")
    return image, text


def make_data(workdir: Path, n: int, size: int, seed: int = 0):
    """n generated grayscale PNG scans, n short reports, two lab values, a label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    (workdir / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.03 * y[i]))
        image = 80 + 120 * blob + rng.normal(0, 12, (size, size))
        path = workdir / "images" / f"scan_{i:04d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    texts = [
        " ".join(rng.choice(WORDS, rng.integers(8, 40)))
        + (" pleural effusion" if y[i] else " lungs clear")
        for i in range(n)
    ]
    frame = pd.DataFrame(
        {
            "image": paths,
            "report": texts,
            "age": rng.normal(60, 12, n).round(),
            "heart_rate": rng.normal(80, 10, n) + 5 * y,
        }
    )
    return frame, y


# -- (a) throughput ------------------------------------------------------------
def hand_loop(image_expert, text_expert, frame, batch_size: int) -> np.ndarray:
    """What a user would write by hand: decode, batch, run, pool."""
    image_model = image_expert._get_model("cpu")
    text_model = text_expert._get_model("cpu")
    out_images, out_texts = [], []
    paths, texts = frame["image"].tolist(), frame["report"].tolist()
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack(
                [
                    image_model.transform(Image.open(p).convert("RGB"))
                    for p in paths[start : start + batch_size]
                ]
            )
            out_images.append(image_model.module(batch).numpy())
        for start in range(0, len(texts), batch_size):
            encoded = text_model.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True,
                max_length=text_model.max_length, return_tensors="pt",
            )
            hidden = text_model.module(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            out_texts.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.hstack([np.concatenate(out_images), np.concatenate(out_texts)])


def embedder_for(image_expert, text_expert, cache_dir, batch_size: int, **kwargs):
    return MultimodalExpertEmbedder(
        [("xray", [image_expert], "image"), ("report", [text_expert], "report")],
        cache_dir=cache_dir, device="cpu", batch_size=batch_size, **kwargs,
    )


def bench_throughput(image_expert, text_expert, frame, batch_size, repeats, workdir):
    # Warm up: load both models once, outside the timings.
    hand_loop(image_expert, text_expert, frame.iloc[:batch_size], batch_size)
    n = len(frame)
    times = {"hand_loop": [], "embedder_no_cache": [], "embedder_cold_cache": []}
    reference = None
    for r in range(repeats):  # interleaved, so machine noise hits all three alike
        t0 = time.perf_counter()
        reference = hand_loop(image_expert, text_expert, frame, batch_size)
        times["hand_loop"].append(time.perf_counter() - t0)

        embedder = embedder_for(image_expert, text_expert, None, batch_size).fit(frame)
        t0 = time.perf_counter()
        ours = embedder.transform(frame)
        times["embedder_no_cache"].append(time.perf_counter() - t0)

        cold = embedder_for(image_expert, text_expert, workdir / f"cache_a{r}", batch_size)
        cold.fit(frame)
        t0 = time.perf_counter()
        cold.transform(frame)
        times["embedder_cold_cache"].append(time.perf_counter() - t0)
    max_abs_diff = float(np.nanmax(np.abs(ours - reference)))
    best = {k: min(v) for k, v in times.items()}
    return {
        "n_items_per_modality": n,
        "batch_size": batch_size,
        "seconds_best_of_repeats": {k: round(v, 3) for k, v in best.items()},
        "items_per_second": {k: round(2 * n / v, 1) for k, v in best.items()},
        "ratio_embedder_no_cache_vs_hand_loop": round(
            best["hand_loop"] / best["embedder_no_cache"], 3
        ),
        "ratio_embedder_cold_cache_vs_hand_loop": round(
            best["hand_loop"] / best["embedder_cold_cache"], 3
        ),
        "ratio_median_no_cache": round(
            statistics.median(times["hand_loop"])
            / statistics.median(times["embedder_no_cache"]),
            3,
        ),
        "max_abs_diff_vs_hand_loop": max_abs_diff,
        "target": "ratio >= 1.0",
    }


# -- (b) cross-validation ----------------------------------------------------------
def full_embedder(cache_dir, batch_size: int, models):
    image_expert, text_expert = models
    return MultimodalExpertEmbedder(
        [
            ("xray", [clone(image_expert)], "image"),
            ("report", [clone(text_expert)], "report"),
            ("labs", StandardScaler(), ["age", "heart_rate"]),
        ],
        cache_dir=cache_dir, device="cpu", batch_size=batch_size,
    )


def bench_cross_validation(models, frame, y, batch_size, workdir):
    # One cold pass: fresh experts (the model load is part of it), empty cache.
    t0 = time.perf_counter()
    full_embedder(workdir / "cache_b_pass", batch_size, models).fit_transform(frame)
    t_pass = time.perf_counter() - t0

    pipe = Pipeline(
        [
            ("embed", full_embedder(workdir / "cache_b_cv", batch_size, models)),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    t0 = time.perf_counter()
    scores = cross_val_score(
        pipe, frame, y, cv=KFold(5, shuffle=True, random_state=0), scoring="roc_auc"
    )
    t_cv = time.perf_counter() - t0
    return {
        "n_rows": len(frame),
        "seconds_one_cold_pass": round(t_pass, 3),
        "seconds_5fold_cv_cold_cache": round(t_cv, 3),
        "ratio_cv_vs_one_pass": round(t_cv / t_pass, 3),
        "roc_auc_mean": round(float(np.mean(scores)), 3),
        "target": "ratio <= 1.3",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few items, one repeat")
    parser.add_argument("--n", type=int, default=None, help="rows (default 256, quick 48)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None, help="default 3, quick 1")
    args = parser.parse_args(argv)
    n = args.n or (48 if args.quick else 256)
    repeats = args.repeats or (1 if args.quick else 3)

    with tempfile.TemporaryDirectory(prefix="medmix-bench-") as tmp:
        workdir = Path(tmp)
        image_expert, text_expert = make_experts(workdir)
        frame, y = make_data(workdir, n, args.image_size)
        result = {
            "benchmark": "bench_embedding",
            "quick": args.quick,
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "device": "cpu",
            },
            "experts": {"image": image_expert.name, "text": text_expert.name},
            "throughput": bench_throughput(
                image_expert, text_expert, frame, args.batch_size, repeats, workdir
            ),
            "cross_validation": bench_cross_validation(
                (image_expert, text_expert), frame, y, args.batch_size, workdir
            ),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
