"""Generate the Fashion-MNIST PETA-like benchmark and embed its images once.

    .venv/bin/python scripts/make_benchmark.py --out benchmarks/fashion

writes, under ``--out``:

* ``images/*.jpg``, ``labels.csv`` (TRUE labels, split by person),
  ``labels_leaky.csv`` (split by image), ``persons.csv``
  (see :func:`clusterclean.synth.make_fashion_benchmark`);
* ``embeddings.parquet`` (``image_id``, ``embedding``; the report's schema), so
  that ``scripts/evaluate_benchmark.py`` and ``scripts/compare_peers.py`` reuse
  one embedding for every noise level and strategy;
* ``benchmark.json``: the parameters, counts and timings.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``). The embedding dominates the run
time: ~1,500 images at 128x128 take a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from clusterclean.errors import ClustercleanError

logger = logging.getLogger("make_benchmark")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate_benchmark import write_json  # noqa: E402  (a sibling script, not a package)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/fashion"))
    parser.add_argument("--persons", type=int, default=430, help="number of persons")
    parser.add_argument("--min-views", type=int, default=1)
    parser.add_argument("--max-views", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="side of the written images")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--input-size", type=int, default=128, help="side of the model input (224 = slower)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    return parser


def make(args: argparse.Namespace) -> dict:
    from clusterclean.backbones import load_backbone
    from clusterclean.embed import embed_images
    from clusterclean.report import write_table
    from clusterclean.synth import make_fashion_benchmark

    timings = {}
    started = time.perf_counter()
    bench = make_fashion_benchmark(
        args.out,
        n_persons=args.persons,
        min_views=args.min_views,
        max_views=args.max_views,
        seed=args.seed,
        size=(args.image_size, args.image_size),
    )
    timings["generate_s"] = round(time.perf_counter() - started, 2)
    logger.info("generated %d images of %d persons", len(bench.labels), len(bench.persons))

    started = time.perf_counter()
    backbone = load_backbone(
        args.backbone, device=args.device, input_size=(args.input_size, args.input_size)
    )
    paths = [str(bench.images_dir / name) for name in bench.labels["image"]]
    embeddings = embed_images(
        paths, backbone=backbone, batch_size=args.batch_size, device=args.device, progress=True
    )
    ids = [Path(p).name for p in embeddings.ids]
    frame = pd.DataFrame({"image_id": ids, "embedding": list(embeddings.vectors)})
    write_table(
        "embeddings", frame, args.out / "embeddings.parquet", metadata={"backbone": args.backbone}
    )
    timings["embed_s"] = round(time.perf_counter() - started, 2)
    info = {
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "counts": {
            "images": len(bench.labels),
            "persons": len(bench.persons),
            "embedded": len(ids),
            "views_per_person": bench.persons["n_views"].value_counts().sort_index().to_dict(),
            "split_images": bench.labels["split"].value_counts().to_dict(),
        },
        "attributes": {"visible": list(bench.visible), "invisible": list(bench.invisible)},
        "confusions": [list(pair) for pair in bench.confusions],
        "embedding": {"dim": int(embeddings.vectors.shape[1]), "dtype": "float32"},
        "timings": timings,
    }
    write_json(info, args.out / "benchmark.json")
    return info


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        info = make(args)
    except ClustercleanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"counts": info["counts"], "timings": info["timings"]}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
