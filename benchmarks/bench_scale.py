"""The cache at scale: a million texts, OpenI at 100,000 rows, Dask, image files.

Sections (each runs in its own process, so its peak memory is its own):

- ``texts``: a table of ``--n-texts`` (1,000,000) short distinct generated
  texts and a SMALL text model, a randomly initialised 2-layer BERT of hidden
  size 32 built with ``from_config`` (tests/conftest.py; its embeddings mean
  nothing, its cost per text is what a small model costs). The cold pass is
  measured on the first ``--n-cold`` texts (``fill_cache`` in this process);
  the other entries are written straight into the cache under the same expert
  fingerprint (random vectors, not embedded: what a cold pass would leave,
  without its hours), so that the warm passes run over 200,000 and 1,000,000
  rows of a cache with a million entries.
- ``dask``: ``fill_cache`` of ``--n-dask`` distinct texts on a ``LocalCluster``
  of 1, then 2, single-threaded worker processes (fresh cache each; cluster
  start-up not timed). The workers first load the model (``fill_cache``'s
  preload step, on one other text: importing transformers and loading the
  model, a fixed cost per worker, timed apart); then the fill of the table is
  timed: rows/s, and rows/s with the loading added; CPU seconds of each worker
  process and of this (client and scheduler) process during the fill.
- ``openi``: the OpenI reports (findings and impression, the tiny BERT, plus
  age) repeated to 100,000 rows: cold pass, warm pass, then a 5-fold
  cross-validation of the whole Pipeline (embedder + MedMIXClassifier) on a
  cold cache, its time split into embedding and fitting.
- ``images``: ``--n-images`` noise PNGs of about 1.1 MB: the warm pass with
  file identities (``trust_file_stat=True``), without them, and the time to
  merely read every file once (page cache warm in all three).

Run: ``python benchmarks/bench_scale.py`` (all sections; ``--section NAME`` for
one). Writes docs/benchmarks/scale.json; docs/benchmarks/speed.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "docs", "benchmarks", "scale.json")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _files(folder: str) -> int:
    return sum(len(f) for _, _, f in os.walk(folder))


def _tiny_bert(work: str) -> str:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import write_tiny_text_model

    return write_tiny_text_model(os.path.join(work, "tiny_bert"))


_WORDS = ("no evidence of acute cardiopulmonary disease normal chest heart size lungs clear "
          "pneumonia effusion pleural consolidation opacity right left lower lobe mild").split()


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(_WORDS), (n, 6))
    return [" ".join(_WORDS[j] for j in row) + f" {i}" for i, row in enumerate(picks)]


def section_texts(args, work):
    import torch

    from medmix_sklearn import TextExpert
    from medmix_sklearn.embedding import EmbeddingCache, MultimodalExpertEmbedder

    torch.set_num_threads(1)
    expert = TextExpert(_tiny_bert(work))
    cache_dir = os.path.join(work, "cache")
    texts = _texts(args.n_texts)
    X = pd.DataFrame({"text": texts})
    embedder = MultimodalExpertEmbedder(
        [("report", expert, "text")], cache_dir=cache_dir, batch_size=128, device="cpu"
    )
    cpu = time.process_time()
    summary = embedder.fill_cache(X.iloc[: args.n_cold])
    cold_rate = args.n_cold / summary["seconds"]
    cold_cpu_rate = args.n_cold / (time.process_time() - cpu)
    # The rest: written straight in, as a cold pass would leave them.
    start = time.perf_counter()
    keys = [expert.content_key(t) for t in texts[args.n_cold :]]
    rng = np.random.default_rng(1)
    with EmbeddingCache(cache_dir) as cache:
        for s in range(0, len(keys), 50_000):
            part = keys[s : s + 50_000]
            cache.put_many(expert.fingerprint(),
                           zip(part, rng.standard_normal((len(part), 32)).astype(np.float32)))
    direct = time.perf_counter() - start
    result = {
        "model": "random 2-layer BERT, hidden 32 (from_config), batch 128, 1 torch thread",
        "n_texts": args.n_texts, "n_cold": args.n_cold,
        "cold_rows_per_s": cold_rate,
        "cold_rows_per_cpu_s": cold_cpu_rate,
        "cold_cpu_seconds_extrapolated_to_all": args.n_texts / cold_cpu_rate,
        "direct_write_seconds": direct,
    }
    fitted = MultimodalExpertEmbedder(
        [("report", TextExpert(expert.model), "text")], cache_dir=cache_dir, device="cpu"
    ).fit(X.iloc[:10])
    for rows in sorted({min(200_000, args.n_texts), args.n_texts}):
        part = X.iloc[:rows]
        start, cpu = time.perf_counter(), time.process_time()
        out = np.asarray(fitted.transform(part))
        result[f"warm_rows_per_s_{rows}"] = rows / (time.perf_counter() - start)
        result[f"warm_rows_per_cpu_s_{rows}"] = rows / (time.process_time() - cpu)
        assert not np.isnan(out).any()
        del out
    assert not fitted.modalities_[0][1][0].is_loaded
    info = EmbeddingCache(cache_dir).info()
    result["cache_entries"] = sum(e["entries"] for e in info["experts"])
    result["cache_files"] = info["files"]
    result["cache_bytes"] = info["bytes"]
    result["peak_mib"] = _peak_mib()
    return result


def _cpu_seconds() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def section_dask(args, work):
    from distributed import Client, LocalCluster

    from medmix_sklearn import TextExpert
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    model = _tiny_bert(work)
    X = pd.DataFrame({"text": _texts(args.n_dask)})
    result = {"n_texts": args.n_dask}
    for workers in (1, 2):
        embedder = MultimodalExpertEmbedder(
            [("report", TextExpert(model), "text")],
            cache_dir=os.path.join(work, f"cache{workers}"), batch_size=128, device="cpu",
        )
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None,
                          env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as cluster, \
                Client(cluster) as client:
            # Every worker imports transformers and loads the model (the preload
            # step of fill_cache), here on one other text: a fixed cost per worker.
            warm = embedder.fill_cache(pd.DataFrame({"text": ["a text to warm up"]}),
                                       client=client)
            before = client.run(_cpu_seconds)
            client_cpu = time.process_time()
            summary = embedder.fill_cache(X, client=client)
            client_cpu = time.process_time() - client_cpu
            after = client.run(_cpu_seconds)
        assert summary["embedded"] == args.n_dask, summary
        assert set(summary["torch_threads"].values()) == {1}, summary["torch_threads"]
        result[f"rows_per_s_{workers}_workers"] = args.n_dask / summary["seconds"]
        result[f"rows_per_s_with_loading_{workers}_workers"] = args.n_dask / (
            summary["seconds"] + warm["load_seconds"])
        result[f"load_seconds_{workers}_workers"] = warm["load_seconds"]
        result[f"worker_cpu_seconds_{workers}_workers"] = sorted(
            after[w] - before[w] for w in after)
        result[f"client_cpu_seconds_{workers}_workers"] = client_cpu
    result["speedup_2_over_1"] = result["rows_per_s_2_workers"] / result["rows_per_s_1_workers"]
    result["speedup_with_loading_2_over_1"] = (
        result["rows_per_s_with_loading_2_workers"] / result["rows_per_s_with_loading_1_workers"])
    result["worker_cpu_seconds_2_over_1"] = (
        sum(result["worker_cpu_seconds_2_workers"]) / sum(result["worker_cpu_seconds_1_workers"]))
    return result


def _openi_frame(rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    from medmix_sklearn.datasets import load_openi

    X, y = load_openi(targets="abnormal", return_X_y=True)
    X = X[["findings", "impression", "age"]].reset_index(drop=True)
    y = np.asarray(y).ravel()
    reps = -(-rows // len(X))
    X = pd.concat([X] * reps, ignore_index=True).iloc[:rows]
    y = np.tile(y, reps)[:rows]
    return X, y


class _Timer:
    embed = 0.0
    embed_cpu = 0.0


def section_openi(args, work):
    import torch
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import Pipeline

    from medmix_sklearn import MedMIXClassifier, TextExpert
    from medmix_sklearn.embedding import EmbeddingCache, MultimodalExpertEmbedder

    torch.set_num_threads(1)
    model = _tiny_bert(work)
    X, y = _openi_frame(args.n_openi)

    def modalities():
        return [("findings", TextExpert(model, name="bert"), "findings"),
                ("impression", TextExpert(model, name="bert"), "impression"),
                ("age", "passthrough", ["age"])]

    result = {"rows": len(X), "distinct_findings": int(X["findings"].nunique()),
              "distinct_impressions": int(X["impression"].nunique())}
    cache_dir = os.path.join(work, "cache")
    embedder = MultimodalExpertEmbedder(modalities(), cache_dir=cache_dir, batch_size=64,
                                        device="cpu")
    start, cpu = time.perf_counter(), time.process_time()
    embedder.fit_transform(X)
    result["cold_seconds"] = time.perf_counter() - start
    result["cold_cpu_seconds"] = time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    embedder.transform(X)
    result["warm_rows_per_s"] = len(X) / (time.perf_counter() - start)
    result["warm_rows_per_cpu_s"] = len(X) / (time.process_time() - cpu)
    result["cache_files"] = EmbeddingCache(cache_dir).info()["files"]

    class TimedEmbedder(MultimodalExpertEmbedder):
        def fit_transform(self, X, y=None, **kw):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return super().fit_transform(X, y, **kw)
            finally:
                _Timer.embed += time.perf_counter() - start
                _Timer.embed_cpu += time.process_time() - cpu

        def transform(self, X):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return super().transform(X)
            finally:
                _Timer.embed += time.perf_counter() - start
                _Timer.embed_cpu += time.process_time() - cpu

    cv_cache = os.path.join(work, "cv_cache")
    pipe = Pipeline([
        ("embed", TimedEmbedder(modalities(), cache_dir=cv_cache, batch_size=64, device="cpu")),
        ("clf", MedMIXClassifier(max_epochs=args.epochs, device="cpu", random_state=0)),
    ])
    _Timer.embed = _Timer.embed_cpu = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    scores = cross_validate(pipe, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            scoring="roc_auc", n_jobs=1)
    total = time.perf_counter() - start
    total_cpu = time.process_time() - cpu
    result.update({
        "cv_cpu_seconds": total_cpu,
        "cv_embedding_cpu_seconds": _Timer.embed_cpu,
        "cv_embedding_cpu_over_one_cold_pass": _Timer.embed_cpu / result["cold_cpu_seconds"],
        "cv_epochs": args.epochs,
        "cv_seconds": total,
        "cv_embedding_seconds": _Timer.embed,
        "cv_fit_predict_seconds": total - _Timer.embed,
        "cv_embedding_over_one_cold_pass": _Timer.embed / result["cold_seconds"],
        "cv_auroc_mean": float(np.mean(scores["test_score"])),
        "peak_mib": _peak_mib(),
    })
    return result


def section_images(args, work):
    from PIL import Image

    from medmix_sklearn import ImageExpert
    from medmix_sklearn.embedding import MultimodalExpertEmbedder

    folder = os.path.join(work, "images")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.n_images):
        pixels = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i}.png")
        Image.fromarray(pixels).save(path, compress_level=0)
        paths.append(path)
    # Old enough that their identities are trusted at once.
    then = time.time() - 3600
    for p in paths:
        os.utime(p, (then, then))
    time.sleep(3.5)  # change times (set by utime) must age past the racy window too
    total = sum(os.path.getsize(p) for p in paths)
    X = pd.DataFrame({"image": paths})
    expert = ImageExpert("test_efficientnet", pretrained=False, image_size=64)
    embedder = MultimodalExpertEmbedder([("xray", expert, "image")],
                                        cache_dir=os.path.join(work, "cache"), device="cpu",
                                        batch_size=64, n_jobs=2)
    start = time.perf_counter()
    cold = np.asarray(embedder.fit_transform(X))
    result = {"n_images": len(paths), "mean_mb": total / len(paths) / 1e6,
              "cold_seconds": time.perf_counter() - start}

    def timed(func):
        best, best_cpu = np.inf, np.inf
        for _ in range(2):
            start, cpu = time.perf_counter(), time.process_time()
            func()
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        return best, best_cpu

    def read_all():
        for p in paths:
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass

    trusted = MultimodalExpertEmbedder([("xray", expert, "image")],
                                       cache_dir=os.path.join(work, "cache"), device="cpu").fit(X)
    hashing = trusted.__class__(**{**trusted.get_params(deep=False),
                                   "trust_file_stat": False}).fit(X)
    np.testing.assert_array_equal(np.asarray(trusted.transform(X)), cold)
    for name, func in (("read_once", read_all),
                       ("warm_trust_file_stat", lambda: trusted.transform(X)),
                       ("warm_hash_every_file", lambda: hashing.transform(X))):
        result[f"{name}_seconds"], result[f"{name}_cpu_seconds"] = timed(func)
    return result


SECTIONS = {"texts": section_texts, "dask": section_dask, "openi": section_openi,
            "images": section_images}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=sorted(SECTIONS))
    parser.add_argument("--n-texts", type=int, default=1_000_000)
    parser.add_argument("--n-cold", type=int, default=100_000)
    parser.add_argument("--n-dask", type=int, default=20_000)
    parser.add_argument("--n-openi", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--out", default=OUT, help="results JSON (merged into)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        work = tempfile.mkdtemp(prefix=f"medmix-scale-{args.section}-")
        try:
            result = SECTIONS[args.section](args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("RESULT " + json.dumps(result))
        return
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    for name in [args.section] if args.section else list(SECTIONS):
        given = list(argv if argv is not None else sys.argv[1:])
        forwarded = [a for i, a in enumerate(given)
                     if a not in ("--section", "--out")
                     and not (i > 0 and given[i - 1] in ("--section", "--out"))]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--section", name, *forwarded],
            capture_output=True, text=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"section {name} failed")
        results[name] = json.loads(line[0][len("RESULT "):])
        results[name]["wall_seconds"] = time.perf_counter() - start
        results[name]["load_average_at_end"] = os.getloadavg()[0]
        print(name, json.dumps(results[name], indent=1), flush=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
