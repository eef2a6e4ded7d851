"""Chapter 8's science: a pruned layer computes exactly what the masked layer computes, pruning
twice equals pruning the union at once, a pruned layer's parameters are counted right, the ranking
is global with each layer normalised, and the PyTorch module prunes in place and still matches."""
import math

import numpy as np
import pytest

from mha_checks.chapters import ch08_pruning as ch08
from mha_checks.kit.layers import layer_params

ASSIGNMENT = "ch08_pruning"


@pytest.fixture(scope="module")
def sol():
    """The NumPy solution's definitions (the experiments' cells left out: they run MiniLM)."""
    from autograder.notebooks import solution_namespace
    from course import solution_path
    heavy = {"toy-prune": "", "minilm-prune": "", "install-minilm": ""}
    return solution_namespace(solution_path(ASSIGNMENT, "1_numpy"), replace=heavy)


def masked_by_loops(sol, x, params, n_heads, head_mask):
    """The design's definition: out = sum over heads of mask_h * head_h @ w_o[h block] + b_o."""
    d_k = params["w_q"].shape[1] // n_heads
    _, weights = sol["multi_head_attention"](x, params, n_heads)
    out = np.zeros(x.shape[:2] + (params["w_o"].shape[1],))
    for h in range(n_heads):
        block = slice(h * d_k, (h + 1) * d_k)
        v = x @ params["w_v"][:, block] + params.get("b_v", np.zeros(n_heads * d_k))[block]
        out += head_mask[h] * (weights[:, h] @ v) @ params["w_o"][block]
    return out + params.get("b_o", 0)


@pytest.mark.parametrize("seed", range(5))
def test_the_pruned_layer_equals_the_masked_one(sol, seed):
    rng = np.random.default_rng(seed)
    H, d_k, d_model = int(rng.integers(2, 7)), int(rng.integers(1, 6)), int(rng.integers(4, 20))
    params = layer_params(rng, d_model, H, d_k, np.float64, bias=bool(seed % 2))
    x = rng.standard_normal((2, 5, d_model))
    removed = sorted(set(rng.integers(0, H, size=int(rng.integers(0, H))).tolist()))
    keep = np.ones(H)
    keep[removed] = 0
    pruned, count = sol["prune_heads"](params, H, removed)
    assert count == H - len(removed)
    out, weights = sol["multi_head_attention"](x, pruned, count)
    np.testing.assert_allclose(out, masked_by_loops(sol, x, params, H, keep), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, sol["masked_multi_head_attention"](x, params, H, keep)[0], rtol=1e-10, atol=1e-12)
    kept = [h for h in range(H) if h not in removed]
    np.testing.assert_allclose(weights, sol["multi_head_attention"](x, params, H)[1][:, kept], rtol=1e-12, atol=1e-14)


def test_pruning_twice_equals_pruning_the_union(sol):
    rng = np.random.default_rng(0)
    params = layer_params(rng, 10, 6, 3, np.float64, bias=True)
    once, n_once = sol["prune_heads"](params, 6, [4, 1])          # kept: 0, 2, 3, 5
    twice, n_twice = sol["prune_heads"](once, n_once, [0, 3])      # kept of those: 2, 3
    union, n_union = sol["prune_heads"](params, 6, [0, 1, 4, 5])
    assert n_twice == n_union == 2
    for k in union:
        np.testing.assert_array_equal(twice[k], union[k])


def test_input_untouched_and_results_are_copies(sol):
    rng = np.random.default_rng(1)
    params = layer_params(rng, 8, 4, 2, np.float32, bias=True)
    before = {k: v.copy() for k, v in params.items()}
    for heads in ([], [2], [0, 0, 3]):
        pruned, _ = sol["prune_heads"](params, 4, heads)
        assert all(not np.shares_memory(pruned[k], params[k]) for k in pruned)
        assert pruned["w_q"].dtype == np.float32
    assert all(np.array_equal(params[k], before[k]) for k in params)


def test_parameters_of_a_pruned_minilm_sized_layer(sol):
    d, d_k = 384, 32
    for kept in (12, 6, 1):
        params = {k: np.zeros(s) for k, s in (("w_q", (d, 12 * d_k)), ("w_k", (d, 12 * d_k)), ("w_v", (d, 12 * d_k)),
                                               ("w_o", (12 * d_k, d)), ("b_q", (12 * d_k,)), ("b_k", (12 * d_k,)),
                                               ("b_v", (12 * d_k,)), ("b_o", (d,)))}
        pruned, _ = sol["prune_heads"](params, 12, range(12 - kept))
        assert sum(v.size for v in pruned.values()) == 4 * d * kept * d_k + 3 * kept * d_k + d
    assert 4 * 384 * 192 + 3 * 192 + 384 == 295872


def test_the_pruned_model_runs_like_the_masked_model(sol):
    from mha_checks import toy_task
    model, n_heads = toy_task.load_model()
    tokens, _ = toy_task.held_out(16)
    heads = [(0, 1), (1, 3), (1, 0)]
    pruned, counts = sol["prune_model"](model, n_heads, heads)
    assert counts == [3, 2]
    mask = np.ones((2, n_heads), np.float32)
    for l, h in heads:
        mask[l, h] = 0
    T = tokens.shape[1]
    x = model["embed"][tokens] + model["position"][:T]
    for l, params in enumerate(model["layers"]):
        x = x + sol["masked_multi_head_attention"](x, params, n_heads, mask[l], sol["causal_mask"](T))[0]
    masked = x @ model["unembed"] + model["b_unembed"]
    np.testing.assert_allclose(sol["pruned_forward"](tokens, pruned, counts), masked, rtol=1e-4, atol=1e-5)


def test_the_ranking_is_global_and_normalised_per_layer(sol):
    importance = np.array([[10.0, 20.0, 30.0], [0.1, 0.2, 0.05]])
    alive = np.ones((2, 3), bool)
    # per layer: [0.27, 0.53, 0.80] and [0.44, 0.87, 0.22]: the two lowest are (1, 2) and (0, 0)
    assert sorted(sol["heads_to_prune"](importance, alive, 2)) == [(0, 0), (1, 2)]
    alive[1, 2] = False   # normalised over the alive heads only: layer 1 becomes [0.45, 0.89]
    assert sol["heads_to_prune"](importance, alive, 2) == [(0, 0), (1, 0)]
    assert sol["heads_to_prune"](np.zeros((2, 2)), np.ones((2, 2), bool), 3) == [(0, 0), (0, 1), (1, 0)]


def test_the_minilm_order_prunes_every_head_once_and_keeps_one_per_layer():
    order = ch08.minilm_pruning_order()
    assert len(order) == len(set(order)) == 66
    assert sorted({l for l, _ in order}) == list(range(6))
    assert all(sum(1 for l, _ in order if l == layer) == 11 for layer in range(6))


def test_the_torch_module_prunes_in_place_and_matches_the_masked_module():
    torch = pytest.importorskip("torch")
    # the whole notebook runs MiniLM and trains gates: build the definitions only
    from autograder.notebooks import solution_namespace
    from course import solution_path
    ns = solution_namespace(solution_path(ASSIGNMENT, "3_pytorch"),
                            replace={"minilm-prune": "", "gates-train": "", "install-minilm": ""})
    layer = ns["MultiHeadAttention"](12, 4, d_k=3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    with torch.no_grad():
        masked = layer(x, None, keep)[0]
        layer.prune_heads([3, 1])
        pruned = layer(x)[0]
    assert layer.n_heads == 2 and tuple(layer.w_o.shape) == (6, 12)
    assert torch.allclose(pruned, masked, rtol=1e-10, atol=1e-12)
    assert math.isclose(float(ns["HardConcreteGates"]((1,)).l0_penalty().detach()),
                        1 / (1 + math.exp(-(3.0 - 2 / 3 * math.log(0.1 / 1.1)))), rel_tol=1e-6)


# --------------------------------------------------------------------------
# The CuPy track's results, without a GPU: a stand-in for CuPy's arrays
# --------------------------------------------------------------------------

class FakeCupyArray:
    """A NumPy array behind another type, as cupy.ndarray is to the checks: indexing, copies and writes,
    no implicit conversion to NumPy (as CuPy refuses one)."""

    def __init__(self, array):
        self.array = np.asarray(array)

    @staticmethod
    def _plain(index):
        if isinstance(index, tuple):
            return tuple(FakeCupyArray._plain(i) for i in index)
        return index.array if isinstance(index, FakeCupyArray) else index

    def __getitem__(self, index):
        return FakeCupyArray(self.array[self._plain(index)])

    def __setitem__(self, index, value):
        self.array[self._plain(index)] = self._plain(value)

    def __iter__(self):
        return (FakeCupyArray(v) for v in self.array)

    def __len__(self):
        return len(self.array)

    def __int__(self):
        return int(self.array)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    ndim = property(lambda self: self.array.ndim)

    def copy(self):
        return FakeCupyArray(self.array.copy())


@pytest.fixture
def fake_cupy_checks():
    """The chapter's checks of the CuPy track, whose backend holds FakeCupyArray as cupy.ndarray."""
    import types
    from mha_checks.backends import CupyBackend
    fake = types.SimpleNamespace(
        ndarray=FakeCupyArray, int64=np.int64, asnumpy=lambda a: a.array.copy(),
        asarray=lambda a, dtype=None: a if isinstance(a, FakeCupyArray) else FakeCupyArray(np.array(a, dtype=dtype)))
    backend = object.__new__(CupyBackend)
    backend.xp, backend.device = fake, "gpu"
    checks = ch08.Checks("cupy")
    checks._backend = backend
    return checks, fake


def _cupy_like_prune_heads(cp):
    def prune_heads(params, n_heads, heads):   # the CuPy solution, on the stand-in
        d_k = params["w_q"].shape[1] // n_heads
        removed = set(int(h) for h in heads)
        kept = [h for h in range(n_heads) if h not in removed]
        columns = cp.asarray([c for h in kept for c in range(h * d_k, (h + 1) * d_k)], dtype=cp.int64)
        new_params = {}
        for name, value in params.items():
            if name in ("w_q", "w_k", "w_v"):
                new_params[name] = value[:, columns]
            elif name in ("b_q", "b_k", "b_v", "w_o"):
                new_params[name] = value[columns]
            else:
                new_params[name] = value.copy()
        return new_params, len(kept)
    return prune_heads


def _judged(checks, method, fn, hidden):
    from mha_checks import transport
    record = transport.loads(transport.dumps(checks.collect(method, fn, hidden=hidden)))
    return record, checks.judge(method, record, hidden=hidden)


def test_the_cupy_tracks_results_are_cupy_arrays(fake_cupy_checks):
    """Every output of prune_heads' and prune_model's calls, the head count and the input's status code
    included, is the track's array: the engine's result check rejects anything else."""
    checks, cp = fake_cupy_checks
    prune_heads = _cupy_like_prune_heads(cp)

    def prune_model(model, n_heads, heads):
        counts = [n_heads] * len(model["layers"]) if isinstance(n_heads, int) else list(n_heads)
        pruned = [prune_heads(p, counts[l], [h for ll, h in heads if ll == l]) for l, p in enumerate(model["layers"])]
        return {**model, "layers": [p for p, _ in pruned]}, [n for _, n in pruned]

    for method, fn in (("prune_heads", prune_heads), ("prune_model", prune_model)):
        for hidden in (False, True):
            record, message = _judged(checks, method, fn, hidden)
            assert message.startswith("\u2714"), message
            for case in record:
                assert all(value["native"] and value["type"].endswith("FakeCupyArray") for value in case["values"])


def test_numpy_arrays_returned_in_the_cupy_track_are_named(fake_cupy_checks):
    from mha_checks.engine import CheckFailure
    checks, cp = fake_cupy_checks
    prune_heads = _cupy_like_prune_heads(cp)

    def on_the_host(params, n_heads, heads):
        new, count = prune_heads(params, n_heads, heads)
        return {k: v.array.copy() for k, v in new.items()}, count

    with pytest.raises(CheckFailure, match="returned w_q as numpy.ndarray; this notebook works with cupy.ndarray"):
        _judged(checks, "prune_heads", on_the_host, False)
    with pytest.raises(CheckFailure, match="new_n_heads as a number of heads"):
        _judged(checks, "prune_heads", lambda p, n, h: (prune_heads(p, n, h)[0], None), False)
