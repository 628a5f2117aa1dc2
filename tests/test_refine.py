import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planted import make_planted

from clusterclean import Embeddings, as_embeddings
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.refine import (
    EPS_RELATIVE,
    Refinement,
    choose_dim,
    fit_refinement,
    load_refinement,
    refine_embeddings,
)


def _raw(vectors) -> Embeddings:
    """Vectors kept as given (not unit rows), to check the algebra on round numbers."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return Embeddings(
        ids=np.array([f"i{k}" for k in range(len(vectors))], dtype=object), vectors=vectors
    )


def test_whitening_of_a_known_covariance():
    # a cross centred on (5, 5): variance 18/3 = 6 along x, 2/3 along y
    emb = _raw([[8, 5], [2, 5], [5, 6], [5, 4]])
    ref = fit_refinement(emb, dim=2, power=1.0)
    np.testing.assert_allclose(ref.mean, [5, 5])
    np.testing.assert_allclose(np.abs(ref.projection), np.eye(2), atol=1e-6)
    eps = EPS_RELATIVE * 6
    np.testing.assert_allclose(ref.scales, [(6 + eps) ** -0.5, (2 / 3 + eps) ** -0.5], rtol=1e-5)
    assert ref.explained_variance == pytest.approx(1.0)
    # before the final normalisation the whitened data have (almost) unit variance
    z = ((emb.vectors - ref.mean) @ ref.projection) * ref.scales
    np.testing.assert_allclose(
        np.cov(z.T), np.diag([6 / (6 + eps), (2 / 3) / (2 / 3 + eps)]), atol=1e-5
    )
    # half power: scales are lambda^(-1/4); one direction keeps 6 / (6 + 2/3) = 0.9
    half = fit_refinement(emb, dim=1, power=0.5)
    assert half.scales[0] == pytest.approx((6 + eps) ** -0.25, rel=1e-5)
    assert half.explained_variance == pytest.approx(0.9)
    assert half.dim_out == 1


def test_choose_dim_hand_computed():
    # cumulative shares 0.5, 0.8, 0.9, 1.0
    assert choose_dim(np.array([5.0, 3, 1, 1]), min_variance=0.8) == 2
    assert choose_dim(np.array([5.0, 3, 1, 1]), min_variance=0.81) == 3
    assert choose_dim(np.array([5.0, 3, 1, 1]), min_variance=1.0) == 4
    assert choose_dim(np.array([5.0, 3, 1, 1]), min_variance=0.1) == 1
    assert choose_dim(np.zeros(3)) == 1


def test_dim_is_capped_at_the_rank():
    planted = make_planted(n_groups=3, max_size=2, dim=16)
    ref = fit_refinement(planted.embeddings, dim=500)
    assert ref.dim_out <= len(planted.embeddings) - 1


def test_apply_reproduces_the_fit_and_save_load_round_trip(tmp_path):
    planted = make_planted(n_groups=40, dim=24)
    refined, ref = refine_embeddings(planted.embeddings, power=1.0)
    again = ref.apply(planted.embeddings)
    np.testing.assert_array_equal(again.vectors, refined.vectors)
    assert refined.backbone == f"user+whiten{ref.dim_out}"
    path = ref.save(tmp_path / "sub" / "refinement.npz")
    loaded = load_refinement(path)
    assert isinstance(loaded, Refinement)
    np.testing.assert_array_equal(loaded.apply(planted.embeddings).vectors, refined.vectors)
    assert loaded.summary() == ref.summary()
    assert [p.name for p in path.parent.iterdir()] == ["refinement.npz"]  # no tmp left


def test_whitening_helps_when_a_shared_direction_dominates():
    # groups differ in 32 weak directions; one strong nuisance direction is shared
    planted = make_planted(n_groups=60, max_size=4, dim=32, noise=0.05, seed=4)
    rng = np.random.default_rng(0)
    nuisance = rng.normal(size=(len(planted.embeddings), 1)) * 3.0
    vectors = np.hstack([planted.embeddings.vectors, nuisance, np.full_like(nuisance, 4.0)])
    raw = as_embeddings(planted.embeddings.ids, vectors)
    refined, _ = refine_embeddings(raw, dim=32, power=1.0)

    def nearest_is_same_group(emb):
        sims = emb.vectors @ emb.vectors.T
        np.fill_diagonal(sims, -np.inf)
        nearest = sims.argmax(axis=1)
        sizes = np.bincount(planted.groups)[planted.groups]
        has_partner = sizes >= 2
        return (planted.groups[nearest] == planted.groups)[has_partner].mean()

    assert nearest_is_same_group(raw) < 0.6
    assert nearest_is_same_group(refined) > 0.95


def test_bad_inputs_are_named():
    planted = make_planted(n_groups=5, dim=8)
    with pytest.raises(
        InvalidInputError,
        match=r"The 'power' parameter of fit_refinement must be a float in \[0, 1\]. "
        "Got 2 instead",
    ):
        fit_refinement(planted.embeddings, power=2)
    with pytest.raises(InvalidInputError, match="'dim' parameter of fit_refinement must be an int"):
        fit_refinement(planted.embeddings, dim=0)
    with pytest.raises(InvalidTypeError, match="must be an Embeddings"):
        fit_refinement(planted.embeddings.vectors)
    with pytest.raises(InvalidInputError, match="at least 3 embeddings"):
        fit_refinement(as_embeddings(["a", "b"], np.eye(2)))
    ref = fit_refinement(planted.embeddings)
    with pytest.raises(InvalidInputError, match="fitted on 8-dimensional embeddings"):
        ref.apply(as_embeddings(["a"], np.ones((1, 3))))


def test_load_rejects_a_foreign_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(2))
    with pytest.raises(InvalidInputError, match="not a refinement file"):
        load_refinement(path)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 40),
    dim=st.integers(2, 12),
    power=st.floats(0, 1),
    keep=st.one_of(st.none(), st.integers(1, 12)),
    seed=st.integers(0, 1000),
)
def test_refined_rows_are_unit_and_finite(n, dim, power, keep, seed):
    rng = np.random.default_rng(seed)
    emb = as_embeddings([str(i) for i in range(n)], rng.normal(size=(n, dim)) + 0.5)
    refined, ref = refine_embeddings(emb, dim=keep, power=power)
    assert refined.vectors.dtype == np.float32 and refined.vectors.flags.c_contiguous
    assert refined.vectors.shape == (n, ref.dim_out)
    assert 1 <= ref.dim_out <= min(dim, n - 1)
    assert np.isfinite(refined.vectors).all()
    norms = np.linalg.norm(refined.vectors, axis=1)
    # a row equal to the mean has no direction left; every other row is unit
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms < 1e-6))
    assert list(refined.ids) == list(emb.ids)
