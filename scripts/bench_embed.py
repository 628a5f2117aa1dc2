"""Benchmark the embedding stage: end to end from JPEG files vs the bare engine, vs torch eager.

For each backbone, in one process and one run, alternating so that load on a
shared machine hits every measurement alike (medians of ``--repeats`` runs):

- ``end_to_end``: ``embed_images`` on JPEG files on disk with the default engine
  (``auto``: ONNX Runtime on CPU) and the default decoding workers: decode ->
  resize/crop -> normalise -> forward -> L2-normalise; images/s, and the user
  and system CPU seconds of the process and its workers;
- ``bare_engine``: the same engine's forward on pre-made tensors of the same
  shape and batch size (no decoding);
- ``bare_whole_batch``: the same, each batch in one ONNX Runtime call (before session 26
  the engine called it so; it now runs ``engine.FORWARD_ROWS`` images at a time);
- ``torch_eager``: the backbone's torch module on the same tensors with torch's
  threads = the cores (what ``--engine torch`` runs);

then the ratios end_to_end / bare_engine and end_to_end / torch_eager, each as the
median over runs of that run's ratio (``median_run_*``: the headline, since this
shared machine's speed drifts between runs) and as the ratio of the medians, and the
peak resident memory of the process and of its largest worker.

Usage::

    python scripts/bench_embed.py --backbones efficientnet_lite0,resnet50 --n-images 1000 \
        --repeats 3 --json docs/perf/bench_embed.json

Without ``--weights``, a ResNet or ReID backbone gets random weights: speed does not
depend on the weight values, and trained weights may be unavailable offline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clusterclean.atomic import atomic_write


def generate_jpegs(folder: Path, n_images: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """Photo-like JPEGs: random crops of scikit-image's sample photos, flipped and tinted."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(str(p) for p in folder.glob("img_*.jpg"))
    if len(existing) >= n_images:
        return existing[:n_images]
    rng = np.random.default_rng(seed)
    photos = [
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")
    ]
    width, height = size
    paths = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.5, 1.0)
        crop_w, crop_h = int(photo.width * scale), int(photo.height * scale)
        left = int(rng.integers(0, photo.width - crop_w + 1))
        top = int(rng.integers(0, photo.height - crop_h + 1))
        image = photo.crop((left, top, left + crop_w, top + crop_h)).resize((width, height))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tint = rng.uniform(0.8, 1.2, size=3)
        pixels = np.clip(np.asarray(image, dtype=np.float32) * tint, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def random_weights(backbone: str, folder: Path) -> str:
    """A state dict with random weights for a backbone that needs a file (speed only)."""
    from clusterclean.backbones import save_random_weights

    path = folder / f"{backbone}-random.pth"
    return str(path) if path.exists() else save_random_weights(backbone, path)


def bare_rate(engine, input_size, n_images: int, batch_size: int) -> float:
    """Images/s of ``engine`` alone on one pre-made random batch, run again and again."""
    batch = np.random.default_rng(0).random((batch_size, 3, *input_size), dtype=np.float32)
    engine(batch[:2])  # warm-up: allocator, kernels
    n_batches = math.ceil(n_images / batch_size)
    start = time.perf_counter()
    for _ in range(n_batches):
        out = engine(batch)
    seconds = time.perf_counter() - start
    assert out.shape[0] == batch_size
    return n_batches * batch_size / seconds


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process plus its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def end_to_end(backbone, engine, paths, *, batch_size: int, num_workers: int | None) -> dict:
    """Images/s and CPU time of embed_images on the files (no embedding cache)."""
    from clusterclean.embed import embed_images

    user, system = cpu_seconds()
    start = time.perf_counter()
    embeddings = embed_images(
        paths,
        backbone=backbone,
        engine=engine,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=False,
    )
    seconds = time.perf_counter() - start
    user_after, system_after = cpu_seconds()
    assert len(embeddings) == len(paths)
    return {
        "images_per_s": len(paths) / seconds,
        "user_s": user_after - user,
        "system_s": system_after - system,
    }


def bench_backbone(name: str, paths, args, root: Path) -> dict:
    import torch

    from clusterclean.backbones import load_backbone
    from clusterclean.embed import plan_workers
    from clusterclean.engine import OnnxRuntimeEngine, TorchEngine, load_engine

    weights = args.weights
    if weights is None and name.startswith(("resnet", "osnet")):
        weights = random_weights(name, root)
    backbone = load_backbone(name, weights=weights, device="cpu")
    engine = load_engine(backbone, engine="onnxruntime")
    threads = engine.threads  # the cores
    workers = plan_workers(len(paths), engine, num_workers=args.workers)
    torch.set_num_threads(threads)
    eager = TorchEngine(backbone.model)
    whole = OnnxRuntimeEngine(engine.model, threads=threads, rows=args.batch_size)
    runs = []
    for run in range(args.repeats):
        bare = bare_rate(engine, backbone.input_size, args.bare_images, args.batch_size)
        whole_rate = bare_rate(whole, backbone.input_size, args.bare_images, args.batch_size)
        full = end_to_end(
            backbone, engine, paths, batch_size=args.batch_size, num_workers=args.workers
        )
        torch_rate = bare_rate(eager, backbone.input_size, args.torch_images, args.batch_size)
        runs.append(
            {
                "bare_engine": bare,
                "bare_whole_batch": whole_rate,
                "end_to_end": full,
                "torch_eager": torch_rate,
            }
        )
        print(
            f"{name} run {run + 1}/{args.repeats}: end to end {full['images_per_s']:.1f} img/s "
            f"(user {full['user_s']:.1f} s, sys {full['system_s']:.1f} s), bare ONNX Runtime "
            f"{bare:.1f} ({whole_rate:.1f} a whole batch per call), torch eager "
            f"{torch_rate:.1f}",
            flush=True,
        )
    e2e = statistics.median(r["end_to_end"]["images_per_s"] for r in runs)
    bare = statistics.median(r["bare_engine"] for r in runs)
    eager_rate = statistics.median(r["torch_eager"] for r in runs)
    user = statistics.median(r["end_to_end"]["user_s"] for r in runs)
    system = statistics.median(r["end_to_end"]["system_s"] for r in runs)
    return {
        "backbone": name,
        "weights": args.weights or ("random" if weights else "default"),
        "engine": engine.describe() | {"detail": Path(engine.detail).name},
        "decoding_workers": workers,
        "engine_threads_per_worker": engine.for_workers(workers).threads if workers else threads,
        "bare_engine_threads": threads,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "median_end_to_end_images_per_s": e2e,
        "median_bare_engine_images_per_s": bare,
        "median_torch_eager_images_per_s": eager_rate,
        "end_to_end_over_bare_engine": e2e / bare,
        "end_to_end_over_torch_eager": e2e / eager_rate,
        # each run's end to end against its own references, measured beside it: on a shared
        # machine whose speed drifts between runs, the median of these is the fair figure
        "median_run_end_to_end_over_bare_engine": statistics.median(
            r["end_to_end"]["images_per_s"] / r["bare_engine"] for r in runs
        ),
        "median_run_end_to_end_over_torch_eager": statistics.median(
            r["end_to_end"]["images_per_s"] / r["torch_eager"] for r in runs
        ),
        "bare_engine_over_torch_eager": bare / eager_rate,
        "median_bare_whole_batch_images_per_s": statistics.median(
            r["bare_whole_batch"] for r in runs
        ),
        "median_run_bare_engine_over_whole_batch": statistics.median(
            r["bare_engine"] / r["bare_whole_batch"] for r in runs
        ),
        "median_run_end_to_end_over_whole_batch": statistics.median(
            r["end_to_end"]["images_per_s"] / r["bare_whole_batch"] for r in runs
        ),
        "median_system_over_user_time": system / user,
    }


def write_result(path: Path, result: dict) -> None:
    """The figures as JSON at ``path`` (written atomically), and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="default: plan_workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare-images", type=int, default=512, help="images per bare run")
    parser.add_argument("--torch-images", type=int, default=128, help="images per torch run")
    parser.add_argument("--folder", type=Path, default=None, help="keep/reuse the JPEGs here")
    parser.add_argument("--json", type=Path, default=Path("bench_embed.json"))
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    import clusterclean

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or Path(scratch)
        start = time.perf_counter()
        paths = generate_jpegs(root / "jpegs", args.n_images, (width, height))
        print(
            f"{len(paths)} JPEGs of {width}x{height} ready in {time.perf_counter() - start:.1f} s"
        )
        results = [bench_backbone(name, paths, args, root) for name in args.backbones.split(",")]
    load_after = os.getloadavg()
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    result = {
        "n_images": len(paths),
        "image_size": [width, height],
        "input_size": [224, 224],
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], load_after[0]],
        "peak_rss_mib": {
            "process": own.ru_maxrss / 1024,
            "largest_worker": children.ru_maxrss / 1024,
        },
        "backbones": results,
        "versions": {
            "clusterclean": clusterclean.__version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(
            ["scripts/bench_embed.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    for r in results:
        print(
            f"{r['backbone']}: end to end {r['median_end_to_end_images_per_s']:.1f} img/s; "
            f"per run {r['median_run_end_to_end_over_bare_engine']:.1%} of the bare ONNX "
            f"Runtime forward (median; ratio of medians {r['end_to_end_over_bare_engine']:.1%} "
            f"of {r['median_bare_engine_images_per_s']:.1f}); torch eager "
            f"{r['median_torch_eager_images_per_s']:.1f} (end to end per run "
            f"{r['median_run_end_to_end_over_torch_eager']:.2f}x, ratio of medians "
            f"{r['end_to_end_over_torch_eager']:.2f}x); system/user time "
            f"{r['median_system_over_user_time']:.1%} ({r['decoding_workers']} worker(s) x "
            f"{r['engine_threads_per_worker']} engine thread(s); bare: "
            f"{r['bare_engine_threads']} threads)"
        )
    print(
        f"peak RSS: process {result['peak_rss_mib']['process']:.0f} MiB, largest worker "
        f"{result['peak_rss_mib']['largest_worker']:.0f} MiB"
    )
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
