"""Check the GPU path end to end on a machine with CUDA.

1. Agreement: a few hundred generated images and texts embedded on the CPU and
   on the GPU. The embedder's float32 GPU path (``precision="float32"``: no
   autocast, TF32 off) must match the CPU within 1e-4 relative difference per
   item (``||gpu - cpu|| / ||cpu||``, scale-free: random networks give features
   of order 1e-5); its ``precision="autocast"`` path (bfloat16 where
   supported) within 2e-2 of cosine distance per item. The float32 hand loop with
   PyTorch's default TF32 convolutions is reported beside them.
2. Speed: the embedder (decode threads, batches) under autocast against a
   hand-written CUDA loop with the same batch size and precision, twice:
   decoding inline (the naive loop) and on pre-decoded tensors (the model
   alone: a lower bound); then the embedder and the model alone in float32
   (the default precision), which is what choosing autocast saves.
3. ``Pipeline(embedder, MedMIXClassifier)`` trained on the GPU at each
   precision, saved, and loaded and used for prediction in a separate
   CPU-only process (``CUDA_VISIBLE_DEVICES=""``). Checks, within 1e-4 of
   probability: the loaded classifier on the GPU's embeddings gives the GPU
   model's probabilities; the loaded pipeline (its experts now on the CPU)
   gives the classifier's probabilities on the CPU's embeddings; and with
   ``precision="float32"`` the CPU pipeline gives the GPU pipeline's
   probabilities. With ``precision="autocast"`` the last difference (autocast
   against float32 embeddings) is reported, not checked.

Experts (``--models``): ``random`` (the default) builds randomly initialised
networks of real size, nothing downloaded: timm's ``efficientnet_b0``
(``pretrained=False``, 224 px) and a BERT of MiniLM-L6's shape (6 layers,
hidden 384) from its config; ``tiny``, a tiny timm network and a 2-layer BERT
of hidden size 32 (how the test suite runs it); ``auto``, for each expert the
offline preset (``efficientnet_lite0``, ``all-MiniLM-L6-v2``) when its weight
package is installed (the ``weights`` extra), else the random network of real
size. The hub is never contacted.

Run on a machine with CUDA (one command, well under 10 minutes on one GPU)::

    python benchmarks/gpu_check.py --out gpu_check.json

Without CUDA it says so and exits with status 0; ``--cpu-only`` then runs every
CPU part of the check (the same steps with the CPU standing in for the GPU),
which is how it is tested on machines without a GPU. Exit status 1 when a check
fails. ``--out`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# Nothing is downloaded: every model is built here or installed already.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FLOAT32_TOL = 1e-4
AUTOCAST_COSINE_TOL = 2e-2


_WORDS = ("no evidence of acute cardiopulmonary disease normal heart size lungs clear "
          "pneumonia pleural effusion mild opacity right left upper lower lobe chest "
          "stable unchanged small large consolidation atelectasis edema").split()


def _write_bert(directory: str, *, hidden: int, layers: int, heads: int) -> str:
    """A randomly initialised BERT with a word-level vocabulary, written to ``directory``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(directory, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(_WORDS))]
    vocab_file = os.path.join(directory, "vocab.txt")
    with open(vocab_file, "w") as fh:
        fh.write("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


def _experts(work: str, models: str):
    """The image and text experts, and a line that names them."""
    from medmix_sklearn import ImageExpert, TextExpert

    if models == "tiny":
        return (
            ImageExpert("test_efficientnet", pretrained=False),
            TextExpert(_write_bert(os.path.join(work, "tiny_bert"), hidden=32, layers=2,
                                   heads=2)),
            "tiny random test_efficientnet + 2-layer BERT (hidden 32)",
        )
    image = ImageExpert("efficientnet_b0", pretrained=False, image_size=224)
    image_name = "random efficientnet_b0 (224 px)"
    text = None
    text_name = "random BERT of MiniLM-L6's shape (6 layers, hidden 384)"
    if models == "auto":
        # Each expert on its own: the offline preset where its weight package is
        # installed, else the random network of real size.
        for kind, preset in (("image", "efficientnet_lite0"), ("text", "all-MiniLM-L6-v2")):
            try:
                expert = (ImageExpert if kind == "image" else TextExpert)(preset)
                expert.fingerprint()  # fails when the weights are absent
            except Exception as exc:
                print(f"{preset}: offline weights unavailable ({type(exc).__name__}); "
                      "random network of real size instead")
                continue
            if kind == "image":
                image, image_name = expert, f"{preset} (offline weights)"
            else:
                text, text_name = expert, f"{preset} (offline weights)"
    if text is None:
        text = TextExpert(_write_bert(os.path.join(work, "bert"), hidden=384, layers=6,
                                      heads=12))
    return image, text, f"{image_name} + {text_name}"


def _data(n: int, work: str) -> pd.DataFrame:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = os.path.join(work, "images")
    os.makedirs(folder, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(n):
        base = 128 + 60 * np.sin(xx / (8 + i % 13)) * np.cos(yy / (6 + i % 7))
        noise = rng.normal(0, 20, (256, 256))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    words = _WORDS
    texts = [" ".join(rng.choice(words, size=4 + i % 20)) for i in range(n)]
    # The label follows the image's pattern, so the classifier learns a signal
    # rather than fitting noise (whose probabilities any perturbation moves).
    y = np.array([(i % 13) >= 6 for i in range(n)], dtype=int)
    return pd.DataFrame({"image": paths, "text": texts, "y": y})


def _embed(expert, column, frame, device, batch_size, precision="autocast"):
    """Embed ``frame[column]`` with an embedder whose model is loaded already.

    The embedder is fitted and warmed on the first batch; the time is the
    transform of the whole column alone, as the hand loops time their loop
    with the model loaded (no disk cache: every item is embedded).
    """
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    embedder = MultimodalExpertEmbedder(
        [("m", expert, column)], cache_dir=None, device=device, batch_size=batch_size, n_jobs=4,
        precision=precision,
    ).fit(frame[[column]])
    embedder.transform(frame[[column]].iloc[:batch_size])
    _sync(device)
    start = time.perf_counter()
    out = np.asarray(embedder.transform(frame[[column]]), dtype=np.float32)
    _sync(device)
    return out, time.perf_counter() - start


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device):
    import contextlib

    import torch

    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _hand_image(expert, paths, device, batch_size, *, autocast, predecoded=None):
    """A plain loop: decode, transform, stack, run the network."""
    import torch
    from PIL import Image

    model = expert._get_model(device)
    outputs = []
    start = time.perf_counter()
    for s in range(0, len(paths), batch_size):
        if predecoded is not None:
            batch = predecoded[s : s + batch_size]
        else:
            tensors = []
            for path in paths[s : s + batch_size]:
                with Image.open(path) as image:
                    tensors.append(model.transform(image.convert("RGB")))
            batch = torch.stack(tensors)
        batch = batch.to(device, non_blocking=True)
        with torch.inference_mode(), (_autocast(device) if autocast else _null()):
            features = model.module(batch)
        outputs.append(features.float().cpu().numpy())
    _sync(device)
    return np.concatenate(outputs), time.perf_counter() - start


def _hand_text(expert, texts, device, batch_size, *, autocast):
    """A plain loop: tokenize, run the encoder, mean-pool over the attention mask."""
    import torch

    model = expert._get_model(device)
    outputs = []
    start = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        encoded = model.tokenizer(
            list(texts[s : s + batch_size]), padding=True, truncation=True,
            max_length=expert.max_length, return_tensors="pt",
        ).to(device)
        with torch.inference_mode(), (_autocast(device) if autocast else _null()):
            hidden = model.module(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        outputs.append(pooled.cpu().numpy())
    _sync(device)
    return np.concatenate(outputs), time.perf_counter() - start


def _null():
    import contextlib

    return contextlib.nullcontext()


def _cosine_distance(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return 1.0 - (a * b).sum(axis=1)


_PREDICT_ON_CPU = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd, torch
    assert not torch.cuda.is_available()
    from medmix_sklearn import load_model
    model_path, x_path, z_gpu_path, out = sys.argv[1:]
    model = load_model(model_path)
    X = pd.read_pickle(x_path)
    np.savez(out, pipeline=model.predict_proba(X), z_cpu=model[:-1].transform(X).to_numpy(),
             classifier_on_gpu_z=model[-1].predict_proba(pd.read_pickle(z_gpu_path)))
    """
)


def _relative_diff(a, b):
    """Largest per-item ``||a - b|| / ||b||``: scale-free, unlike an absolute tolerance.

    Randomly initialised image networks give features of order 1e-5, which
    any absolute tolerance would pass.
    """
    norm = np.linalg.norm(b, axis=1).clip(1e-30)
    return float((np.linalg.norm(a - b, axis=1) / norm).max())


def _classifier_round_trip(precision, image_expert, text_expert, frame, gpu, args, work,
                           figures, lines, failures):
    """Fit the pipeline on ``gpu`` at ``precision``; predict from its file on the CPU."""
    from sklearn.pipeline import Pipeline

    from medmix_sklearn import MedMIXClassifier, save_model
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    pipe = Pipeline([
        ("embed", MultimodalExpertEmbedder(
            [("xray", image_expert, "image"), ("report", text_expert, "text")],
            cache_dir=os.path.join(work, "cache"), device=gpu, batch_size=args.batch_size,
            precision=precision,
        )),
        ("clf", MedMIXClassifier(max_epochs=5, device=gpu, random_state=0)),
    ])
    X, y = frame[["image", "text"]], frame["y"].to_numpy()
    start = time.perf_counter()
    pipe.fit(X, y)
    t_fit = time.perf_counter() - start
    proba_gpu = pipe.predict_proba(X)
    z_gpu = pipe[:-1].transform(X)
    proba_gpu_classifier = pipe[-1].predict_proba(z_gpu)
    folder = os.path.join(work, f"model_{precision}")
    os.makedirs(folder)
    path = os.path.join(folder, "model.medmix")
    save_model(pipe, path)
    X.to_pickle(os.path.join(folder, "X.pkl"))
    z_gpu.to_pickle(os.path.join(folder, "z_gpu.pkl"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE),
                                          os.environ.get("PYTHONPATH", "")])}
    out = os.path.join(folder, "proba.npz")
    result = subprocess.run(
        [sys.executable, "-c", _PREDICT_ON_CPU, path, os.path.join(folder, "X.pkl"),
         os.path.join(folder, "z_gpu.pkl"), out],
        env=env, capture_output=True, text=True, timeout=600,
    )
    name = f"classifier ({precision})"
    if result.returncode != 0:
        failures.append(f"{name}: CPU prediction from the saved file")
        lines.append(f"{name}: loading on the CPU FAILED:\n" + result.stderr[-2000:])
        return
    cpu = np.load(out, allow_pickle=False)
    # (a) The model file and the move to the CPU: the same embeddings in, the
    #     same probabilities out.
    diff_classifier = float(np.abs(cpu["classifier_on_gpu_z"] - proba_gpu_classifier).max())
    # (b) The loaded pipeline is the trained one, its experts now on the CPU.
    z_cpu = pd.DataFrame(cpu["z_cpu"], columns=z_gpu.columns, index=z_gpu.index)
    diff_pipeline = float(np.abs(cpu["pipeline"] - pipe[-1].predict_proba(z_cpu)).max())
    # (c) End to end, CPU against GPU: checked in float32, reported under autocast.
    drift = float(np.abs(cpu["pipeline"] - proba_gpu).max())
    same_label = float((cpu["pipeline"].argmax(1) == proba_gpu.argmax(1)).mean())
    checks = [("the loaded classifier on the GPU's embeddings", diff_classifier),
              ("the loaded pipeline against its classifier on the CPU's embeddings",
               diff_pipeline)]
    if precision == "float32":
        checks.append(("the CPU pipeline against the GPU pipeline", drift))
    parts = []
    for what, diff in checks:
        ok = diff <= FLOAT32_TOL
        parts.append(f"{what} {diff:.2e} ({'ok' if ok else 'FAIL'})")
        if not ok:
            failures.append(f"{name}: {what}")
    if precision != "float32":
        parts.append(f"the CPU pipeline against the GPU pipeline {drift:.2e} (reported)")
    figures[f"classifier_{precision}"] = {
        "fit_seconds": t_fit,
        "loaded_classifier_on_gpu_embeddings_max_proba_diff": diff_classifier,
        "loaded_pipeline_vs_classifier_on_cpu_embeddings_max_proba_diff": diff_pipeline,
        "pipeline_cpu_vs_gpu_max_proba_diff": drift,
        "pipeline_cpu_vs_gpu_same_label": same_label,
    }
    lines.append(
        f"{name}: fitted on {gpu} in {t_fit:.1f} s (embedding included), loaded in a "
        f"CPU-only process; max |proba diff| (<= {FLOAT32_TOL:g}): " + "; ".join(parts)
        + f"; same predicted label CPU vs GPU {same_label:.1%} of rows"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=384, help="images and texts (384)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", choices=("random", "tiny", "auto"), default="random",
                        help="random-init real-size networks (default), tiny ones, or the "
                        "offline presets when installed")
    parser.add_argument("--tiny", action="store_true", help="same as --models tiny")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--cpu-only", action="store_true",
                        help="without CUDA: run the CPU parts, the CPU standing in for the GPU")
    args = parser.parse_args(argv)

    import torch

    if args.tiny:
        args.models = "tiny"
    started = time.perf_counter()
    figures: dict = {"n": args.n, "batch_size": args.batch_size}
    if torch.cuda.is_available():
        gpu = "cuda"
        name = torch.cuda.get_device_name(0)
    elif args.cpu_only:
        gpu, name = "cpu", "none (--cpu-only: the CPU stands in for the GPU)"
        torch.set_num_threads(1)
    else:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing "
              "to check. Run it on a machine with a GPU, or with --cpu-only to run its CPU "
              "parts.")
        return 0

    failures = []
    lines = [f"device: {name}; torch {torch.__version__}"]
    with tempfile.TemporaryDirectory(prefix="medmix-gpu-check-") as work:
        image_expert, text_expert, models = _experts(work, args.models)
        figures.update(device=name, torch=torch.__version__, experts=models)
        lines.append(f"experts: {models}; {args.n} images (256x256 PNG) and texts; "
                     f"batch size {args.batch_size}")
        frame = _data(args.n, work)
        paths, texts = frame["image"].tolist(), frame["text"].tolist()

        # 1. agreement -------------------------------------------------------------
        for label, expert, column in (("image", image_expert, "image"),
                                      ("text", text_expert, "text")):
            cpu, _ = _embed(expert, column, frame, "cpu", args.batch_size)
            f32, _ = _embed(expert, column, frame, gpu, args.batch_size, precision="float32")
            rel = _relative_diff(f32, cpu)
            if label == "image":
                hand, _ = _hand_image(expert, paths, gpu, args.batch_size, autocast=False)
            else:
                hand, _ = _hand_text(expert, texts, gpu, args.batch_size, autocast=False)
            rel_hand = _relative_diff(hand, cpu)
            amp, _ = _embed(expert, column, frame, gpu, args.batch_size)
            cos = float(_cosine_distance(amp, cpu).max())
            ok32, okamp = rel <= FLOAT32_TOL, cos <= AUTOCAST_COSINE_TOL
            scale = float(np.abs(cpu).max())
            lines.append(
                f"{label}: embedder float32 GPU vs CPU max relative diff {rel:.2e} "
                f"(<= {FLOAT32_TOL:g}: {'ok' if ok32 else 'FAIL'}; max |value| {scale:.2e}); "
                f"hand loop float32 with torch's default TF32 {rel_hand:.2e} (reported); "
                f"embedder autocast vs CPU max cosine distance {cos:.2e} "
                f"(<= {AUTOCAST_COSINE_TOL:g}: {'ok' if okamp else 'FAIL'})"
            )
            figures[f"{label}_float32_max_relative_diff"] = rel
            figures[f"{label}_float32_max_abs_diff"] = float(np.abs(f32 - cpu).max())
            figures[f"{label}_hand_loop_default_tf32_max_relative_diff"] = rel_hand
            figures[f"{label}_max_abs_value"] = scale
            figures[f"{label}_autocast_max_cosine_distance"] = cos
            if not ok32:
                failures.append(f"{label} float32 agreement")
            if not okamp:
                failures.append(f"{label} autocast agreement")

        # 2. speed -----------------------------------------------------------------
        autocast = gpu.startswith("cuda")
        _, t_embedder = _embed(image_expert, "image", frame, gpu, args.batch_size)
        # Warm the hand loops at this precision too (kernel selection), untimed.
        _hand_image(image_expert, paths[: args.batch_size], gpu, args.batch_size,
                    autocast=autocast)
        _hand_text(text_expert, texts[: args.batch_size], gpu, args.batch_size,
                   autocast=autocast)
        _, t_hand = _hand_image(image_expert, paths, gpu, args.batch_size, autocast=autocast)
        model = image_expert._get_model(gpu)
        from PIL import Image

        decoded = []
        for path in paths:
            with Image.open(path) as image:
                decoded.append(model.transform(image.convert("RGB")))
        decoded = torch.stack(decoded)
        _, t_model = _hand_image(image_expert, paths, gpu, args.batch_size, autocast=autocast,
                                 predecoded=decoded)
        _, t_text_embedder = _embed(text_expert, "text", frame, gpu, args.batch_size)
        _, t_text_hand = _hand_text(text_expert, texts, gpu, args.batch_size, autocast=autocast)
        # What precision="float32" costs: the embedder, and the model alone
        # (full float32, TF32 off), each warmed at that precision first.
        from medmix_sklearn.experts._base import _without_tf32

        _, t_embedder32 = _embed(image_expert, "image", frame, gpu, args.batch_size,
                                 precision="float32")
        _, t_text_embedder32 = _embed(text_expert, "text", frame, gpu, args.batch_size,
                                      precision="float32")
        with _without_tf32(gpu, "float32"):
            _hand_image(image_expert, paths[: args.batch_size], gpu, args.batch_size,
                        autocast=False, predecoded=decoded[: args.batch_size])
            _, t_model32 = _hand_image(image_expert, paths, gpu, args.batch_size,
                                       autocast=False, predecoded=decoded)
        n = args.n
        figures.update(
            images_per_s_embedder=n / t_embedder, images_per_s_hand_loop=n / t_hand,
            images_per_s_model_alone=n / t_model, texts_per_s_embedder=n / t_text_embedder,
            texts_per_s_hand_loop=n / t_text_hand,
            images_per_s_embedder_float32=n / t_embedder32,
            images_per_s_model_alone_float32=n / t_model32,
            texts_per_s_embedder_float32=n / t_text_embedder32,
        )
        lines.append(
            f"images/s: embedder {n / t_embedder:,.0f}; hand loop decoding inline "
            f"{n / t_hand:,.0f} (embedder {t_hand / t_embedder:.2f}x); model alone on "
            f"pre-decoded tensors {n / t_model:,.0f}; precision='float32': embedder "
            f"{n / t_embedder32:,.0f}, model alone {n / t_model32:,.0f}"
        )
        lines.append(
            f"texts/s: embedder {n / t_text_embedder:,.0f}; hand loop {n / t_text_hand:,.0f} "
            f"(embedder {t_text_hand / t_text_embedder:.2f}x); precision='float32': embedder "
            f"{n / t_text_embedder32:,.0f}"
        )

        # 3. classifier: train on the GPU, predict on the CPU from the file ----------
        for precision in ("float32", "autocast"):
            _classifier_round_trip(precision, image_expert, text_expert, frame, gpu, args,
                                   work, figures, lines, failures)

    figures.update(failures=failures, seconds=time.perf_counter() - started)
    lines.append(f"total time {figures['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(figures, fh, indent=1)
    print("\n".join(["gpu_check summary", *("  " + line for line in lines)]))
    print("RESULT:", "all checks passed" if not failures else "FAILED: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
