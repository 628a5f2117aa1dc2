"""Determinism: the same inputs and options give byte-identical Parquet tables.

Each run is a fresh subprocess with its own thread count (``OMP_NUM_THREADS``,
``torch.set_num_threads``, ``faiss.omp_set_num_threads``) and its own
``PYTHONHASHSEED`` (so an order that depends on set or dict hashing shows up).
This file is also the child: ``python test_determinism.py planted|images OUT THREADS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

TABLES = (
    "dataset",
    "images",
    "components",
    "component_attributes",
    "label_issues",
    "grouping_issues",
    "pairs",
    "edges",
    "duplicates",
    "embeddings",
    "neighbors",
)


def _child(kind: str, work: Path, threads: int) -> None:
    """Run the pipeline in this process with ``threads`` threads everywhere."""
    import faiss

    faiss.omp_set_num_threads(threads)
    out = work / f"out-{threads}-{os.environ['PYTHONHASHSEED']}"
    if kind == "planted":
        _run_planted(out)
    else:
        import torch

        torch.set_num_threads(threads)
        _run_images(work, out, num_workers=0 if threads == 1 else 2)


def _run_planted(out: Path) -> None:
    from planted import make_planted

    from clusterclean import run

    data = make_planted(n_groups=400, max_size=6, dim=48, n_flips=40, noise=0.05, seed=11)
    run(
        labels=data.dataset,
        embeddings=data.embeddings,
        out=out,
        progress=False,
        min_similarity=0.8,
        thresholds=("p80", "0.05"),
    )


def _run_images(work: Path, out: Path, *, num_workers: int, engine: str = "auto") -> None:
    from clusterclean import run

    run(
        images=work / "images",
        labels=work / "labels.csv",
        out=out,
        progress=False,
        backbone="efficientnet_lite0",
        engine=engine,
        num_workers=num_workers,
        batch_size=5,
        min_similarity=0.8,
    )


def _hashes(out: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((out / f"{name}.parquet").read_bytes()).hexdigest()
        for name in TABLES
        if (out / f"{name}.parquet").is_file()
    }


def _run_child(kind: str, work: Path, threads: int, hash_seed: int) -> dict[str, str]:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        PYTHONHASHSEED=str(hash_seed),
    )
    done = subprocess.run(
        [sys.executable, __file__, kind, str(work), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return _hashes(work / f"out-{threads}-{hash_seed}")


def _assert_identical(first: dict[str, str], second: dict[str, str], names=TABLES) -> None:
    assert set(first) == set(second)
    differing = [name for name in first if name in names and first[name] != second[name]]
    assert differing == [], f"tables differ between runs: {differing}"


def test_planted_tables_are_byte_identical_across_runs_and_thread_counts(tmp_path):
    import numpy as np
    import pandas as pd

    one = _run_child("planted", tmp_path, threads=1, hash_seed=1)
    two = _run_child("planted", tmp_path, threads=2, hash_seed=2)
    _run_planted(tmp_path / "in-process")  # the test's own threads and hash seed
    again = _hashes(tmp_path / "in-process")
    assert {"images", "components", "label_issues", "pairs", "edges", "embeddings"} <= set(one)
    _assert_identical(two, again)  # same thread count: every table, byte for byte
    # 1 vs 2 threads: FAISS's BLAS inner products round differently in the last bit, so
    # the raw kNN lists (neighbors.parquet) may differ by 1 ulp; everything derived is equal
    _assert_identical(one, two, names=tuple(t for t in TABLES if t != "neighbors"))
    if "neighbors" in one:
        knn = [pd.read_parquet(tmp_path / f / "neighbors.parquet") for f in ("out-1-1", "out-2-2")]
        np.testing.assert_allclose(knn[0]["cosine"], knn[1]["cosine"], atol=1e-6)
    # the check has teeth: the tables are not empty
    out = tmp_path / "out-1-1"
    assert len(pd.read_parquet(out / "edges.parquet")) > 300
    assert len(pd.read_parquet(out / "label_issues.parquet")) > 15


def _write_image_folder(folder: Path) -> None:
    """Three subjects x four camera-like views (clusterclean.synth.make_views), as JPEG."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from skimage import data as photos

    from clusterclean.synth import make_views

    folder.mkdir()
    rng = np.random.default_rng(5)
    rows = []
    for s, name in enumerate(("astronaut", "coffee", "chelsea")):
        subject = Image.fromarray(getattr(photos, name)())
        for v, view in enumerate(make_views(subject, 4, rng=rng)):
            file = f"s{s}_v{v}.jpg"
            view.save(folder / file, quality=90)
            rows.append({"image": file, "hat": s % 2, "bag": int(v == 1)})
    pd.DataFrame(rows).to_csv(folder.parent / "labels.csv", index=False)


@pytest.fixture(scope="module")
def image_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("images")
    _write_image_folder(work / "images")
    return work


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_image_run_is_byte_identical_across_runs(image_work, engine):
    """The embedding stage too: a real model over real JPEG files, twice in one process,
    with either engine (ONNX Runtime: in this process, then in two workers)."""
    _run_images(image_work, image_work / f"{engine}-a", num_workers=0, engine=engine)
    _run_images(image_work, image_work / f"{engine}-b", num_workers=2, engine=engine)
    first, second = _hashes(image_work / f"{engine}-a"), _hashes(image_work / f"{engine}-b")
    assert "embeddings" in first
    _assert_identical(first, second)


@pytest.mark.slow  # two fresh processes loading torch and the model: ~15 s of CPU
def test_image_run_across_thread_counts_differs_only_in_float_rounding(image_work):
    """torch's CPU kernels sum in a thread-count-dependent order, so the vectors of a
    1-thread and a 2-thread run differ in the last bits (measured: <= 5e-7). The groups,
    label issues and duplicates are identical; the similarities agree to 1e-5, and so do
    the label issues' confidences (computed from centroid_cosine), so those tables
    are compared as frames, not bytes."""
    import numpy as np
    import pandas as pd

    one = _run_child("images", image_work, threads=1, hash_seed=1)
    two = _run_child("images", image_work, threads=2, hash_seed=2)
    _assert_identical(one, two, names=("dataset", "component_attributes"))
    a, b = image_work / "out-1-1", image_work / "out-2-2"
    issues = [
        pd.read_parquet(f / "label_issues.parquet")
        .sort_values(["image_id", "attribute"])
        .reset_index(drop=True)
        for f in (a, b)
    ]
    pd.testing.assert_frame_equal(
        issues[0].drop(columns="confidence"), issues[1].drop(columns="confidence")
    )
    np.testing.assert_allclose(issues[0]["confidence"], issues[1]["confidence"], atol=1e-5)
    vectors = [np.stack(pd.read_parquet(f / "embeddings.parquet")["embedding"]) for f in (a, b)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    for name in ("images", "components", "edges", "pairs", "duplicates"):
        x, y = pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet")
        pd.testing.assert_frame_equal(x, y, check_exact=False, atol=1e-5)


def test_every_option_and_the_versions_are_recorded_in_run_json(tmp_path):
    """run.json holds every RunConfig field with its value, so any seed option added to
    RunConfig is recorded; the numeric library versions that can change results are too."""
    from planted import make_planted

    from clusterclean import run
    from clusterclean.pipeline import RunConfig

    data = make_planted(n_groups=8, seed=2)
    config = RunConfig(min_similarity=0.7, thresholds=("p50",), exclude_attributes=("attr_1",))
    run(labels=data.dataset, embeddings=data.embeddings, out=tmp_path / "r", config=config)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    expected = json.loads(json.dumps(asdict(config)))  # tuples -> lists, as JSON holds them
    assert info["parameters"] == expected
    assert {"clusterclean", "numpy", "pandas", "faiss"} <= set(info["versions"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for planted
    _child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
