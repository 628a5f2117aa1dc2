"""Try two per-attribute features in the trust model, leave one dataset out (not shipped).

The features, for a suspected cell on attribute ``a`` with given value ``v``:

- ``given_rate``: the share of the dataset's known labels of ``a`` equal to ``v`` (a rare
  value of a near-constant attribute is likely a mistake);
- ``kappa``: how much more than chance the labels of ``a`` agree between each image and
  its kNN neighbours *outside its component* (``neighbors.parquet``), Cohen's kappa
  ``(p_agree - p_chance) / (1 - p_chance)`` with ``p_chance = q^2 + (1 - q)^2``, ``q`` the
  share of 1s: about 0 for an attribute the images do not show.

For the shipped features alone and with the extra ones, the model is fitted (as
``scripts/fit_trust.py`` does, g = never) on the ``--fit`` datasets minus one, its cut
chosen on them (smallest cut >= 90 % precise on each), and measured on the one left out;
``--probe`` datasets are measured at fixed cuts with the model fitted on all ``--fit``
datasets (its precision curve).

    python scripts/try_trust_features.py --work /tmp/exp/default-work/s0 --root /tmp/suite/s0 \\
        --json docs/suite/trust_attribute_features_s0.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402
from fit_trust import TARGET_PRECISION, rescored, scores  # noqa: E402

from clusterclean.trust import FEATURES, cell_features, find_grouping_issues  # noqa: E402

EXTRA = ("given_rate", "kappa")
PROBE_CUTS = (0.05, 0.5, 0.8, 0.9, 0.95, 0.98)


def attribute_stats(report, folder: Path) -> tuple[dict, dict]:
    """Per attribute: the share of 1s, and kappa with the out-of-component neighbours."""
    labels = report.dataset.labels
    component = report.images["component_id"].to_numpy()
    pairs = pd.read_parquet(folder / "neighbors.parquet", columns=["row", "neighbor_row"])
    a, b = pairs["row"].to_numpy(), pairs["neighbor_row"].to_numpy()
    outside = component[a] != component[b]
    a, b = a[outside], b[outside]
    share, kappa = {}, {}
    for k, name in enumerate(report.dataset.attributes):
        column = labels[:, k]
        q = float(np.nanmean(column))
        known = ~np.isnan(column[a]) & ~np.isnan(column[b])
        chance = q * q + (1 - q) * (1 - q)
        agree = float((column[a][known] == column[b][known]).mean()) if known.any() else chance
        share[name], kappa[name] = q, (agree - chance) / (1 - chance) if chance < 1 else 0.0
    return share, kappa


def candidates(folder: Path, data: Path) -> pd.DataFrame:
    """Every suspected cell before the trust step: shipped and extra features, truth."""
    report, issues = rescored(folder)
    kept, _ = find_grouping_issues(issues, min_grouping_attributes=1000)
    frame = cell_features(kept, report.images, report.components, report.component_attributes)
    share, kappa = attribute_stats(report, folder)
    attribute = kept["attribute"].astype(str)
    q = attribute.map(share).to_numpy(dtype=float)
    frame["given_rate"] = np.where(kept["given_label"].to_numpy(dtype=float) == 1, q, 1 - q)
    frame["kappa"] = attribute.map(kappa).to_numpy(dtype=float)
    planted = pd.read_csv(data / "planted.csv")
    wrong = set(zip(planted["image_id"], planted["attribute"], strict=True))
    frame["wrong"] = np.array(
        [(i, x) in wrong for i, x in zip(kept["image_id"], kept["attribute"], strict=True)],
        dtype=bool,
    )
    frame["n_planted"] = len(wrong)
    return frame


def fit(frames: list[pd.DataFrame], features: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression

    data = pd.concat(frames, ignore_index=True)
    x = data[features].to_numpy(dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, data["wrong"])
    return {"mean": mean, "scale": scale, "w": model.coef_[0], "b": float(model.intercept_[0])}


def confidence(frame: pd.DataFrame, model: dict, features: list[str]) -> np.ndarray:
    x = frame[features].to_numpy(dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(model["b"] + ((x - model["mean"]) / model["scale"]) @ model["w"])))


def choose_cut(frames: list[pd.DataFrame], model: dict, features: list[str]) -> float:
    for cut in np.round(np.arange(0.05, 1.0, 0.01), 2):
        if all(
            scores(f, confidence(f, model, features), cut)["precision"] >= TARGET_PRECISION
            for f in frames
        ):
            return float(cut)
    return 0.99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of *-report folders")
    parser.add_argument("--root", type=Path, required=True, help="the suite datasets, same seed")
    parser.add_argument("--fit", default="fashion_mild,photo_digits,two_styles")
    parser.add_argument("--probe", default="crowd_strong")
    parser.add_argument("--json", type=Path, default=Path("trust_attribute_features.json"))
    args = parser.parse_args(argv)
    fitted, probed = args.fit.split(","), [p for p in args.probe.split(",") if p]
    frames = {
        name: candidates(args.work / f"{name}-report", args.root / name) for name in fitted + probed
    }
    result = {"command": " ".join(["scripts/try_trust_features.py", *sys.argv[1:]])}
    for label, features in (("shipped", list(FEATURES)), ("with_extra", [*FEATURES, *EXTRA])):
        held_out = {}
        for name in fitted:
            train = [frames[n] for n in fitted if n != name]
            model = fit(train, features)
            cut = choose_cut(train, model, features)
            held_out[name] = scores(frames[name], confidence(frames[name], model, features), cut)
            held_out[name]["cut"] = cut
        model = fit([frames[n] for n in fitted], features)
        curves = {
            name: {
                str(cut): scores(frames[name], confidence(frames[name], model, features), cut)
                for cut in PROBE_CUTS
            }
            for name in probed
        }
        mean_f1 = float(np.mean([v["f1"] for v in held_out.values()]))
        result[label] = {"held_out": held_out, "mean_held_out_f1": mean_f1, "probe": curves}
        print(f"{label}: mean held-out F1 {mean_f1:.3f}")
        for name, row in held_out.items():
            print(
                f"  {name} (cut {row['cut']:.2f}): P {row['precision']:.3f} "
                f"R {row['recall']:.3f} F1 {row['f1']:.3f}"
            )
        for name, curve in curves.items():
            line = ", ".join(f"{c}: P {r['precision']:.3f}" for c, r in curve.items())
            print(f"  {name}, model fitted on {'+'.join(fitted)}: {line}")
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
