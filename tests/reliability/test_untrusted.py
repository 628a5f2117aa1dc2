"""Untrusted files: nothing a user is handed can run code or escape its folder.

- weights are read with ``torch.load(weights_only=True)``: a pickle whose ``__reduce__``
  runs code is refused with a clear error and the code does not run (a sentinel file
  stays absent -- and the same file loaded without the guard does create it);
- ``.npy`` embeddings are read with ``allow_pickle=False``: an object array is refused;
- no module of the package unpickles anything (checked on the source);
- Pillow's decompression-bomb limit stays set after importing and running clusterclean;
- image paths from a labels table stay inside the images root: see
  ``test_edge_cases.py::test_cli_rejects_labels_naming_images_outside_the_folder`` and
  ``tests/test_dataset.py::test_path_outside_root``;
- report.html escapes every string: ``tests/test_html.py::test_every_data_string_is_escaped``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clusterclean
from clusterclean.cli import main
from clusterclean.errors import InvalidInputError

PACKAGE = Path(clusterclean.__file__).parent


class _Payload:
    """Unpickling this writes ``path`` -- what an attacker's weights file would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


def _malicious_weights(path: Path, sentinel: Path) -> Path:
    import torch

    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Payload(sentinel)}, path)
    return path


@pytest.fixture()
def evil(tmp_path):
    sentinel = tmp_path / "sentinel"
    return _malicious_weights(tmp_path / "weights.pth", sentinel), sentinel


def test_the_payload_is_real(evil):
    """Without weights_only the file runs its code: the checks below have teeth."""
    import torch

    path, sentinel = evil
    torch.load(path, weights_only=False)
    assert sentinel.read_text() == "pwned"


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_malicious_weights_are_refused_and_do_not_run(evil, backbone):
    from clusterclean.backbones import load_backbone

    path, sentinel = evil
    with pytest.raises(InvalidInputError) as error:
        load_backbone(backbone, weights=path, device="cpu")
    assert not sentinel.exists()
    message = str(error.value)
    assert f"Could not read the weights file {str(path)!r} for backbone {backbone!r}" in message
    assert "refused for safety" in message


@pytest.mark.parametrize("backbone", ["timm:resnet10t", "open_clip:ViT-B-32"])
def test_malicious_weights_for_a_hub_backbone_are_refused_and_do_not_run(evil, backbone):
    """timm's and OpenCLIP's own file loaders are called with weights_only=True."""
    from clusterclean.backbones import load_backbone

    path, sentinel = evil
    with pytest.raises(InvalidInputError) as error:
        load_backbone(backbone, weights=path, device="cpu")
    assert not sentinel.exists()
    assert str(path) in str(error.value) and backbone in str(error.value)
    assert "weights_only" in str(error.value)


def test_malicious_weights_as_torchscript_do_not_run(evil):
    from clusterclean.backbones import load_backbone

    path, sentinel = evil
    with pytest.raises(InvalidInputError, match="as a TorchScript model"):
        load_backbone("torchscript", weights=path, device="cpu")
    assert not sentinel.exists()


def test_malicious_weights_through_the_cli(evil, tmp_path, capsys):
    from PIL import Image

    path, sentinel = evil
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16), "red").save(tmp_path / "images" / "a.png")
    pd.DataFrame({"image": ["a.png"], "hat": [1]}).to_csv(tmp_path / "l.csv", index=False)
    code = main(
        ["run", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "l.csv")]
        + ["--out", str(tmp_path / "out"), "--backbone", "resnet18", "--weights", str(path)]
        + ["--no-progress", "--workers", "0"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "refused for safety" in err[0]
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_pickled_npy_embeddings_are_refused(tmp_path):
    from clusterclean.embed import load_embeddings

    sentinel = tmp_path / "sentinel"
    vectors = np.empty((1, 1), dtype=object)
    vectors[0, 0] = _Payload(sentinel)
    np.save(tmp_path / "v.npy", vectors, allow_pickle=True)
    (tmp_path / "ids.txt").write_text("a\n")
    with pytest.raises(InvalidInputError, match="Object arrays cannot be loaded"):
        load_embeddings(tmp_path / "v.npy", ids_path=tmp_path / "ids.txt")
    assert not sentinel.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            keywords = {k.arg: k.value for k in node.keywords}
            yield name, keywords, node


PICKLERS = ("pickle", "dill", "joblib", "cloudpickle")


def _is_call_on(node: ast.Call, module: str) -> bool:
    return isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == module


def _unpickling(source: str, where: str) -> list[str]:
    """Lines of ``source`` that could unpickle: pickle-like imports, torch.load without
    weights_only=True, np.load without allow_pickle=False, read_pickle."""
    problems = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in PICKLERS for n in names):
                problems.append(f"{where}:{node.lineno} imports a pickle module")
    for name, keywords, node in _calls(tree):
        guard = {"torch": ("weights_only", True), "np": ("allow_pickle", False)}
        for module, (keyword, safe) in guard.items():
            value = keywords.get(keyword)
            is_safe = isinstance(value, ast.Constant) and value.value is safe
            if name == "load" and _is_call_on(node, module) and not is_safe:
                problems.append(f"{where}:{node.lineno} {module}.load without {keyword}={safe}")
        if name == "read_pickle":
            problems.append(f"{where}:{node.lineno} calls read_pickle")
    return problems


def test_the_source_check_finds_unpickling():
    bad = (
        "import pickle\nimport torch\nimport numpy as np\nimport pandas as pd\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p)\npd.read_pickle(p)\n"
        "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\n"
    )
    assert _unpickling(bad, "x") == [
        "x:1 imports a pickle module",
        "x:5 torch.load without weights_only=True",
        "x:6 torch.load without weights_only=True",
        "x:7 np.load without allow_pickle=False",
        "x:8 calls read_pickle",
    ]


def test_no_module_unpickles_anything():
    problems = []
    for source in sorted(PACKAGE.rglob("*.py")):
        problems += _unpickling(source.read_text(), str(source.relative_to(PACKAGE.parent)))
    assert problems == []


def test_decompression_bomb_limit_is_kept(tmp_path):
    """Importing every module and decoding an image leaves Pillow's limit as Pillow sets it."""
    import importlib

    from PIL import Image

    default = 1024 * 1024 * 1024 // 4 // 3  # Pillow's MAX_IMAGE_PIXELS
    for module in sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__main__"):
        importlib.import_module(f"clusterclean.{module}")
    from clusterclean.embed import read_image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    read_image(tmp_path / "a.png")
    assert Image.MAX_IMAGE_PIXELS == default
