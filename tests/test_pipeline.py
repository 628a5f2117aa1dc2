import numpy as np
import pandas as pd
import pytest
from planted import make_planted

from clusterclean import RunConfig, as_embeddings, run, summarize
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.pipeline import align_embeddings


def test_tight_groups_give_the_planted_components_and_flips():
    data = make_planted(n_groups=40, n_flips=8)
    report = run(labels=data.dataset, embeddings=data.embeddings, progress=False)
    components = report.images["component_id"].to_numpy()
    # each planted group is exactly one component
    for group in np.unique(data.groups):
        assert len(np.unique(components[data.groups == group])) == 1
    assert len(np.unique(components)) == len(np.unique(data.groups))
    flagged = set(zip(report.label_issues.image_id, report.label_issues.attribute))
    assert flagged == data.flipped
    summary = summarize(report)
    assert summary["label_issues"] == 8
    assert summary["images"] == data.dataset.n_images


def test_nearest_neighbour_columns():
    data = make_planted(n_groups=5, seed=2)
    # plain cosine graph: the nearest neighbour is the most similar image
    report = run(
        labels=data.dataset, embeddings=data.embeddings, progress=False, refine=False, rerank=False
    )
    vectors = data.embeddings.vectors
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    expected = data.dataset.ids[np.argmax(sims, axis=1)]
    assert report.images["nearest_id"].tolist() == expected.tolist()
    np.testing.assert_allclose(report.images["nearest_cosine"], sims.max(axis=1), atol=1e-5)


def test_embeddings_are_aligned_to_the_dataset_order():
    data = make_planted(n_groups=6, seed=4)
    order = np.random.default_rng(0).permutation(data.dataset.n_images)
    shuffled = as_embeddings(data.embeddings.ids[order], data.embeddings.vectors[order])
    aligned = align_embeddings(shuffled, data.dataset)
    np.testing.assert_allclose(aligned.vectors, data.embeddings.vectors, rtol=1e-6)
    assert aligned.ids.tolist() == data.dataset.ids.tolist()


def test_run_takes_an_array_with_ids_and_a_frame_indexed_by_id():
    # #17: in-memory vectors without wrapping them in Embeddings first
    data = make_planted(n_groups=12, n_flips=4, seed=5)
    order = np.random.default_rng(1).permutation(data.dataset.n_images)  # any row order
    ids, vectors = data.embeddings.ids[order], data.embeddings.vectors[order] * 3.0
    reference = run(labels=data.dataset, embeddings=data.embeddings, progress=False)
    from_array = run(
        labels=data.dataset, embeddings=vectors, embedding_ids=list(ids), progress=False
    )
    frame = pd.DataFrame(vectors, index=pd.Index(ids, name="image_id"))
    from_frame = run(labels=data.dataset, embeddings=frame, progress=False)
    for report in (from_array, from_frame):
        np.testing.assert_allclose(report.embeddings.vectors, data.embeddings.vectors, atol=1e-6)
        pd.testing.assert_frame_equal(report.images, reference.images)
        pd.testing.assert_frame_equal(report.label_issues, reference.label_issues)


@pytest.mark.parametrize(
    ("embeddings", "embedding_ids", "error", "message"),
    [
        (np.zeros((2, 3)), None, InvalidInputError, "an array without ids; give the image id"),
        (np.zeros((2, 3)), 7, InvalidTypeError, "The 'embedding_ids' parameter of run must be"),
        ([[0.0, 1.0]], ["a"], InvalidTypeError, "The 'embeddings' parameter of run must be a"),
        (
            pd.DataFrame({"image_id": ["a"], "x": [1.0]}),
            None,
            InvalidInputError,
            "column 'image_id' is not numeric. Move the image ids into the index",
        ),
        (
            pd.DataFrame({"x": [1.0]}, index=["a"]),
            ["a"],
            InvalidTypeError,
            "The 'embedding_ids' parameter of run must be",
        ),
    ],
    ids=["array-no-ids", "array-int-ids", "list", "frame-id-column", "frame-and-ids"],
)
def test_in_memory_embeddings_misuse_is_named(embeddings, embedding_ids, error, message):
    data = make_planted(n_groups=3, seed=4)
    with pytest.raises(error, match=message):
        run(labels=data.dataset, embeddings=embeddings, embedding_ids=embedding_ids)


def test_embedding_ids_that_do_not_match_are_named():
    data = make_planted(n_groups=6, seed=4)
    ids = data.embeddings.ids.copy()
    ids[0] = "stranger"
    wrong = as_embeddings(ids, data.embeddings.vectors)
    with pytest.raises(InvalidInputError) as error:
        run(labels=data.dataset, embeddings=wrong, progress=False)
    message = str(error.value)
    assert f"1 dataset images have no embedding (first: '{data.embeddings.ids[0]}')" in message
    assert "1 embedding ids are not in the labels table (first: 'stranger')" in message


def test_option_errors():
    data = make_planted(n_groups=3)
    with pytest.raises(InvalidTypeError, match=r"unknown options \['n_neighbours'\]"):
        run(labels=data.dataset, embeddings=data.embeddings, n_neighbours=5)
    with pytest.raises(InvalidInputError, match="nothing to embed"):
        run(labels="labels.csv")
    with pytest.raises(InvalidInputError, match="Give images"):
        run()


def test_config_and_keyword_options_combine():
    data = make_planted(n_groups=10, seed=5)
    config = RunConfig(n_neighbors=6, min_similarity=0.99)
    report = run(
        labels=data.dataset,
        embeddings=data.embeddings,
        config=config,
        min_similarity=0.5,
        progress=False,
    )
    assert report.run_info["parameters"]["n_neighbors"] == 6
    assert report.run_info["parameters"]["min_similarity"] == 0.5


def test_duplicate_counts_hand_computed():
    from clusterclean.duplicates import duplicate_counts

    rows = [  # kind, group, image, is_leak
        ("exact_file", 0, "a", False),
        ("exact_file", 0, "b", True),
        ("exact_pixels", 0, "a", False),
        ("exact_pixels", 0, "b", True),
        ("near", 0, "a", False),
        ("near", 0, "b", True),
        ("near", 1, "c", False),
        ("near", 1, "d", True),
    ]
    frame = pd.DataFrame(rows, columns=["kind", "duplicate_group_id", "image_id", "is_leak"])
    assert duplicate_counts(frame) == {
        "exact_file_groups": 1,
        "exact_pixels_groups": 1,
        "near_groups": 2,
        "leaked_images": 2,  # b counted once though it leaks in three groups
    }
    assert duplicate_counts(None) == {}


def test_bad_duplicate_similarity_is_rejected_before_work():
    with pytest.raises(InvalidInputError, match="'min_duplicate_similarity' parameter of run"):
        RunConfig(min_duplicate_similarity=2.0)


def test_run_takes_a_list_of_image_files_and_guards_their_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "photos"
    (root / "cam1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("cam1/a.png", "cam1/b.png", "c.png", "unlisted.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name)
    files = [root / "cam1" / "a.png", root / "cam1" / "b.png", root / "c.png"]
    report = run(images=files, out=tmp_path / "report", progress=False, adapt="none")
    assert report.dataset.ids.tolist() == ["c.png", "cam1/a.png", "cam1/b.png"]
    assert report.embeddings.vectors.shape[0] == 3
    # the files' common folder is an input: a report may not be written into it
    with pytest.raises(InvalidInputError, match="photos"):
        run(images=files, out=root / "report", progress=False, adapt="none")
    assert (root / "unlisted.png").is_file()
    with pytest.raises(InvalidTypeError, match="list of image file paths"):
        run(images=[files[0], 7], progress=False)


def test_run_takes_a_torchvision_image_folder_with_its_classes(tmp_path):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = tmp_path / "train"
    rng = np.random.default_rng(1)
    for name in ("cat/1.png", "cat/2.png", "dog/3.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / name)
    report = run(images=ImageFolder(root), progress=False, adapt="none", labels_from_folders=True)
    assert report.dataset.ids.tolist() == ["cat/1.png", "cat/2.png", "dog/3.png"]
    assert report.dataset.tasks == {"class": ("class=cat", "class=dog")}
    assert report.dataset.labels.tolist() == [[1, 0], [1, 0], [0, 1]]


def test_a_dataset_of_tensors_is_refused_with_what_to_do_instead():
    import torch

    tensors = torch.utils.data.TensorDataset(torch.zeros(3, 3, 8, 8))
    with pytest.raises(InvalidTypeError, match="pass embeddings you computed"):
        run(images=tensors, progress=False)
