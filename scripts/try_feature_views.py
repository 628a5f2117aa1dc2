"""Experiment: the head's views made in feature space instead of from pixels.

A view then costs no forward pass: the images' backbone pass already computes
EfficientNet-Lite0's last spatial map (1280 x 7 x 7 at 224 px), and a view is the mean
of a random box of it, drawn like the pixel views' crop (``views.CROP_AREA`` of the map's
area, aspect ratio in ``views.CROP_ASPECT``, seeded by ``(seed, row, view)``), then
L2-normalised. There is no colour or degradation change: those need the pixels.

It runs ``scripts/suite.py`` with the head's view embedding replaced (the pipeline's
``_embed_views``, for the head's call only; the calibration's views are unchanged), so
every other step is the default run's. The maps are computed once per dataset with
torch and kept as float16 in ``--maps``. Only for ``efficientnet_lite0`` (its trunk's
``extract_features``).

    python scripts/try_feature_views.py --maps /tmp/exp/fv/maps run --root /tmp/suite \\
        --seeds 0 --out /tmp/exp/fv/crop_s0 --work /tmp/exp/fv/work_s0
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def spatial_maps(paths: list[str], backbone, folder: Path) -> np.ndarray:
    """(n, 1280, 7, 7) float16 maps of the files, computed once and kept in ``folder``."""
    import torch

    from clusterclean.embed import read_image

    folder.mkdir(parents=True, exist_ok=True)
    file = folder / (hashlib.sha1("\n".join(paths).encode()).hexdigest()[:16] + ".npy")
    if file.exists():
        return np.load(file)
    parts = []
    with torch.inference_mode():
        for first in range(0, len(paths), 32):
            batch = torch.stack([backbone.transform(read_image(p)) for p in paths[first:][:32]])
            parts.append(backbone.model.net.extract_features(batch).numpy().astype(np.float16))
    maps = np.concatenate(parts)
    np.save(file, maps)
    return maps


def feature_views(maps: np.ndarray, rows: np.ndarray, n_views: int, seed: int) -> np.ndarray:
    """(n, n_views, channels) unit vectors: each the mean of a random box of the map."""
    from clusterclean.views import CROP_AREA, CROP_ASPECT

    n_images, channels, height, width = maps.shape
    vectors = np.zeros((n_images, n_views, channels), dtype=np.float32)
    for i in range(n_images):
        grid = maps[i].astype(np.float32)
        for view in range(n_views):
            rng = np.random.default_rng([seed, int(rows[i]), view])
            area = rng.uniform(*CROP_AREA)
            aspect = np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1])))
            w = int(np.clip(round(width * np.sqrt(area * aspect)), 1, width))
            h = int(np.clip(round(height * np.sqrt(area / aspect)), 1, height))
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            vector = grid[:, top : top + h, left : left + w].mean(axis=(1, 2))
            vectors[i, view] = vector / np.linalg.norm(vector)
    return vectors


def main(argv: list[str]) -> int:
    from suite import main_with_head_views

    from clusterclean.embed import image_inputs, resolve_backbone
    from clusterclean.views import AugmentedViews, sample_rows

    if len(argv) < 2 or argv[0] != "--maps":
        raise SystemExit("usage: try_feature_views.py --maps FOLDER <suite.py arguments>")
    folder, argv = Path(argv[1]), argv[2:]

    def boxes_of_maps(dataset, config, n_views, max_images, progress, model, pixel_views):
        _, paths = image_inputs(dataset, "try_feature_views")
        rows = sample_rows(len(paths), max_images, config.seed)
        backbone = resolve_backbone(config.backbone, None, "cpu", "try_feature_views")
        maps = spatial_maps([paths[r] for r in rows], backbone, folder)
        vectors = feature_views(maps, rows, n_views, config.seed)
        return AugmentedViews(rows=rows, vectors=vectors, backbone=backbone.name)

    return main_with_head_views(boxes_of_maps, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
