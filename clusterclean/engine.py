"""Inference engines: what runs a backbone's forward pass over a batch of image tensors.

On CPU the backbone is exported once to ONNX (torch's exporter) and run with ONNX
Runtime, several times faster than torch eager on the same cores (measured in
``scripts/bench_embed.py``); torch stays for the GPU, for models that do not
export, and for training the projection head (:mod:`clusterclean.adapt`).

An engine is a callable ``batch -> features``: a float32 tensor or array of shape
``(batch, 3, height, width)`` in, float32 features of shape ``(batch, dim)`` out.
:func:`load_engine` picks one:

- ``"onnxruntime"``: the backbone's ONNX export, cached on disk under
  ``<cache_dir>/<backbone>-<key>.onnx``, the key a hash of the backbone name, a
  hash of its weights (:func:`weights_hash`), its ``weights_id``, its input size,
  the ONNX opset, the precision and the exporter. An export is written to a
  temporary file, checked against torch on a fixed random batch (cosine >=
  :data:`MIN_EXPORT_COSINE` on every row) and only then renamed into place, so
  the cache holds whole, checked models only.
- ``"torch"``: the backbone's own torch module (float16 autocast on a GPU).
- ``"auto"``: ONNX Runtime on CPU when it is installed and the export succeeds,
  torch otherwise; the choice and its reason are logged.

torch and onnxruntime are imported inside the functions, so ``import clusterclean``
stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_choice, check_int
from .atomic import write_bytes
from .errors import (
    EngineError,
    InvalidInputError,
    InvalidTypeError,
    MissingDependencyError,
    first_line,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from .backbones import Backbone

__all__ = [
    "ENGINES",
    "Engine",
    "OnnxRuntimeEngine",
    "TorchEngine",
    "available_cores",
    "default_engine_cache",
    "export_onnx",
    "load_engine",
    "weights_hash",
]

logger = logging.getLogger(__name__)

#: Engine names accepted by :func:`load_engine` (and ``--engine``).
ENGINES = ("auto", "onnxruntime", "torch")
#: ONNX opset of the exports (ONNX Runtime 1.16+ runs it).
ONNX_OPSET = 18
#: Every row of an export's output on a fixed random batch has at least this cosine
#: similarity with torch's; measured: >= 0.9999998 on every built-in backbone.
MIN_EXPORT_COSINE = 0.9999
#: Bump when the export recipe changes in a way that changes the exported file.
_EXPORT_VERSION = 1
_INSTALL_HINT = "pip install onnxruntime onnx onnxscript (pinned in requirements.txt)"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_engine_cache() -> Path:
    """Where exported models are kept: ``$CLUSTERCLEAN_ENGINE_CACHE``, else
    ``$XDG_CACHE_HOME/clusterclean/engines`` (``~/.cache/clusterclean/engines``)."""
    if os.environ.get("CLUSTERCLEAN_ENGINE_CACHE"):
        return Path(os.environ["CLUSTERCLEAN_ENGINE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clusterclean" / "engines"


class Engine:
    """What runs the forward pass: call it on a batch.

    ``engine(batch)``: ``batch`` a float32 tensor or array of shape
    ``(batch, 3, height, width)``; returns float32 features of shape ``(batch, dim)``.

    Attributes
    ----------
    name : str
        ``"onnxruntime"`` or ``"torch"``.
    threads : int
        Threads its forward pass uses on CPU (0 on a GPU).
    detail : str
        The model file (ONNX Runtime) or the device (torch), for the log and ``run.json``.
    """

    #: Whether decoding worker processes may run this engine themselves.
    runs_in_workers = False
    #: Whether it runs on a GPU (float16 autocast: the cache keeps its vectors apart).
    on_gpu = False

    def __init__(self, name: str, threads: int, detail: str) -> None:
        self.name = name
        self.threads = threads
        self.detail = detail

    def __call__(self, batch) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def for_workers(self, n_workers: int) -> Engine:
        """The engine each of ``n_workers`` worker processes runs (itself by default)."""
        return self

    def describe(self) -> dict[str, Any]:
        """``{"name", "threads", "detail"}``: what ``run.json`` records."""
        return {"name": self.name, "threads": self.threads, "detail": self.detail}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads}, {self.detail})"


class TorchEngine(Engine):
    """The backbone's torch module on its device; float16 autocast on a GPU."""

    def __init__(self, model: torch.nn.Module) -> None:
        import torch

        self.model = model
        self.device = _module_device(model)
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        super().__init__("torch", threads, str(self.device))
        self.on_gpu = self.device.type == "cuda"

    def __call__(self, batch) -> np.ndarray:
        import torch

        tensor = torch.as_tensor(batch).to(self.device, non_blocking=self.on_gpu)
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.float16, enabled=self.on_gpu),
        ):
            return self.model(tensor).float().cpu().numpy()


#: Images per ONNX Runtime call: a batch runs in slices of this many. Rows are independent,
#: so the features are the same bit for bit; EfficientNet-Lite0 runs 20-27 % faster (one
#: thread: 4.7 against 6.3 ms per image at 32 rows; two: 2.6 against 3.3 ms), because its
#: depthwise layers keep 4 images' activations in cache rather than 32, and touches a
#: quarter of the memory (18,000 first-call page faults against 74,000: less system time in
#: each worker). ResNet-50's large matrix products run alike at 2-32 rows (17.7 ms per image).
#: Session 26, 2 cores; ``scripts/bench_embed.py`` measures it (``bare_whole_batch``).
FORWARD_ROWS = 4


class OnnxRuntimeEngine(Engine):
    """An ONNX model run by ONNX Runtime's CPU execution provider.

    Parameters
    ----------
    model : str, Path or bytes
        The ``.onnx`` file (or its bytes). Its first input takes the images
        ``(batch, 3, H, W)`` float32; its first output is ``(batch, dim)``.
    rows : int, optional
        Images per ONNX Runtime call (default :data:`FORWARD_ROWS`); a model whose
        batch axis is fixed is called with that many.
    threads : int
        Intra-op threads. Idle threads sleep instead of spinning
        (``session.intra_op.allow_spinning = 0``), so they leave the cores to
        the other processes; measured cost on EfficientNet-Lite0 at 2 threads:
        under 1% of throughput.

    The session is opened on first use, not when the engine is made: with worker
    processes (:func:`clusterclean.embed.plan_workers`) only the workers run the
    model, each with its own session, and this process never needs one. The
    engine pickles without its session, and :meth:`for_workers` gives the copy
    each of ``n`` worker processes runs. A file that ONNX Runtime cannot load
    raises :class:`~clusterclean.errors.InvalidInputError` naming it on first
    use; :attr:`session` opens it now.
    """

    #: Worker processes may run this engine themselves (see clusterclean.embed).
    runs_in_workers = True

    def __init__(self, model: str | Path | bytes, *, threads: int, rows: int | None = None) -> None:
        self.model = model if isinstance(model, bytes) else str(model)
        self.rows = rows or FORWARD_ROWS  # a fixed batch size in the model wins (see _open)
        detail = "<in memory>" if isinstance(model, bytes) else str(model)
        super().__init__("onnxruntime", threads, detail)
        self._session = None

    def _open(self):
        if self._session is not None:
            return self._session
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are for model authors
        try:
            session = ort.InferenceSession(
                self.model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            where = "the exported model" if isinstance(self.model, bytes) else repr(self.model)
            raise InvalidInputError(
                f"ONNX Runtime cannot load {where} ({type(exc).__name__}: "
                f"{first_line(exc)}). Check that the file is a "
                "whole ONNX model (export it again if it was cut short)."
            ) from exc
        self._session = session
        images = session.get_inputs()[0]
        self.input_name = images.name
        # a model exported with a fixed batch size is called with exactly that many rows
        fixed = images.shape[0] if images.shape else None
        if isinstance(fixed, int) and fixed > 0:
            self.rows = fixed
        return session

    @property
    def session(self):
        """The ``onnxruntime.InferenceSession`` (opened on first use in a new process)."""
        return self._open()

    def for_workers(self, n_workers: int) -> OnnxRuntimeEngine:
        """The engine each of ``n_workers`` processes runs: ``threads // n_workers``
        threads (at least 1), its session opened in the worker on first use."""
        copy = object.__new__(OnnxRuntimeEngine)
        copy.__dict__.update(self.__getstate__())
        copy.threads = max(1, self.threads // max(1, n_workers))
        return copy

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def __call__(self, batch) -> np.ndarray:
        """Features of ``batch`` ``(n, 3, H, W)``, run ``rows`` images at a time."""
        session = self._open()
        array = batch.numpy() if hasattr(batch, "numpy") else batch
        array = np.ascontiguousarray(array, dtype=np.float32)
        parts = [
            session.run(None, {self.input_name: array[start : start + self.rows]})[0]
            for start in range(0, max(len(array), 1), self.rows)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


# --------------------------------------------------------------------------- export


def _module_device(model) -> torch.device:
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            f"The 'onnxruntime' engine needs the onnxruntime package: {_INSTALL_HINT}; or use "
            "engine='torch' (--engine torch)."
        ) from exc
    return onnxruntime


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of the module's state (names, dtypes, shapes and bytes of every tensor)."""
    import torch

    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _export_key(backbone: Backbone, state_hash: str) -> dict[str, Any]:
    import torch

    return {
        "backbone": backbone.name,
        "weights_sha256": state_hash,
        # what the backbone says identifies it: for Backbone.from_module, also the layers
        # without weights, which the state dict does not show
        "weights_id": backbone.weights_id,
        "input_size": list(backbone.input_size),
        "dim": backbone.dim,
        "opset": ONNX_OPSET,
        "precision": "float32",
        "exporter": f"torch {torch.__version__.split('+')[0]}",
        "export_version": _EXPORT_VERSION,
    }


def _export_bytes(model: torch.nn.Module, input_size: tuple[int, int]) -> bytes:
    """The module as ONNX bytes with a dynamic batch axis (TorchScript-based exporter,
    then the torch.export-based one when that fails)."""
    import torch

    example = torch.rand(2, 3, *input_size)
    errors = []
    for dynamo in (False, True):
        buffer = io.BytesIO()
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),  # the exporter prints its steps
                torch.inference_mode(False),
                torch.no_grad(),
            ):
                warnings.simplefilter("ignore")
                # the two exporters name the dynamic batch axis differently
                dynamic = (
                    {
                        "dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},),
                        "external_data": False,
                        "verbose": False,
                    }
                    if dynamo
                    else {"dynamic_axes": {"images": {0: "batch"}, "features": {0: "batch"}}}
                )
                torch.onnx.export(
                    model,
                    (example,),
                    buffer,
                    input_names=["images"],
                    output_names=["features"],
                    opset_version=ONNX_OPSET,
                    dynamo=dynamo,
                    **dynamic,
                )
            return buffer.getvalue()
        except Exception as exc:  # the exporters raise many types; both are tried
            errors.append(
                f"{'dynamo' if dynamo else 'torchscript'} exporter: "
                f"{type(exc).__name__}: {first_line(exc)}"
            )
    raise EngineError("torch.onnx.export failed (" + "; ".join(errors) + ").")


def _check_export(model: torch.nn.Module, data: bytes, input_size: tuple[int, int]) -> float:
    """Smallest cosine between torch's and ONNX Runtime's features on a fixed random batch."""
    import torch

    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(3, 3, *input_size, generator=generator)
    with torch.inference_mode():
        expected = model(batch.contiguous(memory_format=torch.channels_last)).float().numpy()
    got = OnnxRuntimeEngine(data, threads=1)(batch.numpy())
    if got.shape != expected.shape:
        raise EngineError(
            f"The ONNX export returns features of shape {got.shape}, torch {expected.shape}."
        )
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = (got * expected).sum(axis=1) / np.maximum(norms, 1e-30)
    return float(cosine.min())


def _cached_model_intact(path: Path) -> bool:
    """Whether a cached ``.onnx`` file still has the bytes its export wrote.

    The ``.json`` beside it records their SHA-256 (``onnx_sha256``; a cache written
    before that has none and is trusted). A file damaged on disk (cut short by a full
    disk, overwritten, edited) is removed with a warning, so it is exported again
    instead of failing in every worker on first use.
    """
    try:
        expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        expected = expected.get("onnx_sha256")
    except (OSError, ValueError, AttributeError):
        expected = None
    if expected is None:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() == expected:
        return True
    logger.warning(
        "The cached ONNX model %s is damaged (its SHA-256 is not the one its export "
        "recorded); removing it and exporting again.",
        path,
    )
    with contextlib.suppress(OSError):
        path.unlink()
    return False


def export_onnx(backbone: Backbone, *, cache_dir: str | Path | None = None) -> Path | bytes:
    """The backbone exported to ONNX, from the cache or exported (and cached) now.

    Parameters
    ----------
    backbone : Backbone
        Its ``model`` is exported from a CPU copy (the backbone is not moved).
    cache_dir : str or Path, optional
        Folder of the exported models; default :func:`default_engine_cache`.
        When it cannot be written, the export is kept in memory for this run
        (and a warning says so). A model that failed to export leaves a
        ``.failed`` file with the reason, so that the next run does not try again.
        The ``.json`` beside a cached model records its key and the SHA-256 of its
        bytes; a cached file that no longer has them is exported again.

    Returns
    -------
    Path or bytes
        The cached ``.onnx`` file, or the model's bytes when the cache folder is
        not writable.

    Raises
    ------
    EngineError
        The export failed, or its output differs from torch's (a row's cosine
        similarity below :data:`MIN_EXPORT_COSINE`).
    MissingDependencyError
        onnxruntime is not installed.
    """
    import copy

    from .atomic import file_stem

    _import_onnxruntime()
    key = _export_key(backbone, weights_hash(backbone.model))
    text = json.dumps(key, sort_keys=True, indent=1)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_engine_cache()
    path = folder / f"{file_stem(backbone.name)}-{digest}.onnx"  # open_clip:M/TAG has a /
    failed = path.with_suffix(".failed")
    if path.is_file() and _cached_model_intact(path):
        logger.info("ONNX model of %s from the cache: %s", backbone.name, path)
        return path
    if failed.is_file():  # this very model failed to export before: do not spend the time again
        raise EngineError(failed.read_text(encoding="utf-8").strip() + f" (remembered in {failed})")

    started = time.perf_counter()
    try:
        # a copy on CPU: exporting runs the forward pass, which must leave the user's module as
        # it was (a module that counts its calls, keeps running statistics ...)
        model = copy.deepcopy(backbone.model).to("cpu").eval()
        data = _export_bytes(model, backbone.input_size)
        cosine = _check_export(model, data, backbone.input_size)
        if cosine < MIN_EXPORT_COSINE:
            raise EngineError(
                f"The ONNX export of {backbone.name!r} does not reproduce torch's features "
                f"(smallest cosine {cosine:.6f} < {MIN_EXPORT_COSINE})."
            )
    except Exception as exc:  # copy, export, load or check: each makes the engine unusable
        error = exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes(failed, f"{error}\n".encode())
        if error is exc:
            raise
        raise error from exc
    seconds = time.perf_counter() - started
    try:
        folder.mkdir(parents=True, exist_ok=True)
        record = {**key, "onnx_sha256": hashlib.sha256(data).hexdigest()}
        record_text = json.dumps(record, sort_keys=True, indent=1)
        write_bytes(path.with_suffix(".json"), (record_text + "\n").encode())
        write_bytes(path, data)
    except OSError as exc:
        logger.warning(
            "Cannot write the ONNX model cache %s (%s); keeping the export in memory for this "
            "run. Set CLUSTERCLEAN_ENGINE_CACHE to a writable folder to export only once.",
            folder,
            exc,
        )
        return data
    logger.info(
        "Exported %s to ONNX in %.1f s (cosine vs torch >= %.7f): %s",
        backbone.name,
        seconds,
        cosine,
        path,
    )
    return path


# --------------------------------------------------------------------------- choosing


def load_engine(
    backbone: Backbone,
    *,
    engine: str = "auto",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Engine:
    """The engine that runs ``backbone``'s forward pass.

    Parameters
    ----------
    backbone : Backbone
        A loaded backbone (:func:`clusterclean.backbones.load_backbone`).
    engine : {"auto", "onnxruntime", "torch"}, default "auto"
        ``"auto"``: ONNX Runtime when the backbone is on CPU, onnxruntime is
        installed and the export succeeds; torch otherwise. The choice and its
        reason are logged at INFO (a failed export at WARNING).
    threads : int, optional
        ONNX Runtime's intra-op threads; default :func:`available_cores`. The torch
        engine uses torch's own setting (``torch.set_num_threads``).
    cache_dir : str or Path, optional
        Folder of the exported ONNX models; default :func:`default_engine_cache`.

    Returns
    -------
    Engine

    Raises
    ------
    InvalidInputError
        Unknown engine, or ``"onnxruntime"`` for a backbone on a GPU.
    MissingDependencyError
        ``"onnxruntime"`` without the onnxruntime package.
    EngineError
        ``"onnxruntime"`` and the export failed or does not match torch.
    """
    func = "load_engine"
    if isinstance(engine, Engine):
        return engine
    check_choice(engine, "engine", func, ENGINES)
    # duck-typed: clusterclean.backbones imports this module (its "onnx" backbone runs here)
    if not all(hasattr(backbone, a) for a in ("name", "model", "input_size", "onnx_file")):
        raise InvalidTypeError(
            f"The 'backbone' parameter of {func} must be a Backbone. "
            f"Got {type(backbone).__name__} instead."
        )
    if threads is not None:
        threads = check_int(threads, "threads", func, min_value=1)
    threads = threads or available_cores()
    if backbone.model is None:  # an ONNX-only backbone: nothing else can run it
        if engine == "torch":
            raise InvalidInputError(
                f"Backbone {backbone.name!r} is an ONNX model and has no torch module; use "
                "engine='onnxruntime' or 'auto'."
            )
        return OnnxRuntimeEngine(backbone.onnx_file, threads=threads)
    if engine == "torch":
        return TorchEngine(backbone.model)
    device = _module_device(backbone.model)
    if device.type != "cpu":
        if engine == "onnxruntime":
            raise InvalidInputError(
                f"engine='onnxruntime' runs on CPU, but backbone {backbone.name!r} is on "
                f"{device}; use engine='torch' (or 'auto') on a GPU, or device='cpu'."
            )
        logger.info("Engine: torch on %s (ONNX Runtime is used on CPU only)", device)
        return TorchEngine(backbone.model)
    try:
        model = export_onnx(backbone, cache_dir=cache_dir)
        chosen = OnnxRuntimeEngine(model, threads=threads)
    except MissingDependencyError:
        if engine == "onnxruntime":
            raise
        logger.info("Engine: torch (onnxruntime is not installed: %s)", _INSTALL_HINT)
        return TorchEngine(backbone.model)
    except (EngineError, InvalidInputError) as exc:
        if engine == "onnxruntime":
            raise
        logger.warning("Engine: torch (the ONNX export of %s failed: %s)", backbone.name, exc)
        return TorchEngine(backbone.model)
    logger.info("Engine: ONNX Runtime, %d thread(s), model %s", threads, chosen.detail)
    return chosen
