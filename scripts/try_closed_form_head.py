"""Experiment: the projection head in closed form (a Fisher discriminant), from few views.

#16 asks for a full run at most 1.3x the embed-only run; on 5,000 photos that leaves the
head about 2.3 s, while the default head takes about 20 s (4,000 view forward passes and
30 epochs of training). A linear head need not be trained by gradient descent: the
directions the views change (the within-image scatter ``S_w``) against the directions
the images differ in (the scatter of all the run's vectors, ``S_t``) give it in closed
form, the generalised eigenvectors of

    S_t w = lambda (S_w' ) w,    S_w' = (1 - a) S_w + a tr(S_w) / d I,

the ``dim`` of largest ``lambda`` (``a`` the shrinkage, since ``S_w`` from a few hundred
images is far from full rank in 1,280 dimensions). The head is then
``h(x) = W^T (x - mu) / sigma``, the default head's linear form, so the run applies it as
it applies the trained one. ``S_t`` costs nothing (every image's vector is already
there); ``S_w`` needs views, and ``--view-images`` of them (a random subset of the
default run's 2,000 sampled images, each with its 2 views) are used.

It runs ``scripts/suite.py`` with the pipeline's head fit replaced (``fit_adaptation``,
for the run's head only) and the views limited to the subset; every other step is the
default run's. The views come from the suite's embedding cache when a default run
already made them.

Rule, written before any run: the closed-form head (with the view images and shrinkage
chosen on development seed 0) becomes the default only if, averaged over development
seeds 0 and 100, flagged-cell F1 falls by at most 0.03 on every dataset and by at most
0.005 on the mean of the four, and pair F1 by at most 0.01 on every dataset, against the
default head (``docs/suite/refine_dev/default_s*.json``).

    python scripts/try_closed_form_head.py --view-images 2000 --shrinkage 0.1 run \\
        --root /tmp/suite --seeds 0 --out /tmp/exp/cf/s0 --work /tmp/exp/cj0_work
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def fisher_head(
    embeddings, views, *, dim: int, shrinkage: float, seed: int, weighting: str = "none"
):
    """The closed-form head of the module docstring, as an ``Adaptation``."""
    from scipy.linalg import eigh

    from clusterclean.adapt import Adaptation

    started = time.perf_counter()
    x = embeddings.vectors.astype(np.float64)
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).mean())) or 1.0
    u = (x - mean) / scale
    total = u.T @ u / len(u)
    # Each sampled image's items (its vector and its views) about their own mean.
    items = np.concatenate(
        [u[views.rows][:, None, :], (views.vectors.astype(np.float64) - mean) / scale], axis=1
    )
    deviations = (items - items.mean(axis=1, keepdims=True)).reshape(-1, u.shape[1])
    within = deviations.T @ deviations / len(deviations)
    d = within.shape[0]
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / d * np.eye(d)
    values, vectors = eigh(total, within, subset_by_index=[d - dim, d - 1])
    # In the head's output, direction k spreads the images by lambda_k and one image's
    # views by 1; "plda" scales it by lambda_k / (1 + lambda_k), the share of its spread
    # that tells images apart, "sqrt" by sqrt(lambda_k).
    factor = {"none": 1.0, "plda": values / (1 + values), "sqrt": np.sqrt(values)}[weighting]
    weights = (vectors * factor)[:, ::-1].astype(np.float32)
    return Adaptation(
        mean=mean.astype(np.float32),
        scale=scale,
        weights=(np.ascontiguousarray(weights),),
        biases=(np.zeros(dim, dtype=np.float32),),
        method="views",
        backbone=embeddings.backbone,
        info={
            "n_images": len(embeddings),
            "n_view_images": len(views.rows),
            "n_views": views.n_views,
            "closed_form": True,
            "shrinkage": shrinkage,
            "weighting": weighting,
            "top_eigenvalues": [round(float(v), 4) for v in values[::-1][:5]],
            "seed": seed,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def main(argv: list[str]) -> int:
    from suite import main_with_head_views

    import clusterclean.adapt as adapt
    from clusterclean.views import AugmentedViews

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--view-images", type=int, required=True)
    parser.add_argument("--shrinkage", type=float, required=True)
    parser.add_argument("--weighting", choices=("none", "plda", "sqrt"), default="none")
    parser.add_argument("--trained", action="store_true", help="keep the trained head")
    args, rest = parser.parse_known_args(argv)

    def subset_views(dataset, config, n_views, max_images, progress, model, pixel_views):
        views = pixel_views(dataset, config, n_views, max_images, progress, model)
        if args.view_images >= len(views.rows):
            return views
        keep = np.sort(
            np.random.default_rng(config.seed).choice(
                len(views.rows), args.view_images, replace=False
            )
        )
        return AugmentedViews(
            rows=views.rows[keep], vectors=views.vectors[keep], backbone=views.backbone
        )

    if not args.trained:

        def fit(embeddings, views, *, dim, seed, **_):
            return fisher_head(
                embeddings,
                views,
                dim=dim,
                shrinkage=args.shrinkage,
                seed=seed,
                weighting=args.weighting,
            )

        adapt.fit_adaptation = fit
    return main_with_head_views(subset_views, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
