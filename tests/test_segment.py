"""segment_sum / segment_max / segment_softmax on numpy, torch and jax."""

import math

import numpy as np
import pytest
from helpers import dense_softmax_reference, to_numpy

from graphdesc.segment import segment_max, segment_softmax, segment_sum

POISON = [np.inf, -np.inf, np.nan, 1e300, -1e300]


def ragged(rng, num_segments=7, n=60, features=()):
    """Random logits with unsorted ids; segments 0 and 3 are left empty."""
    ids = rng.choice([s for s in range(num_segments) if s not in (0, 3)], size=n)
    data = rng.normal(scale=3.0, size=(n,) + features)
    return data, ids


def poison(data, mask, rng):
    """``data`` with every masked slot holding one of inf, -inf, nan, +-1e300."""
    out = np.array(data, dtype=float)
    full = np.broadcast_to(mask.reshape(mask.shape + (1,) * (out.ndim - mask.ndim)), out.shape)
    out[~full] = rng.choice(POISON, size=int((~full).sum()))
    return out


# --- segment_sum --------------------------------------------------------------


@pytest.mark.parametrize("features", [(), (3,), (2, 2)])
def test_segment_sum_matches_loop(backend, features):
    rng = np.random.default_rng(0)
    data, ids = ragged(rng, features=features)
    mask = rng.random(len(ids)) < 0.7
    expect = np.zeros((7,) + features)
    for i, s in enumerate(ids):
        if mask[i]:
            expect[s] += data[i]
    bad = poison(data, mask, rng)
    got = segment_sum(backend.asarray(bad), backend.asarray(ids), 7, mask=backend.asarray(mask))
    np.testing.assert_allclose(to_numpy(got), expect, rtol=1e-14, atol=1e-14)
    full = segment_sum(backend.asarray(data), backend.asarray(ids), 7)
    np.testing.assert_allclose(to_numpy(full), np.stack([data[ids == s].sum(0) for s in range(7)]), atol=1e-13)


def test_segment_sum_integer_data(backend):
    ids = np.array([2, 0, 2, 2])
    got = segment_sum(backend.asarray(np.array([1, 2, 3, 4])), backend.asarray(ids), 3)
    assert to_numpy(got).tolist() == [2, 0, 8]


# --- segment_max --------------------------------------------------------------


@pytest.mark.parametrize("features", [(), (3,)])
def test_segment_max_matches_loop_and_ignores_poison(backend, features):
    rng = np.random.default_rng(1)
    data, ids = ragged(rng, features=features)
    mask = rng.random(len(ids)) < 0.6
    mask[ids == 5] = False  # a fully masked segment
    expect = np.zeros((7,) + features)
    for s in range(7):
        rows = data[(ids == s) & mask]
        if len(rows):
            expect[s] = rows.max(0)
    got = segment_max(backend.asarray(poison(data, mask, rng)), backend.asarray(ids), 7, mask=backend.asarray(mask))
    np.testing.assert_array_equal(to_numpy(got), expect)


def test_segment_max_empty_value(backend):
    ids = backend.asarray(np.array([1, 1]))
    data = backend.asarray(np.array([-2.0, -3.0]))
    assert to_numpy(segment_max(data, ids, 3)).tolist() == [0.0, -2.0, 0.0]
    got = to_numpy(segment_max(data, ids, 3, empty_value=-math.inf))
    assert got.tolist() == [-math.inf, -2.0, -math.inf]


def _grad(backend, fn, x):
    """Gradient of ``fn`` (array -> scalar) at numpy ``x``, torch or jax."""
    if backend.name == "torch":
        import torch

        t = torch.from_numpy(x.copy()).requires_grad_()
        (g,) = torch.autograd.grad(fn(t), t)
        return g.numpy()
    import jax

    return np.asarray(jax.grad(fn)(backend.asarray(x)))


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_segment_max_gradient_splits_ties_evenly(name):
    from helpers import Backend

    backend = Backend(name)
    # segment 0: a three-way tie at 2.0; segment 1: a unique max; segment 2: masked max
    x = np.array([2.0, 1.0, 2.0, 2.0, 5.0, 4.0, 9.0, 3.0])
    ids = backend.asarray(np.array([0, 0, 0, 0, 1, 1, 2, 2]))
    mask = backend.asarray(np.array([True] * 6 + [False, True]))
    weights = np.array([1.0, 10.0, 100.0])

    def f(t):
        out = segment_max(t, ids, 3, mask=mask)
        return (out * backend.asarray(weights)).sum()

    expect = np.array([1 / 3, 0, 1 / 3, 1 / 3, 10, 0, 0, 100])
    np.testing.assert_allclose(_grad(backend, f, x), expect, rtol=0, atol=1e-15)


# --- segment_softmax ----------------------------------------------------------


@pytest.mark.parametrize("features", [(), (3,)])
@pytest.mark.parametrize("full_mask", [False, True], ids=["mask(E)", "mask(E,F)"])
@pytest.mark.parametrize("phantom", [None, "scalar", "per-segment"])
def test_softmax_matches_dense_padded_reference(backend, features, full_mask, phantom):
    rng = np.random.default_rng(2)
    data, ids = ragged(rng, features=features)
    shape = data.shape if full_mask else data.shape[:1]
    mask = rng.random(shape) < 0.75
    kwargs = {}
    counts, plog = None, 0.0
    if phantom is not None:
        counts = rng.integers(0, 4, size=7).astype(float)
        counts[0] = 2  # an empty segment with phantoms only
        plog = -1.5 if phantom == "scalar" else rng.normal(size=7)
        kwargs = dict(phantom_count=backend.asarray(counts),
                      phantom_logit=plog if phantom == "scalar" else backend.asarray(plog))
    got = segment_softmax(backend.asarray(poison(data, mask if full_mask else mask, rng)), backend.asarray(ids), 7,
                          mask=backend.asarray(mask), **kwargs)
    expect = dense_softmax_reference(data, ids, 7, mask, counts, plog)
    err = np.max(np.abs(to_numpy(got) - expect.astype(float)))
    assert err <= 1e-13, err


def test_softmax_masked_content_never_matters(backend):
    """Masked slots holding inf/-inf/nan/+-1e300 give bit-identical weights,
    exactly zero at the masked slots."""
    rng = np.random.default_rng(3)
    data, ids = ragged(rng, features=(2,))
    mask = rng.random(len(ids)) < 0.5
    clean = np.where(mask[:, None], data, 0.0)
    args = (backend.asarray(ids), 7)
    ref = to_numpy(segment_softmax(backend.asarray(clean), *args, mask=backend.asarray(mask)))
    for value in POISON:
        dirty = np.where(mask[:, None], data, value)
        got = to_numpy(segment_softmax(backend.asarray(dirty), *args, mask=backend.asarray(mask)))
        np.testing.assert_array_equal(got, ref)
        assert np.all(got[~mask] == 0.0)


def test_softmax_empty_and_fully_masked_segments_are_zero(backend):
    ids = np.array([1, 1, 2, 2])
    mask = np.array([True, True, False, False])
    logits = np.array([0.3, -0.2, np.nan, np.inf])
    w = to_numpy(segment_softmax(backend.asarray(logits), backend.asarray(ids), 4, mask=backend.asarray(mask)))
    assert np.isfinite(w).all()
    assert w[2:].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(w[:2].sum(), 1.0, rtol=1e-15)
    empty = segment_softmax(backend.asarray(np.zeros(0)), backend.asarray(np.zeros(0, dtype=np.int64)), 3)
    assert to_numpy(empty).shape == (0,)


def test_softmax_extreme_logits_stay_finite(backend):
    logits = np.array([1e300, -1e300, 0.0, 700.0, -700.0, 1e-300])
    ids = np.array([0, 0, 1, 1, 1, 2])
    w = to_numpy(segment_softmax(backend.asarray(logits), backend.asarray(ids), 3))
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w, [1.0, 0.0, np.exp(-700.0), 1.0, 0.0, 1.0], rtol=1e-14, atol=0)


def test_phantom_logit_takes_part_in_the_max(backend):
    """A real logit of -720 next to one phantom at 0: exp(720) overflows unless
    the phantom is part of the max; the right weight is exp(-720) / (1 + exp(-720))."""
    if backend.name == "jax":
        pytest.skip("XLA on CPU flushes subnormals to zero and exp(-720) is subnormal; "
                    "the code path is shared and checked on numpy and torch")
    w = segment_softmax(backend.asarray(np.array([-720.0])), backend.asarray(np.array([0])), 1,
                        phantom_count=backend.asarray(np.array([1.0])), phantom_logit=0.0)
    w = float(to_numpy(w)[0])
    assert w > 0.0
    assert math.isclose(w, math.exp(-720.0), rel_tol=1e-8)


def test_softmax_rows_sum_to_one_without_phantoms(backend):
    rng = np.random.default_rng(4)
    data, ids = ragged(rng, features=(4,))
    w = to_numpy(segment_softmax(backend.asarray(data), backend.asarray(ids), 7))
    sums = np.stack([w[ids == s].sum(0) for s in range(7)])
    present = np.isin(np.arange(7), ids)
    np.testing.assert_allclose(sums[present], 1.0, rtol=1e-14)
    assert np.all(sums[~present] == 0.0)


# --- gradients ----------------------------------------------------------------


def _softmax_problem(seed=5):
    rng = np.random.default_rng(seed)
    ids = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    mask = np.array([1, 1, 0, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    logits = rng.normal(size=len(ids))
    logits[~mask] = [np.nan, np.inf, -np.inf]
    counts = np.array([1.0, 0.0, 2.0, 3.0])
    coef = rng.normal(size=len(ids))
    return logits, ids, mask, counts, coef


def test_torch_gradcheck_and_gradgradcheck_with_poisoned_mask():
    torch = pytest.importorskip("torch")
    logits, ids, mask, counts, coef = _softmax_problem()
    ids_t, mask_t, counts_t = map(torch.from_numpy, (ids, mask, counts))
    x = torch.from_numpy(logits).requires_grad_()

    def f(t):
        return segment_softmax(t, ids_t, 4, mask=mask_t, phantom_count=counts_t, phantom_logit=-0.7)

    assert torch.autograd.gradcheck(f, (x,), atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradgradcheck(f, (x,), atol=1e-10, rtol=1e-8)
    (g,) = torch.autograd.grad((f(x) * torch.from_numpy(coef)).sum(), x, create_graph=True)
    assert torch.isfinite(g).all() and torch.all(g[~mask_t] == 0)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(gg).all() and torch.all(gg[~mask_t] == 0)


def test_jax_grad_and_hessian_finite_and_equal_to_torch():
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    logits, ids, mask, counts, coef = _softmax_problem()

    def f_jax(t):
        w = segment_softmax(t, jnp.asarray(ids), 4, mask=jnp.asarray(mask),
                            phantom_count=jnp.asarray(counts), phantom_logit=-0.7)
        return jnp.sum(w * jnp.asarray(coef))

    g = np.asarray(jax.grad(f_jax)(jnp.asarray(logits)))
    h = np.asarray(jax.hessian(f_jax)(jnp.asarray(logits)))
    assert np.isfinite(g).all() and np.isfinite(h).all()
    assert np.all(g[~mask] == 0) and np.all(h[~mask] == 0) and np.all(h[:, ~mask] == 0)

    def f_torch(t):
        w = segment_softmax(t, torch.from_numpy(ids), 4, mask=torch.from_numpy(mask),
                            phantom_count=torch.from_numpy(counts), phantom_logit=-0.7)
        return (w * torch.from_numpy(coef)).sum()

    h_t = torch.autograd.functional.hessian(f_torch, torch.from_numpy(logits)).numpy()
    g_t = torch.func.grad(f_torch)(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(g, g_t, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h, h_t, rtol=0, atol=1e-14)


def test_softmax_gradient_finite_at_extremes():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1e300, -1e300, 0.0, 700.0, -700.0, 1e-300], dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    w = segment_softmax(x, ids, 3)
    (g,) = torch.autograd.grad((w * torch.arange(6.0, dtype=torch.float64)).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()


def test_jax_jit_softmax():
    """Under jax.jit the value checks are skipped (tracers) and the result is
    the eager one up to XLA's fusion rounding (1 ulp)."""
    jax = pytest.importorskip("jax")
    from helpers import Backend

    backend = Backend("jax")

    logits, ids, mask, counts, _ = _softmax_problem()
    args = [backend.asarray(a) for a in (logits, ids, mask, counts)]

    def f(lg, i, m, c):
        return segment_softmax(lg, i, 4, mask=m, phantom_count=c, phantom_logit=-0.7)

    np.testing.assert_allclose(np.asarray(jax.jit(f)(*args)), np.asarray(f(*args)), rtol=0, atol=1e-15)


# --- contracts ----------------------------------------------------------------


def test_outputs_are_new_arrays_numpy():
    data = np.arange(4.0)
    ids = np.arange(4)
    for fn in (segment_sum, segment_max, segment_softmax):
        out = fn(data, ids, 4)
        assert not np.shares_memory(out, data)
        out[...] = -1.0
    np.testing.assert_array_equal(data, np.arange(4.0))


@pytest.mark.parametrize("fn", [segment_sum, segment_max, segment_softmax])
def test_bad_input_errors_name_the_argument(backend, fn):
    a = backend.asarray
    x, ids = a(np.ones(4)), a(np.array([0, 1, 1, 2]))
    with pytest.raises(TypeError, match="segment_ids must have an integer dtype"):
        fn(x, a(np.array([0.0, 1.0, 1.0, 2.0])), 3)
    with pytest.raises(ValueError, match=r"segment_ids out of range: values span \[0, 2\]"):
        fn(x, ids, 2)
    with pytest.raises(ValueError, match="segment_ids out of range"):
        fn(x, a(np.array([0, -1, 1, 2])), 3)
    with pytest.raises(ValueError, match=r"segment_ids has 3 entries but (data|logits) has 4"):
        fn(x, a(np.array([0, 1, 1])), 3)
    with pytest.raises(ValueError, match="segment_ids must be 1-D"):
        fn(x, a(np.zeros((4, 1), dtype=np.int64)), 3)
    with pytest.raises(ValueError, match="num_segments must be >= 0"):
        fn(x, ids, -1)
    with pytest.raises(TypeError, match="num_segments must be an integer"):
        fn(x, ids, 3.0)
    with pytest.raises(TypeError, match="mask must have dtype bool"):
        fn(x, ids, 3, mask=a(np.ones(4, dtype=np.int64)))
    with pytest.raises(ValueError, match="mask must have shape"):
        fn(x, ids, 3, mask=a(np.ones(5, dtype=bool)))
    if fn is not segment_sum:
        with pytest.raises(TypeError, match="must have a real floating dtype"):
            fn(a(np.ones(4, dtype=np.int64)), ids, 3)


def test_bad_phantom_count(backend):
    a = backend.asarray
    x, ids = a(np.ones(4)), a(np.array([0, 1, 1, 2]))
    with pytest.raises(ValueError, match=r"phantom_count must have shape \(3,\)"):
        segment_softmax(x, ids, 3, phantom_count=a(np.ones(4)))



def test_negative_phantom_count_removes_terms(backend):
    """A count of -c removes c phantom terms; a row it would empty drops its phantoms."""
    a = backend.asarray
    logits = np.array([0.3, -0.5, 1.1, 0.2, -20.0, 2.0])
    ids = np.array([0, 0, 0, 1, 1, 2])
    counts = np.array([-2.0, -1.0, -1.0])  # every row keeps a positive denominator
    got = to_numpy(segment_softmax(a(logits), a(ids), 3, phantom_count=a(counts), phantom_logit=-20.0))
    ld = logits.astype(np.longdouble)
    expect = np.zeros(6, dtype=np.longdouble)
    for s in range(3):
        m = ids == s
        top = ld[m].max()
        e = np.exp(ld[m] - top)
        denom = e.sum() + counts[s] * np.exp(np.longdouble(-20.0) - top)
        expect[m] = e / (denom if denom > 0 else e.sum())
    np.testing.assert_allclose(got, expect.astype(float), rtol=1e-14, atol=0)
    # row 1 removes one exp(-20) against 0.2 and -20: stays positive and differs from the plain softmax
    assert abs(got[3] - np.exp(0.2) / (np.exp(0.2) + np.exp(-20.0))) > 1e-12
    # a row that removal would empty (or flip) falls back to no phantoms: never NaN
    flip = to_numpy(segment_softmax(a(np.array([-20.0, -20.0])), a(np.array([0, 0])), 1,
                                            phantom_count=a(np.array([-5.0])), phantom_logit=-20.0))
    np.testing.assert_allclose(flip, [0.5, 0.5], rtol=1e-15)


def test_masked_softmax_matches_segment_softmax(backend):
    """The dense layout against the independent extended-precision reference (non-negative
    phantom counts) and against segment_softmax (signed counts), masked slots poisoned."""
    from graphdesc.segment import masked_softmax

    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (4, 5, 6))
    mask = rng.uniform(size=(4, 5, 6)) > 0.3
    mask[0, 0] = False  # a fully masked row
    poisoned = np.where(mask, logits, np.nan)
    poisoned[~mask & (rng.uniform(size=mask.shape) > 0.5)] = np.inf
    ids = np.repeat(np.arange(20), 6)
    for count in (rng.integers(0, 4, (4, 5, 1)), rng.integers(-2, 4, (4, 5, 1))):
        count = count.astype(float)
        got = to_numpy(masked_softmax(backend.asarray(poisoned), backend.asarray(mask),
                                      phantom_count=backend.asarray(count), phantom_logit=-1.0)).reshape(-1)
        if count.min() >= 0:
            want = dense_softmax_reference(logits.reshape(-1), ids, 20, mask.reshape(-1), count.reshape(-1), -1.0)
        else:
            want = segment_softmax(logits.reshape(-1), ids, 20, mask=mask.reshape(-1),
                                   phantom_count=count.reshape(-1), phantom_logit=-1.0)
        np.testing.assert_allclose(got, np.asarray(want, dtype=float), rtol=0, atol=1e-15)
        assert np.all(got.reshape(4, 5, 6)[0, 0] == 0)
    plain = masked_softmax(backend.asarray(poisoned), backend.asarray(mask))
    want = dense_softmax_reference(logits.reshape(-1), ids, 20, mask.reshape(-1))
    np.testing.assert_allclose(to_numpy(plain).reshape(-1), np.asarray(want, dtype=float), rtol=0, atol=1e-15)
