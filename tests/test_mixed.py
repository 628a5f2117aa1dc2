"""Components that mix two look-alike people: detected, split before scoring, reported."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import make_planted

from clusterclean import Dataset, InvalidInputError, RunConfig, as_embeddings, run
from clusterclean.mixed import (
    find_mixed_components,
    mixed_component_columns,
    split_mixed_components,
)

# Person A (rows 0-2) and look-alike B (rows 3-4) in one component; C (rows 5-7) alone.
A1, A3, B = [1.0, 0.0, 0.0], [0.8, 0.0, 0.6], [0.6, 0.8, 0.0]
TWO_PEOPLE = np.array([A1, A1, A3, B, B, A1, A1, A1])
COMPONENTS = np.array([0, 0, 0, 0, 0, 1, 1, 1])


def _dataset(columns, tasks=None):
    n = len(next(iter(columns.values())))
    table = pd.DataFrame({"image_id": [f"i{r}" for r in range(n)]})
    labels = np.array(list(columns.values()), dtype=np.float32).T
    return Dataset(table=table, labels=labels, attributes=tuple(columns), tasks=tasks or {})


def _two_people_labels():
    return {
        "x": [1, 1, 1, 0, 0, 1, 1, 1],  # A and B differ on x, y, z
        "y": [0, 0, 0, 1, 1, 0, 0, 0],
        "z": [1, 1, 1, 0, 0, 0, 0, 0],
        "w": [1, 1, 1, 1, 1, 1, 1, 1],
        "v": [0, 0, 0, 0, 0, 0, 0, 1],
    }


def _embeddings(vectors):
    return as_embeddings([f"i{r}" for r in range(len(vectors))], np.asarray(vectors))


def test_two_look_alike_people_are_detected_with_hand_computed_figures():
    table = find_mixed_components(
        COMPONENTS, _dataset(_two_people_labels()), _embeddings(TWO_PEOPLE)
    )
    assert len(table) == 1
    row = table.iloc[0]
    assert row["component_id"] == 0 and row["size"] == 5
    assert (row["n_side_a"], row["n_side_b"]) == (3, 2)
    assert row["attributes"] == ["x", "y", "z"] and row["n_attributes"] == 3
    # same-side pairs: A1.A1 = 1, A1.A3 = 0.8 twice, B.B = 1 -> 3.6 / 4
    assert row["within_similarity"] == pytest.approx(0.9)
    # across: A1.B = 0.6 four times, A3.B = 0.48 twice -> 3.36 / 6
    assert row["between_similarity"] == pytest.approx(0.56)
    assert row["similarity_gap"] == pytest.approx(0.34)
    # margins: A1 (1 + 0.8) / 2 - 0.6 = 0.3; A3 0.8 - 0.48 = 0.32; B 1 - 0.56 = 0.44
    assert row["min_margin"] == pytest.approx(0.3)
    assert row["is_mixed"] and row["rows_b"] == [3, 4]


def test_split_renumbers_by_first_row_and_reports_both_sides():
    table = find_mixed_components(
        COMPONENTS, _dataset(_two_people_labels()), _embeddings(TWO_PEOPLE)
    )
    new_ids, sides = split_mixed_components(COMPONENTS, table)
    assert new_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sides[["component_id_a", "component_id_b"]].values.tolist() == [[0, 1]]
    columns = mixed_component_columns(sides, 3)
    assert columns["is_possibly_two_people"].tolist() == [True, True, False]
    assert columns["mixed_with"].tolist() == [1, 0, pd.NA]


def test_flipped_labels_of_one_person_are_not_two_people():
    # one person; rows 3 and 4 carry flipped x and y (label noise)
    labels = {
        "x": [1, 1, 1, 0, 0],
        "y": [0, 0, 0, 1, 1],
        "w": [1, 1, 1, 1, 1],
    }
    r2, r3, r4 = [0.8, 0.6, 0.0], [0.8, 0.0, 0.6], [0.8, -0.6, 0.0]
    vectors = [A1, A1, r2, r3, r4]
    table = find_mixed_components(
        np.zeros(5, dtype=int), _dataset(labels), _embeddings(vectors), min_attributes=2
    )
    row = table.iloc[0]
    assert row["n_attributes"] == 2  # the labels alone would split {0, 1, 2} from {3, 4}
    # within (1 + 0.8 + 0.8 + 0.64) / 4 = 0.81; across (4 * 0.8 + 0.64 + 0.28) / 6 = 0.68667
    assert row["similarity_gap"] == pytest.approx(0.81 - 4.12 / 6)
    # the gap passes 0.05, but row 3 is closer to side a (0.74667) than to row 4 (0.64)
    assert row["min_margin"] == pytest.approx(0.64 - (0.8 + 0.8 + 0.64) / 3)
    assert not row["is_mixed"]
    # identical vectors: gap 0, never split
    same = find_mixed_components(
        np.zeros(5, dtype=int), _dataset(labels), _embeddings([A1] * 5), min_attributes=2
    )
    assert same.iloc[0]["similarity_gap"] == pytest.approx(0.0, abs=1e-6)
    assert not same["is_mixed"].any()
    assert split_mixed_components(np.zeros(5, dtype=int), same)[0].tolist() == [0] * 5


def test_one_of_k_task_counts_once():
    labels = {
        "colour=red": [1, 1, 1, 0, 0, 1, 1, 1],
        "colour=blue": [0, 0, 0, 1, 1, 0, 0, 0],
        "x": [1, 1, 1, 0, 0, 1, 1, 1],
    }
    task = {"colour": ("colour=red", "colour=blue")}
    emb = _embeddings(TWO_PEOPLE)
    found = find_mixed_components(COMPONENTS, _dataset(labels, task), emb, min_attributes=2)
    assert found.iloc[0]["attributes"] == ["x", "colour"]
    assert find_mixed_components(COMPONENTS, _dataset(labels, task), emb, min_attributes=3).empty
    # without the task, its two one-hot columns would count twice
    assert len(find_mixed_components(COMPONENTS, _dataset(labels), emb, min_attributes=3)) == 1


def test_excluded_attributes_are_no_evidence_and_missing_labels_still_support():
    ds, emb = _dataset(_two_people_labels()), _embeddings(TWO_PEOPLE)
    assert find_mixed_components(COMPONENTS, ds, emb, exclude_attributes=("x",)).empty
    labels = _two_people_labels()
    labels["x"] = [1, 1, np.nan, 0, np.nan, 1, 1, 1]  # still splits A from B where known
    row = find_mixed_components(COMPONENTS, _dataset(labels), emb).iloc[0]
    assert row["attributes"] == ["x", "y", "z"]


def test_two_images_are_never_tested():
    labels = {"x": [1, 0], "y": [0, 1], "z": [1, 0]}
    table = find_mixed_components(
        np.zeros(2, dtype=int), _dataset(labels), _embeddings([A1, [0.0, 1.0, 0.0]])
    )
    assert table.empty and list(table.columns)[:2] == ["component_id", "size"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"min_attributes": 0},
            "The 'min_attributes' parameter of find_mixed_components must be an int >= 1. "
            "Got 0 instead.",
        ),
        (
            {"min_similarity_gap": 3.0},
            "The 'min_similarity_gap' parameter of find_mixed_components must be a float in "
            "[-2, 2]. Got 3.0 instead.",
        ),
        (
            {"min_component_size": 2},
            "The 'min_component_size' parameter of find_mixed_components must be an int >= 3. "
            "Got 2 instead.",
        ),
        (
            {"exclude_attributes": ("nope",)},
            "The 'exclude_attributes' parameter of find_mixed_components names unknown "
            "attributes ['nope']",
        ),
    ],
)
def test_bad_parameters_say_what_is_expected(options, message):
    with pytest.raises(InvalidInputError) as info:
        find_mixed_components(
            COMPONENTS, _dataset(_two_people_labels()), _embeddings(TWO_PEOPLE), **options
        )
    assert str(info.value).startswith(message)


def test_rows_must_match():
    with pytest.raises(InvalidInputError, match="must match row for row"):
        find_mixed_components(
            COMPONENTS[:5], _dataset(_two_people_labels()), _embeddings(TWO_PEOPLE)
        )


def test_run_config_checks_its_mixed_options():
    with pytest.raises(InvalidInputError, match="'min_mixed_attributes' parameter of run must"):
        RunConfig(min_mixed_attributes=0)
    with pytest.raises(InvalidInputError, match="'min_mixed_gap' parameter of run must"):
        RunConfig(min_mixed_gap=2.5)


@settings(max_examples=60, deadline=None)
@given(
    n_images=st.integers(3, 14),
    n_attributes=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_found_sides_lie_inside_their_component(n_images, n_attributes, seed):
    rng = np.random.default_rng(seed)
    component_ids = rng.integers(0, 3, size=n_images)
    labels = {f"a{k}": rng.integers(0, 2, size=n_images) for k in range(n_attributes)}
    found = find_mixed_components(
        component_ids, _dataset(labels), _embeddings(rng.normal(size=(n_images, 4)))
    )
    for row in found.itertuples():
        members = np.flatnonzero(component_ids == row.component_id)
        assert set(row.rows_b) < set(members.tolist()) and row.n_side_b == len(row.rows_b)
        assert row.n_side_a + row.n_side_b == row.size == len(members)
        assert row.n_attributes >= 3 and members[0] not in row.rows_b


@settings(max_examples=60, deadline=None)
@given(
    component_ids=st.lists(st.integers(0, 4), min_size=1, max_size=20),
    seed=st.integers(0, 10_000),
)
def test_splitting_only_refines_components(component_ids, seed):
    component_ids = np.asarray(component_ids)
    rng = np.random.default_rng(seed)
    rows = []
    for component in np.unique(component_ids):  # some components: a random proper side b
        members = np.flatnonzero(component_ids == component)
        if len(members) >= 2 and rng.random() < 0.6:
            side_b = rng.choice(members[1:], size=rng.integers(1, len(members)), replace=False)
            rows.append({"component_id": int(component), "is_mixed": True, "rows_b": side_b})
    mixed = pd.DataFrame(rows, columns=["component_id", "is_mixed", "rows_b"])
    new_ids, sides = split_mixed_components(component_ids, mixed.astype({"is_mixed": bool}))
    assert sorted(set(new_ids.tolist())) == list(range(new_ids.max() + 1))  # dense
    assert new_ids.max() + 1 == len(np.unique(component_ids)) + len(rows)
    for new in set(new_ids.tolist()):  # every new component inside one old component
        assert len(set(component_ids[new_ids == new].tolist())) == 1
    first_rows = [int(np.argmax(new_ids == c)) for c in range(new_ids.max() + 1)]
    assert first_rows == sorted(first_rows)  # numbered by first row
    for side in sides.itertuples():
        assert side.component_id_a != side.component_id_b
        assert set(new_ids[side.rows_b].tolist()) == {side.component_id_b}
    columns = mixed_component_columns(sides, int(new_ids.max()) + 1)
    assert int(columns["is_possibly_two_people"].sum()) == 2 * len(rows)


def _planted_with_look_alike():
    """Planted persons, plus a look-alike of one of them (cosine 0.85) whose labels differ
    on three attributes; a 0.8 cut joins the two."""
    data = make_planted(n_groups=20, max_size=5, n_flips=4, seed=5)
    sizes = np.bincount(data.groups)
    flipped_ids = {image for image, _ in data.flipped}
    target = next(
        g
        for g in np.flatnonzero(sizes >= 3)
        if not set(data.dataset.ids[data.groups == g]) & flipped_ids
    )
    rows = np.flatnonzero(data.groups == target)
    centre = data.embeddings.vectors[rows].mean(axis=0)
    centre /= np.linalg.norm(centre)
    rng = np.random.default_rng(0)
    other = rng.normal(size=centre.shape)
    other -= (other @ centre) * centre
    look_alike = 0.85 * centre + np.sqrt(1 - 0.85**2) * other / np.linalg.norm(other)
    new_vectors = look_alike + 0.02 * rng.normal(size=(2, len(centre)))
    new_labels = np.repeat(data.dataset.labels[rows[:1]], 2, axis=0)
    new_labels[:, :3] = 1 - new_labels[:, :3]
    new_ids = ["lookalike_v0", "lookalike_v1"]
    table = pd.concat(
        [data.dataset.table, pd.DataFrame({"image_id": new_ids, "group": "lookalike"})],
        ignore_index=True,
    )
    dataset = Dataset(
        table=table,
        labels=np.vstack([data.dataset.labels, new_labels]),
        attributes=data.dataset.attributes,
    )
    embeddings = as_embeddings(
        [*data.embeddings.ids, *new_ids], np.vstack([data.embeddings.vectors, new_vectors])
    )
    return data, dataset, embeddings, rows


# label_penalty 0: the look-alike differs on 3 attributes, so the labels-as-evidence
# penalty would keep it out of the component before the mixed split is needed.
GRAPH = {"refine": False, "rerank": False, "min_similarity": 0.8, "label_penalty": 0.0}


def test_run_splits_the_look_alike_and_keeps_finding_planted_errors(tmp_path):
    from clusterclean import read_report
    from clusterclean.pipeline import summarize

    data, dataset, embeddings, rows = _planted_with_look_alike()
    off = run(labels=dataset, embeddings=embeddings, progress=False, detect_mixed=False, **GRAPH)
    flagged_off = set(zip(off.label_issues.image_id, off.label_issues.attribute))
    assert flagged_off > data.flipped  # the look-alike's three differences are "errors"
    assert off.run_info["mixed_components"]["count"] == 0
    assert not off.components["is_possibly_two_people"].any()

    report = run(labels=dataset, embeddings=embeddings, progress=False, out=tmp_path / "r", **GRAPH)
    assert set(zip(report.label_issues.image_id, report.label_issues.attribute)) == data.flipped
    mixed = report.run_info["mixed_components"]
    assert mixed["count"] == 1
    split = mixed["components"][0]
    assert (split["n_side_a"], split["n_side_b"]) == (len(rows), 2)
    assert split["attributes"] == list(dataset.attributes[:3])
    images = report.images.set_index("image_id")["component_id"]
    a, b = images[dataset.ids[rows[0]]], images["lookalike_v0"]
    assert (split["component_id_a"], split["component_id_b"]) == (a, b)
    components = report.components.set_index("component_id")
    assert components.loc[[a, b], "is_possibly_two_people"].all()
    assert (components.at[a, "mixed_with"], components.at[b, "mixed_with"]) == (b, a)
    assert summarize(report)["possibly_two_people"] == 1

    # with the labels as evidence (the default penalty) the grouper itself keeps the
    # look-alike apart, and the planted errors are exactly what is flagged
    weighed = run(
        labels=dataset,
        embeddings=embeddings,
        progress=False,
        detect_mixed=False,
        **{**GRAPH, "label_penalty": 0.15},
    )
    ids = weighed.images.set_index("image_id")["component_id"]
    assert ids["lookalike_v0"] != ids[dataset.ids[rows[0]]]
    assert set(zip(weighed.label_issues.image_id, weighed.label_issues.attribute)) == data.flipped

    back = read_report(tmp_path / "r")
    partners = back.components.set_index("component_id")["mixed_with"].dropna()
    assert partners.astype(int).to_dict() == {a: b, b: a}
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Possibly two people" in page and "lookalike_v0" in page
    assert "Attributes treated as per-image" in page


def _cli_files(tmp_path):
    data, dataset, embeddings, _ = _planted_with_look_alike()
    pd.DataFrame({"image_id": embeddings.ids, "embedding": list(embeddings.vectors)}).to_parquet(
        tmp_path / "emb.parquet"
    )
    labels = pd.DataFrame(dataset.labels.astype(int), columns=dataset.attributes)
    labels.insert(0, "image", dataset.ids)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return [
        "run",
        "--labels",
        str(tmp_path / "labels.csv"),
        "--embeddings",
        str(tmp_path / "emb.parquet"),
        "--no-progress",
        "--no-refine",
        "--no-rerank",
        "--label-penalty",
        "0",
        "--min-similarity",
        "0.8",
    ]


def test_cli_reports_splits_turns_them_off_and_checks_its_options(tmp_path, capsys):
    from clusterclean.cli import main

    args = _cli_files(tmp_path)
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    assert "components split as possibly two people: 1" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "off"), "--no-detect-mixed"]) == 0
    assert "components split as possibly two people: 0" in capsys.readouterr().out
    page = (tmp_path / "off" / "report.html").read_text()
    assert "Detection of components mixing two people was off." in page
    code = main([*args, "--out", str(tmp_path / "bad"), "--min-mixed-attributes", "0"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "clusterclean: error: The 'min_mixed_attributes' parameter of run must be an int >= 1. "
        "Got 0 instead."
    )


def test_html_lists_per_image_attributes_with_their_figures():
    from clusterclean.html import render_html

    data = make_planted(n_groups=60, max_size=5, n_flips=6, seed=3)
    rng = np.random.default_rng(3)
    pose = rng.integers(0, 2, size=data.dataset.n_images).astype(np.float32)
    dataset = Dataset(
        table=data.dataset.table,
        labels=np.column_stack([data.dataset.labels, pose]),
        attributes=(*data.dataset.attributes, "pose_left"),
    )
    report = run(
        labels=dataset, embeddings=data.embeddings, progress=False, exclude_attributes=("attr_0",)
    )
    row = next(r for r in report.run_info["varying_attributes"]["table"] if r["is_per_image"])
    page = render_html(report)
    section = page[page.index('id="per-image"') : page.index('id="mixed-title"')]
    assert "Given by the user (never scored): attr_0." in section
    assert "<td>pose_left</td>" in section
    assert f"<td>{row['n_components']}</td><td>{row['n_varying']}</td>" in section
    assert f"<td>{row['varying_share']:.3f}</td>" in section
