"""Experiment: the head's views through an INT8 copy of the backbone's ONNX model.

``speed``: quantises the cached EfficientNet-Lite0 export with ONNX Runtime's static QDQ
quantisation (per-channel INT8 weights, UINT8 activations, calibrated on 64 JPEGs of
``--images``), then runs the float and the INT8 model alternately on 256 other images of
the folder (batches of 4, 2 threads), and prints and writes images/s (median of
``--repeats``) and the cosine of each image's INT8 vector to its float vector.

``suite ...``: runs ``scripts/suite.py`` with the head's views embedded by the INT8 copy
(calibrated on the first 64 images of the head's sample; no view cache), everything else
as the default run.

    python scripts/try_int8_views.py speed --images /tmp/exp/bench5k/jpegs \\
        --json docs/suite/head_int8_speed.json
    python scripts/try_int8_views.py --models /tmp/exp/q8/models suite run --root /tmp/suite \\
        --seeds 0 --out /tmp/exp/q8/s0 --work /tmp/exp/q8/work_s0
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import write_result  # noqa: E402

CALIBRATION_IMAGES = 64
ROWS = 4


def _tensors(backbone, paths: list[str]) -> np.ndarray:
    from clusterclean.embed import decode_side, read_image

    side = decode_side(backbone.input_size)
    return np.stack([backbone.transform(read_image(p, min_size=side)).numpy() for p in paths])


def int8_copy(onnx_path: Path, backbone, calibration: list[str], folder: Path) -> Path:
    """The INT8 QDQ copy of ``onnx_path`` calibrated on ``calibration``, kept in ``folder``."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1("\n".join([str(onnx_path), *calibration]).encode()).hexdigest()[:16]
    out = folder / f"{key}.onnx"
    if out.exists():
        return out
    batches = _tensors(backbone, calibration)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.first = 0

        def get_next(self):
            if self.first >= len(batches):
                return None
            self.first += ROWS
            return {name: batches[self.first - ROWS : self.first]}

    prepared = folder / f"{key}.pre.onnx"
    quant_pre_process(str(onnx_path), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def speed(args) -> int:
    from clusterclean.backbones import load_backbone
    from clusterclean.engine import OnnxRuntimeEngine, export_onnx

    backbone = load_backbone("efficientnet_lite0", device="cpu")
    source = Path(export_onnx(backbone))  # the default engine cache
    files = sorted(str(p) for p in Path(args.images).glob("*.jpg"))
    if len(files) < CALIBRATION_IMAGES + 256:
        raise SystemExit(f"--images needs at least {CALIBRATION_IMAGES + 256} JPEGs")
    quantised = int8_copy(source, backbone, files[:CALIBRATION_IMAGES], args.models)
    test = _tensors(backbone, files[-256:])
    engines = {
        "float": OnnxRuntimeEngine(source, threads=2, rows=ROWS),
        "int8": OnnxRuntimeEngine(quantised, threads=2, rows=ROWS),
    }
    vectors = {name: engine(test) for name, engine in engines.items()}  # also warms up
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine(test)
            rates[name].append(len(test) / (time.perf_counter() - started))
    unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in vectors.items()}
    cosine = (unit["float"] * unit["int8"]).sum(axis=1)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"float {medians['float']:.1f} img/s, int8 {medians['int8']:.1f} img/s "
        f"({medians['int8'] / medians['float']:.2f}x); cosine int8 vs float: median "
        f"{np.median(cosine):.4f}, lowest {cosine.min():.4f}"
    )
    write_result(
        args.json,
        {
            "images_per_s": rates,
            "median_images_per_s": medians,
            "int8_over_float": medians["int8"] / medians["float"],
            "cosine_int8_float": {"median": float(np.median(cosine)), "min": float(cosine.min())},
            "n_images": len(test),
            "rows_per_call": ROWS,
            "threads": 2,
            "command": " ".join(["scripts/try_int8_views.py", *sys.argv[1:]]),
        },
    )
    return 0


def suite_with_int8_views(models: Path, argv: list[str]) -> int:
    from dataclasses import replace

    from suite import main_with_head_views

    import clusterclean.pipeline as pipeline
    from clusterclean.embed import image_inputs
    from clusterclean.engine import OnnxRuntimeEngine
    from clusterclean.views import sample_rows

    class Int8Views:
        """The run's loaded model, whose views go through the INT8 copy."""

        def __init__(self, loaded, calibration: list[str]) -> None:
            self.loaded, self.calibration = loaded, calibration

        def load_smaller(self, longer_side):
            backbone, engine = self.loaded.load()
            source = engine.model
            if isinstance(source, bytes):
                models.mkdir(parents=True, exist_ok=True)
                (models / "source.onnx").write_bytes(source)
                source = models / "source.onnx"
            quantised = int8_copy(Path(source), backbone, self.calibration, models)
            return backbone, OnnxRuntimeEngine(quantised, threads=engine.threads)

    def int8_views(dataset, config, n_views, max_images, progress, model, pixel_views):
        _, paths = image_inputs(dataset, "try_int8_views")
        rows = sample_rows(len(paths), max_images, config.seed)
        calibration = [paths[r] for r in rows[:CALIBRATION_IMAGES]]
        model = Int8Views(model or pipeline.LoadedModel(config), calibration)
        config = replace(config, cache_dir=None)  # the cache would mix INT8 and float views
        return pixel_views(dataset, config, n_views, max_images, progress, model)

    return main_with_head_views(int8_views, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/int8-models"))
    sub = parser.add_subparsers(dest="command", required=True)
    timing = sub.add_parser("speed")
    timing.add_argument("--images", type=Path, required=True)
    timing.add_argument("--repeats", type=int, default=5)
    timing.add_argument("--json", type=Path, default=Path("int8_speed.json"))
    sub.add_parser("suite", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "suite":
        return suite_with_int8_views(args.models, rest)
    return speed(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
