import numpy as np
import pandas as pd
import pytest

from clusterclean import Dataset, as_embeddings
from clusterclean.errors import InvalidInputError


def _table(ids):
    return pd.DataFrame({"image_id": ids})


def test_dataset_rejects_nul_in_ids_and_attributes():
    with pytest.raises(InvalidInputError, match=r"image id 'a\\x00' holds a NUL"):
        Dataset(table=_table(["a\x00"]), labels=np.zeros((1, 1)), attributes=["x"])
    with pytest.raises(InvalidInputError, match=r"attribute 'x\\x00' holds a NUL"):
        Dataset(table=_table(["a"]), labels=np.zeros((1, 1)), attributes=["x\x00"])


def test_dataset_rejects_labels_other_than_0_1_missing():
    with pytest.raises(InvalidInputError, match="image 'b', attribute 'y' is 2.0"):
        Dataset(table=_table(["a", "b"]), labels=[[0, 1], [1, 2]], attributes=["x", "y"])
    with pytest.raises(
        InvalidInputError,
        match=r"shape \(2, 2\) but the dataset has 2 images "
        "and 3 attributes",
    ):
        Dataset(table=_table(["a", "b"]), labels=np.zeros((2, 2)), attributes=["x", "y", "z"])


def test_as_embeddings_normalises_and_names_bad_rows():
    emb = as_embeddings(["a", "b"], [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(emb.vectors, [[0.6, 0.8], [0.0, 1.0]])
    assert emb.vectors.dtype == np.float32 and emb.vectors.flags.c_contiguous
    with pytest.raises(InvalidInputError, match="all zeros \\(first: image 'b'\\)"):
        as_embeddings(["a", "b"], [[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(InvalidInputError, match="NaN or inf \\(first: image 'a'\\)"):
        as_embeddings(["a", "b"], [[np.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(InvalidInputError, match="'a' appears more than once"):
        as_embeddings(["a", "a"], [[1.0, 0.0], [0.0, 1.0]])


def test_parameter_checks_share_one_wording():
    from clusterclean._validation import check_float, check_int
    from clusterclean.errors import InvalidTypeError

    assert check_int(5, "n", "f", min_value=1, max_value=5) == 5
    with pytest.raises(
        InvalidInputError,
        match=r"'n' parameter of f must be an int in \[1, 5\]. "
        "Got 6 instead.",
    ):
        check_int(6, "n", "f", min_value=1, max_value=5)
    with pytest.raises(InvalidTypeError, match="must be an int >= 1. Got True instead."):
        check_int(True, "n", "f", min_value=1)
    with pytest.raises(InvalidInputError, match=r"must be a float in \[0, 0.5\]. Got nan instead."):
        check_float(float("nan"), "rate", "f", low=0.0, high=0.5)
