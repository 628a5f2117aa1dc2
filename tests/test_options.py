"""Each option is declared once; RunConfig, the CLI, the docs and the stage functions agree."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path

import pytest

import clusterclean
from clusterclean.cli import build_parser
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.group import GroupOptions
from clusterclean.options import fill_option_tables, options_page
from clusterclean.pipeline import RUN_OPTIONS, RunConfig

ROOT = Path(__file__).resolve().parents[1]

#: Public keyword arguments named like an option that are another quantity (each says why).
OTHER_QUANTITY = {
    ("as_embeddings", "backbone"): "a tag for vectors of unknown origin, not a model",
    ("search_neighbors", "batch_size"): "FAISS queries per batch, not images per model batch",
    ("edges_from_neighbors", "min_similarity"): "a plain cosine cut (no re-ranking)",
    ("build_knn_graph", "min_similarity"): "a plain cosine cut (no re-ranking)",
    ("fit_adaptation", "batch_size"): "the head's training batch",
    ("find_mixed_components", "min_component_size"): "the smallest component with two sides",
    ("clean_labels", "exclude_attributes"): "None = the run's, read from run.json",
}


def _run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_every_runconfig_field_is_one_declaration_with_its_default_and_doc_line():
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    names = [o.name for o in RUN_OPTIONS]
    assert len(names) == len(set(names)) == len(fields)
    for option in RUN_OPTIONS:
        assert fields[option.name].default == option.default, option.name
        assert f"{option.name} : {option.type_name()}\n    {option.help}" in RunConfig.__doc__
        assert option.stage, option.name


def test_every_flag_has_its_declared_name_help_default_and_choices():
    actions = {a.dest: a for a in _run_parser()._actions}
    for option in RUN_OPTIONS:
        action = actions[option.name]
        assert set(option.flags) <= set(action.option_strings), option.name
        assert action.help.replace("%%", "%") == f"{option.help} (default: {option.default_text()})"
        if option.kind == "choice":
            assert tuple(action.choices) == option.allowed(), option.name
        assert action.default is None  # a flag left out keeps the declared default


def test_a_flag_reaches_run_under_the_name_it_is_declared_with():
    parser = build_parser()
    args = parser.parse_args(
        ["run", "--out", "x", "--min-similarity", "auto", "--no-rerank", "--workers", "2"]
    )
    from clusterclean.cli import _config_from_args

    config = _config_from_args(args)
    assert (config.min_similarity, config.rerank, config.num_workers) == ("auto", False, 2)


def test_the_group_options_are_the_run_declarations():
    declared = {o.name: o for o in RunConfig.OPTIONS}
    for field in dataclasses.fields(GroupOptions):
        assert field.default == declared[field.name].default, field.name


def test_public_functions_default_to_the_declared_values():
    declared = {o.name: o for o in RUN_OPTIONS}
    found = []
    for name in clusterclean.__all__:
        value = getattr(clusterclean, name)
        if name.startswith("__") or inspect.isclass(value) or not callable(value):
            continue
        for parameter in inspect.signature(value).parameters.values():
            option = declared.get(parameter.name)
            if option is None or parameter.default is inspect.Parameter.empty:
                continue
            if (name, parameter.name) in OTHER_QUANTITY:
                continue
            if parameter.default != option.default:
                found.append(
                    f"{name}({parameter.name}={parameter.default!r}) vs {option.default!r}"
                )
    assert found == []


def test_docs_options_page_is_generated_from_the_declarations():
    page = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert page == options_page(RUN_OPTIONS), "run: python scripts/write_options_doc.py"


def test_readme_option_tables_are_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- options: adapt, refine, search, group, calibrate -->" in readme
    assert readme == fill_option_tables(readme, RUN_OPTIONS), (
        "run: python scripts/write_options_doc.py"
    )


def test_a_generated_table_is_replaced_whatever_it_held():
    text = "a\n<!-- options: group -->\nstale | 0.9 |\n<!-- /options -->\nb\n"
    filled = fill_option_tables(text, RUN_OPTIONS)
    assert "stale" not in filled
    assert "| `--min-cosine` | `min_cosine` | float | [-1, 1] | 0.5 |" in filled
    assert "`--backbone`" not in filled  # only the named stage's options
    assert filled.startswith("a\n<!-- options: group -->\n| flag |")
    assert filled.endswith("<!-- /options -->\nb\n")
    with pytest.raises(ValueError, match="stage"):
        fill_option_tables("<!-- options: nope -->\n<!-- /options -->", RUN_OPTIONS)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"n_neighbors": 0},
            InvalidInputError,
            "'n_neighbors' parameter of run must be an int >= 1",
        ),
        ({"min_similarity": "x"}, InvalidInputError, r"must be a float in \[-1, 1\] or 'auto'"),
        ({"tta": "rotate"}, InvalidInputError, "'tta' parameter of run must be one of 'none'"),
        ({"refine": 1}, InvalidTypeError, "'refine' parameter of run must be a bool"),
        ({"exclude_attributes": "pose"}, InvalidTypeError, r"write \('pose',\)"),
        ({"backbone": "vgg"}, InvalidInputError, "'backbone' parameter of run must be one of"),
    ],
)
def test_the_declaration_checks_every_value_once(options, error, message):
    with pytest.raises(error, match=message):
        RunConfig(**options)
