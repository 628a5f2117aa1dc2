"""Run the README's copy-paste recipes and write what they print into it.

Every ``<!-- recipe: NAME -->`` block of README.md holds a ``bash`` or ``python``
code block and a ``text`` block. This script runs the code, in a work folder where
``clusterclean demo --out demo-out`` has run, and puts its output in the ``text``
block, so the figures a newcomer reads are what the commands print. The code is
never typed twice: it is read from the README.

    python scripts/readme_recipes.py                 # run every recipe, rewrite README.md
    python scripts/readme_recipes.py --check clean   # exit 1 when a recipe's output differs

The work folder defaults to ``/tmp/cc`` (the paths the README shows). Recipes that
need files of their own (``photos/`` with planted duplicates, the demo split into a
base and an addition) get them from :data:`SETUP`, run before the recipe.
``tests/test_cli.py`` checks the quick recipes against the demo it runs; the others
(each a full run over the images) are checked by ``tests/test_readme.py``'s slow test
(``pytest -m slow``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(
    r"<!-- recipe: (?P<name>[\w-]+) -->\n"
    r"```(?P<lang>bash|python)\n(?P<code>.*?)```\n"
    r"```text\n(?P<output>.*?)```\n"
    r"<!-- /recipe -->",
    re.DOTALL,
)
#: Recipes that only read the demo's report: seconds each, checked by the default tests.
QUICK = ("clean", "clean-dry-run", "read", "metadata")


def _photos(work: Path) -> None:
    """``photos/``: the demo's images plus four planted duplicates (two plain copies, a
    PNG re-encode and a JPEG re-compressed at quality 60)."""
    images = work / "demo-out" / "data" / "images"
    photos = work / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    shutil.copytree(images, photos)
    shutil.copyfile(images / "p000_v0.jpg", photos / "copy_of_p000_v0.jpg")
    shutil.copyfile(images / "p001_v0.jpg", photos / "copy_of_p001_v0.jpg")
    with Image.open(images / "p002_v0.jpg") as image:
        image.save(photos / "p002_v0_reencoded.png")
    with Image.open(images / "p003_v0.jpg") as image:
        image.save(photos / "p003_v0_q60.jpg", quality=60)


def _split_for_adding(work: Path) -> None:
    """The demo split in two: the first 51 persons (``base_images``, ``base_labels.csv``)
    and the other 9 (``new_images``, ``new_labels.csv``)."""
    data = work / "demo-out" / "data"
    labels = pd.read_csv(data / "labels.csv")
    new = labels["group"].str[1:].astype(int) >= 51
    for name, rows in (("base", labels[~new]), ("new", labels[new])):
        folder = work / f"{name}_images"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for image in rows["image"]:
            shutil.copyfile(data / "images" / image, folder / image)
        rows.to_csv(work / f"{name}_labels.csv", index=False)


#: What a recipe needs before it runs, beyond the demo.
SETUP: dict[str, Callable[[Path], None]] = {"duplicates": _photos, "add": _split_for_adding}


def recipes(text: str) -> dict[str, re.Match]:
    """The recipe blocks of ``text`` by name."""
    return {m["name"]: m for m in BLOCK.finditer(text)}


def run_recipe(name: str, lang: str, code: str, work: Path) -> str:
    """What ``code`` prints when run in ``work`` (stdout, then any warning lines of stderr
    the README shows: the WARNING lines of clusterclean's log)."""
    if name in SETUP:
        SETUP[name](work)
    command = ["bash", "-e", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(work), "PYTHONHASHSEED": "0"}
    if "PYTHONPATH" in os.environ:  # a checkout run without installing it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"recipe {name!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING ")]
    return "".join(f"{line}\n" for line in warnings) + done.stdout


MARK = ".readme_recipes"


def fresh_folder(work: Path) -> Path:
    """``work`` emptied, when this script made it (it holds :data:`MARK`); a folder of
    anything else is refused, not wiped."""
    if work.exists() and any(work.iterdir()):
        if not (work / MARK).is_file():
            raise SystemExit(
                f"{work} is not empty and was not made by this script; pass another --work."
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARK).write_text("scratch folder of scripts/readme_recipes.py\n")
    return work


def ensure_demo(work: Path) -> None:
    """``work/demo-out``: the demo's data and report (made once)."""
    if not (work / "demo-out" / "report" / "run.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "clusterclean.cli", "demo", "--out", "demo-out", "-q"],
            cwd=work,
            check=True,
        )


def fill(text: str, outputs: dict[str, str]) -> str:
    """``text`` with the output block of each recipe in ``outputs`` replaced."""

    def replace(match: re.Match) -> str:
        if match["name"] not in outputs:
            return match[0]
        return match[0].replace(
            f"```text\n{match['output']}```", f"```text\n{outputs[match['name']]}```", 1
        )

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipes to run (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cc"))
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    blocks = recipes(text)
    names = args.names or list(blocks)
    unknown = sorted(set(names) - set(blocks))
    if unknown:
        parser.error(f"no recipe {unknown} in README.md; it has {sorted(blocks)}")
    work = fresh_folder(args.work.resolve())
    ensure_demo(work)
    outputs = {}
    for name in names:
        block = blocks[name]
        outputs[name] = run_recipe(name, block["lang"], block["code"], work)
        print(f"{name}: {len(outputs[name].splitlines())} lines", file=sys.stderr)
    if args.check:
        stale = [n for n in names if outputs[n] != blocks[n]["output"]]
        for name in stale:
            print(f"--- README {name}\n{blocks[name]['output']}+++ now\n{outputs[name]}")
        return 1 if stale else 0
    README.write_text(fill(text, outputs), encoding="utf-8")
    print(f"wrote {len(outputs)} recipe outputs into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
