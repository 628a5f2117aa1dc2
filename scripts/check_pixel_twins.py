"""How close two images with the same pixels are in the backbone's space, and how many
images a run decodes again for the pixel hash.

The run decodes again, for ``exact_pixels``, only the images of a listed pair close
enough for twins (:func:`clusterclean.duplicates.pixel_hash_candidates`): cosine >=
``EXACT_TWIN_MIN_COSINE`` where both files decode exactly
(:func:`clusterclean.duplicates.exact_decodes`: they reach the backbone as the same
tensor), else >= ``PIXEL_HASH_MIN_COSINE``. The hardest twin is a JPEG and a PNG of its
decoded pixels: a large JPEG is decoded at reduced scale (``draft``), the PNG at full
size and resized. This script saves scikit-image's sample photos at 1x, 2x and 3x as
JPEG (quality 90) and as the PNG of the JPEG's pixels, embeds both with EfficientNet-Lite0
the way a run reads them, and prints the cosines (their minimum must stay above the wide
cut). With ``--reports``, it also prints the share of each report's images that the rule
decodes again: ``pixel_hash_candidates`` on the report's neighbour lists
(``neighbors.parquet``) and the files' headers, as the run does.

    python scripts/check_pixel_twins.py --reports /tmp/exp/default-work/s0 \\
        --json docs/perf/pixel_twins.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402
from bench_views import unit_vector  # noqa: E402

PHOTOS = ("retina", "hubble_deep_field", "astronaut", "coffee", "rocket", "chelsea")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=None, help="folder of *-report folders")
    parser.add_argument("--json", type=Path, default=Path("pixel_twins.json"))
    args = parser.parse_args(argv)

    import skimage.data
    from PIL import Image

    from clusterclean.backbones import load_backbone
    from clusterclean.duplicates import (
        EXACT_TWIN_MIN_COSINE,
        PIXEL_HASH_MIN_COSINE,
        exact_decodes,
        pixel_hash_candidates,
    )
    from clusterclean.embed import decode_side, read_image
    from clusterclean.report import read_report

    backbone = load_backbone("efficientnet_lite0", device="cpu")
    side = decode_side(backbone.input_size)

    def vector(path: Path) -> np.ndarray:
        return unit_vector(backbone, read_image(path, min_size=side))

    twins = []
    with tempfile.TemporaryDirectory() as scratch:
        jpeg, png = Path(scratch) / "twin.jpg", Path(scratch) / "twin.png"
        for name in PHOTOS:
            array = getattr(skimage.data, name)()
            photo = Image.fromarray(array[..., :3] if array.ndim == 3 else array).convert("RGB")
            for scale in (1, 2, 3):
                photo.resize((photo.width * scale, photo.height * scale)).save(jpeg, quality=90)
                with Image.open(jpeg) as decoded:
                    decoded.convert("RGB").save(png)
                cosine = float(vector(jpeg) @ vector(png))
                twins.append({"photo": name, "scale": scale, "cosine": cosine})
                print(f"{name} x{scale}: JPEG vs PNG of its pixels, cosine {cosine:.5f}")
    worst = min(t["cosine"] for t in twins)
    print(f"lowest twin cosine {worst:.5f}; cut {PIXEL_HASH_MIN_COSINE}")
    shares = {}
    if args.reports is not None:
        for folder in sorted(args.reports.glob("*-report")):
            # the run's own rule, on the report's neighbour lists and the files' headers
            report = read_report(folder)
            exact = exact_decodes(report.images["path"], min_size=side)
            again = pixel_hash_candidates(
                report.neighbors.indices, report.neighbors.similarities, exact
            )
            share = float(again.mean())
            shares[folder.name] = share
            print(f"{folder.name}: {share:.1%} of the images decoded again for the pixel hash")
    result = {
        "cut": PIXEL_HASH_MIN_COSINE,
        "exact_cut": EXACT_TWIN_MIN_COSINE,
        "twins": twins,
        "lowest_twin_cosine": worst,
        "share_decoded_again": shares,
        "command": " ".join(["scripts/check_pixel_twins.py", *(argv or sys.argv[1:])]),
    }
    write_result(args.json, result)
    return 0 if worst >= PIXEL_HASH_MIN_COSINE else 1


if __name__ == "__main__":
    sys.exit(main())
