"""What working at the backbone's size costs and changes in the head's augmented views.

On ``--n-images`` generated photo-like JPEGs (``bench_embed.generate_jpegs``, 500x375 by
default), decoded the way the views read them (``read_image`` with the backbone's
``decode_side``), in one run:

- the milliseconds of one view, ``augment_image`` at the image's own size (as before)
  and at the size the backbone's transform shrinks it to (``max_short_side``), medians
  of ``--repeats`` passes over the images, and their ratio;
- with the EfficientNet-Lite0 backbone (torch, in this process), the cosine between the
  two versions of one view (the same draws), against the cosine between two different
  views of one image (what the head learns to ignore): median and 5th percentile.

    python scripts/bench_views.py --n-images 200 --repeats 3 --json docs/perf/bench_views.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import generate_jpegs, write_result  # noqa: E402


def unit_vector(backbone, image) -> np.ndarray:
    """The backbone's L2-normalised feature vector of one PIL image (torch, this process)."""
    import torch

    with torch.inference_mode():
        out = backbone.model(backbone.transform(image)[None])[0].numpy()
    return out / np.linalg.norm(out)


def view_ms(images, max_short_side: int | None, repeats: int) -> list[float]:
    """Milliseconds per view, one figure per pass over the images."""
    from clusterclean.views import augment_image

    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i, image in enumerate(images):
            augment_image(image, np.random.default_rng([0, i, 0]), max_short_side=max_short_side)
        passes.append((time.perf_counter() - started) / len(images) * 1000)
    return passes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench-views"))
    parser.add_argument("--json", type=Path, default=Path("bench_views.json"))
    args = parser.parse_args(argv)

    import torch

    from clusterclean.backbones import load_backbone
    from clusterclean.embed import decode_side, read_image
    from clusterclean.views import augment_image

    torch.set_num_threads(2)
    size = tuple(int(v) for v in args.image_size.split("x"))
    paths = generate_jpegs(args.folder, args.n_images, size)
    backbone = load_backbone("efficientnet_lite0", device="cpu")
    side = decode_side(backbone.input_size)
    images = [read_image(p, min_size=side) for p in paths]

    full = view_ms(images, None, args.repeats)
    working = view_ms(images, side, args.repeats)

    def vector(image) -> np.ndarray:
        return unit_vector(backbone, image)

    same_draws, other_view = [], []
    for i, image in enumerate(images):
        old = vector(augment_image(image, np.random.default_rng([0, i, 0])))
        new = vector(augment_image(image, np.random.default_rng([0, i, 0]), max_short_side=side))
        second = vector(augment_image(image, np.random.default_rng([0, i, 1])))
        same_draws.append(float(old @ new))
        other_view.append(float(old @ second))

    def summary(values: list[float]) -> dict:
        return {"median": float(np.median(values)), "p5": float(np.percentile(values, 5))}

    result = {
        "n_images": len(images),
        "image_size": list(size),
        "decode_side": side,
        "view_ms_full_size": {"runs": full, "median": statistics.median(full)},
        "view_ms_working_size": {"runs": working, "median": statistics.median(working)},
        "speedup": statistics.median(full) / statistics.median(working),
        "cosine_same_draws_full_vs_working": summary(same_draws),
        "cosine_two_views_full_size": summary(other_view),
        "command": " ".join(["scripts/bench_views.py", *(argv or sys.argv[1:])]),
    }
    print(
        f"one view: {result['view_ms_full_size']['median']:.1f} ms at full size, "
        f"{result['view_ms_working_size']['median']:.1f} ms at the backbone's size "
        f"({result['speedup']:.2f}x); cosine of the two versions of a view: median "
        f"{result['cosine_same_draws_full_vs_working']['median']:.4f} (p5 "
        f"{result['cosine_same_draws_full_vs_working']['p5']:.4f}), of two different views: "
        f"median {result['cosine_two_views_full_size']['median']:.4f} "
        f"(p5 {result['cosine_two_views_full_size']['p5']:.4f})"
    )
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
