"""Benchmark the embedding stage against the bare model forward, in the same run.

The full stage is ``embed_images`` on JPEG files: decode -> transform -> model ->
L2-normalise -> cache write. The bare forward is the same model on pre-made
tensors of the same shape, batch size and memory format. Runs alternate
(bare, full, bare, full, ...) so that load on a shared machine hits both alike;
the medians are reported, with their ratio (target on CPU: >= 0.85).

Usage::

    python scripts/bench_embed.py --n-images 2000 --backbone resnet50 --repeats 3 \
        --json bench_embed.json

Without ``--weights``, a ResNet or ReID backbone gets random weights: speed does not
depend on the weight values, and trained weights may be unavailable offline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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
    import torch
    import torchvision

    from clusterclean.backbones import _reid_networks

    path = folder / f"{backbone}-random.pth"
    if not path.exists():
        torch.manual_seed(0)
        if backbone.startswith("osnet"):
            widths = {"osnet_x1_0": (64, 256, 384, 512), "osnet_x0_25": (16, 64, 96, 128)}
            model = _reid_networks().OSNet(widths[backbone])
        elif backbone == "resnet50_bnneck":
            model = _reid_networks().BNNeckResNet50(ceil_mode_maxpool=False)
        else:
            model = torchvision.models.get_model(backbone, weights=None)
        torch.save(model.state_dict(), path)
    return str(path)


def bare_forward(backbone, n_images: int, batch_size: int) -> float:
    """Images/s of the model alone on pre-made tensors (same shape and memory format)."""
    import torch

    device = next(backbone.model.parameters()).device
    batch = torch.rand(batch_size, 3, *backbone.input_size, device=device)
    batch = batch.contiguous(memory_format=torch.channels_last)
    n_batches = math.ceil(n_images / batch_size)
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"),
    ):
        backbone.model(batch[:2])  # warm-up: allocator, kernels
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n_batches):
            out = backbone.model(batch).float().cpu()  # the stage copies features back, too
        seconds = time.perf_counter() - start
    assert out.shape[0] == batch_size
    return n_batches * batch_size / seconds


def full_stage(backbone, paths, *, batch_size: int, num_workers: int | None, root: Path) -> float:
    """Images/s of embed_images on the files, writing a fresh cache."""
    from clusterclean.embed import embed_images

    with tempfile.TemporaryDirectory(dir=root) as cache_dir:
        start = time.perf_counter()
        embeddings = embed_images(
            paths,
            backbone=backbone,
            batch_size=batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
            progress=False,
        )
        seconds = time.perf_counter() - start
    assert len(embeddings) == len(paths)
    return len(paths) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--bare-images", type=int, default=512, help="images per bare-forward run (a rate)"
    )
    parser.add_argument("--folder", type=Path, default=None, help="keep/reuse the JPEGs here")
    parser.add_argument("--json", type=Path, default=Path("bench_embed.json"))
    args = parser.parse_args(argv)

    import torch

    from clusterclean.backbones import load_backbone

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or Path(scratch)
        start = time.perf_counter()
        paths = generate_jpegs(root / "jpegs", args.n_images, (width, height))
        print(
            f"{len(paths)} JPEGs of {width}x{height} ready in {time.perf_counter() - start:.1f} s"
        )
        weights = args.weights
        if weights is None and args.backbone.startswith(("resnet", "osnet")):
            weights = random_weights(args.backbone, root)
        backbone = load_backbone(args.backbone, weights=weights, device=args.device)
        load_before = os.getloadavg()
        bare, full = [], []
        for run in range(args.repeats):
            bare.append(bare_forward(backbone, args.bare_images, args.batch_size))
            full.append(
                full_stage(
                    backbone,
                    paths,
                    batch_size=args.batch_size,
                    num_workers=args.workers,
                    root=root,
                )
            )
            print(
                f"run {run + 1}/{args.repeats}: bare forward {bare[-1]:.1f} img/s, "
                f"full stage {full[-1]:.1f} img/s ({full[-1] / bare[-1]:.1%})",
                flush=True,
            )
        load_after = os.getloadavg()

    result = {
        "backbone": args.backbone,
        "weights": args.weights or ("random" if weights else "default"),
        "device": str(next(backbone.model.parameters()).device),
        "n_images": len(paths),
        "bare_images_per_run": args.bare_images,
        "image_size": [width, height],
        "input_size": list(backbone.input_size),
        "batch_size": args.batch_size,
        "num_workers": "auto" if args.workers is None else args.workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before[0], load_after[0]],
        "bare_forward_images_per_s": bare,
        "full_stage_images_per_s": full,
        "median_bare_forward_images_per_s": statistics.median(bare),
        "median_full_stage_images_per_s": statistics.median(full),
        "ratio_of_medians": statistics.median(full) / statistics.median(bare),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    print(
        f"median bare forward {result['median_bare_forward_images_per_s']:.1f} img/s, "
        f"median full stage {result['median_full_stage_images_per_s']:.1f} img/s: "
        f"full stage = {result['ratio_of_medians']:.1%} of the bare forward "
        f"({result['device']}, {result['torch_threads']} torch threads, "
        f"{result['num_workers']} workers)"
    )
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
