"""The README keeps its promises: the two commands first, every report column documented."""

import re
from pathlib import Path

import pytest

from clusterclean.report import TABLES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_block_is_exactly_the_two_commands():
    first = re.search(r"```[a-z]*\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first.splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_column_tables_are_generated_from_the_schema():
    from clusterclean.report import fill_column_tables

    assert "<!-- columns: all -->" in README
    assert fill_column_tables(README) == README, "run python scripts/readme_columns.py"


def test_every_report_column_is_documented():
    for table, columns in TABLES.items():
        section = README.split(f"**`{table}.parquet`**", 1)
        assert len(section) == 2, f"{table}.parquet has no column table in README.md"
        body = section[1].split("**`", 1)[0]
        missing = [c for c in columns if f"| `{c}` |" not in body]
        assert not missing, f"{table}.parquet columns missing from README.md: {missing}"


def test_readme_suite_tables_are_rendered_from_their_json_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("suite", ROOT / "scripts" / "suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert "<!-- suite: docs/suite/" in README, "the README has no <!-- suite: ... --> block"
    assert suite.fill_readme(README, ROOT) == README, "run: python scripts/suite.py readme"


@pytest.mark.slow
def test_every_readme_recipe_prints_what_the_readme_shows(tmp_path):
    """The recipes that run the pipeline over images (minutes each): `pytest -m slow`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "readme_recipes", ROOT / "scripts" / "readme_recipes.py"
    )
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    blocks = recipes.recipes(README)
    assert set(recipes.QUICK) < set(blocks)
    recipes.ensure_demo(tmp_path)
    for name, block in blocks.items():
        printed = recipes.run_recipe(name, block["lang"], block["code"], tmp_path)
        # the report paths are the work folder's; the README shows /tmp/cc
        assert printed.replace(str(tmp_path), "/tmp/cc") == block["output"], name
