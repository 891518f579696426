"""lrkernels.torch LowRankLSTM / LowRankGRU / LowRankEmbedding: equal to nn.LSTM / nn.GRU /
nn.Embedding with the reconstructed weights, fused path == torch ops, gradients, cache
invalidation, from_lstm / from_gru / from_embedding, compress, save/load, errors. Skipped
without torch; the fused-path tests skip on an lrkernels core without the recurrent/embedding
layers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import lrkernels  # noqa: E402
import lrkernels.torch as lt  # noqa: E402

HAS_RNN = hasattr(lrkernels, "LowRankLSTM") and hasattr(lrkernels, "LowRankGRU")
HAS_EMB = hasattr(lrkernels, "LowRankEmbedding")
needs_rnn = pytest.mark.skipif(not HAS_RNN, reason="this lrkernels core has no recurrent layers")
needs_emb = pytest.mark.skipif(not HAS_EMB, reason="this lrkernels core has no LowRankEmbedding")

pytestmark = pytest.mark.filterwarnings(
    "ignore:compress.*rank <= 2", "ignore::lrkernels.decompose.CalibrationWarning"
)

KINDS = [(lt.LowRankLSTM, nn.LSTM), (lt.LowRankGRU, nn.GRU)]
KIND_IDS = ["lstm", "gru"]


def _dense_twin(m, torch_class):
    """The nn.LSTM/nn.GRU with m's reconstructed weights (U @ V)."""
    ref = torch_class(
        m.input_size,
        m.hidden_size,
        m.num_layers,
        bias=m.bias,
        batch_first=m.batch_first,
        bidirectional=m.bidirectional,
    ).to(next(m.parameters()).dtype)
    D = 2 if m.bidirectional else 1
    sd = {}
    with torch.no_grad():
        for index in range(m.num_layers * D):
            k, d = divmod(index, D)
            sfx = f"l{k}" + ("_reverse" if d else "")
            W_ih, W_hh = m.dense_weights(index)
            sd[f"weight_ih_{sfx}"], sd[f"weight_hh_{sfx}"] = W_ih, W_hh
            if m.bias:
                for w in ("ih", "hh"):
                    sd[f"bias_{w}_{sfx}"] = getattr(m, f"bias_{w}_{sfx}")
    ref.load_state_dict(sd)
    return ref


def _flat(result):
    out, state = result
    parts = [out] + (list(state) if isinstance(state, tuple) else [state])
    return parts


def _assert_same(a, b, atol=1e-5):
    pa, pb = _flat(a), _flat(b)
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        assert x.shape == y.shape
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), atol=atol, rtol=1e-5)


def _states(cls, n, batch, H, batched=True, dtype=torch.float32):
    shape = (n, batch, H) if batched else (n, H)
    h = torch.randn(shape, dtype=dtype)
    return (h, torch.randn(shape, dtype=dtype)) if cls is lt.LowRankLSTM else h


# -- equal to the dense torch modules --------------------------------------------------------


@pytest.mark.parametrize("cls,torch_class", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "layers,bidir,batch_first",
    [(1, False, False), (2, False, True), (1, True, False), (2, True, True)],
)
def test_matches_torch_module(cls, torch_class, layers, bidir, batch_first):
    torch.manual_seed(0)
    m = cls(5, 4, layers, batch_first=batch_first, bidirectional=bidir, rank=(3, 2))
    ref = _dense_twin(m, torch_class)
    x = torch.randn(3, 6, 5)
    m.use_kernels = False
    with torch.no_grad():
        _assert_same(m(x), ref(x))
        state = _states(cls, layers * (2 if bidir else 1), 3 if batch_first else 6, 4)
        _assert_same(m(x, state), ref(x, state))


@pytest.mark.parametrize("cls,torch_class", KINDS, ids=KIND_IDS)
def test_unbatched_seq1_no_bias_dense_matrix(cls, torch_class):
    torch.manual_seed(1)
    m = cls(5, 4, 2, bias=False, bidirectional=True, rank=(None, 2)).eval()
    assert "weight_ih_l0" in dict(m.named_parameters())
    assert "weight_hh_l0_reverse_U" in dict(m.named_parameters())
    ref = _dense_twin(m, torch_class)
    for x in (torch.randn(7, 5), torch.randn(1, 5), torch.randn(1, 2, 5)):
        with torch.no_grad():
            _assert_same(m(x), ref(x))
    x = torch.randn(7, 5)
    state = _states(cls, 4, None, 4, batched=False)
    with torch.no_grad():
        _assert_same(m(x, state), ref(x, state))


@pytest.mark.parametrize("cls,torch_class", KINDS, ids=KIND_IDS)
def test_gradients_match_torch_module(cls, torch_class):
    torch.manual_seed(2)
    m = cls(4, 3, 2, bidirectional=True, rank=2)
    ref = _dense_twin(m, torch_class)
    x = torch.randn(5, 2, 4)
    out, _ = m(x)
    out.square().sum().backward()
    ref_out, _ = ref(x)
    ref_out.square().sum().backward()
    # d/dU = dW V^T, d/dV = U^T dW with dW the dense module's gradient
    W_grad = ref.weight_ih_l1_reverse.grad
    np.testing.assert_allclose(
        m.weight_ih_l1_reverse_U.grad.numpy(),
        (W_grad @ m.weight_ih_l1_reverse_V.detach().T).numpy(),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        m.bias_hh_l0.grad.numpy(), ref.bias_hh_l0.grad.numpy(), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("cls", [lt.LowRankLSTM, lt.LowRankGRU], ids=KIND_IDS)
def test_gradcheck_float64(cls):
    torch.manual_seed(3)
    m = cls(3, 2, 2, bidirectional=True, rank=(2, 1)).double()
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    U = m.weight_ih_l1_U

    def f(x, h0, U):
        params = dict(m.named_parameters(), weight_ih_l1_U=U)
        state = (h0, torch.zeros_like(h0)) if cls is lt.LowRankLSTM else h0
        out, _ = torch.func.functional_call(m, params, (x, state))
        return out

    assert torch.autograd.gradcheck(f, (x, h0, U))


# -- fused path --------------------------------------------------------------------------------


@needs_rnn
@pytest.mark.parametrize("cls", [lt.LowRankLSTM, lt.LowRankGRU], ids=KIND_IDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_fused_equals_torch_ops(cls, batch_first):
    torch.manual_seed(4)
    m = cls(6, 5, 2, batch_first=batch_first, bidirectional=True, rank=(3, None)).eval()
    x = torch.randn(4, 3, 6)
    state = _states(cls, 4, 4 if batch_first else 3, 5)
    for args in ((x,), (x, state), (x[0],), (x[:, :1],)):
        if args[0].ndim == 2:
            continue
        with torch.no_grad():
            m.use_kernels = True
            fused = m(*args)
            assert m._kernels is not None and m._kernels[1] is not None  # the kernels ran
            m.use_kernels = False
            ops = m(*args)
        _assert_same(fused, ops)
    m.use_kernels = True
    xu = torch.randn(4, 6)  # unbatched
    with torch.no_grad():
        fused = m(xu)
        m.use_kernels = False
        _assert_same(fused, m(xu))


@needs_rnn
def test_training_updates_fused_result():
    torch.manual_seed(5)
    m = lt.LowRankLSTM(4, 3, rank=2)
    x = torch.randn(5, 2, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    with torch.no_grad():
        before = m(x)[0].clone()
    for _ in range(3):
        opt.zero_grad()
        m(x)[0].sum().backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = m(x)[0]
        m.use_kernels = False
        ops = m(x)[0]
    assert not torch.allclose(before, after)
    np.testing.assert_allclose(after.numpy(), ops.numpy(), atol=1e-5)


def test_fused_path_skipped_when_needed():
    m = lt.LowRankGRU(3, 2, 2, dropout=0.5, rank=1)  # training with dropout: torch ops
    x = torch.randn(4, 1, 3)
    with torch.no_grad():
        m(x)
    assert m._kernels is None
    out, _ = m.eval()(x.requires_grad_())  # autograd through the input
    assert out.requires_grad


# -- from_lstm / from_gru -----------------------------------------------------------------------


@pytest.mark.parametrize("cls,torch_class", KINDS, ids=KIND_IDS)
def test_from_torch_full_rank_reproduces(cls, torch_class):
    torch.manual_seed(6)
    dense = torch_class(5, 4, 2, bidirectional=True, batch_first=True)
    convert = cls.from_lstm if cls is lt.LowRankLSTM else cls.from_gru
    m = convert(dense, rank=100)  # lowered to each matrix's bound
    assert m.ranks[0] == (5, 4) and m.ranks[2] == (8, 4)
    x = torch.randn(2, 3, 5)
    with torch.no_grad():
        _assert_same(m(x), dense(x))
    assert "weight_hh_l1_reverse" in m.rank_choice.reason


def test_from_lstm_calibration_and_criteria():
    torch.manual_seed(7)
    dense = nn.LSTM(8, 6, 2)
    calib = [torch.randn(10, 4, 8), torch.randn(6, 4, 8)]
    m = lt.LowRankLSTM.from_lstm(dense, energy=0.95, calibration=calib)
    assert all(1 <= r <= 8 for pair in m.ranks for r in pair)
    m2 = lt.LowRankLSTM.from_lstm(dense, ranks=(3, None))
    assert m2.ranks == [(3, None), (3, None)]
    assert "weight_hh_l1" in dict(m2.named_parameters())
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        err = (m(x)[0] - dense(x)[0]).norm() / dense(x)[0].norm()
    assert err < 0.3
    with pytest.raises(ValueError, match="exactly one"):
        lt.LowRankLSTM.from_lstm(dense, rank=2, energy=0.9)
    with pytest.raises(ValueError, match="proj_size"):
        lt.LowRankLSTM.from_lstm(nn.LSTM(4, 3, proj_size=2), rank=2)
    with pytest.raises(TypeError):
        lt.LowRankGRU.from_gru(dense, rank=2)


@needs_rnn
def test_to_layers_from_layers():
    torch.manual_seed(8)
    m = lt.LowRankGRU(4, 3, 2, bidirectional=True, rank=[(2, 1), (2, None), (3, 2), (1, 1)])
    layers = m.to_layers()
    assert len(layers) == 4
    back = lt.LowRankGRU.from_layers(layers, bidirectional=True)
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        _assert_same(back(x), m(x))


# -- embedding -----------------------------------------------------------------------------


def test_embedding_matches_and_padding():
    torch.manual_seed(9)
    m = lt.LowRankEmbedding(12, 5, 3, padding_idx=-1)
    assert m.padding_idx == 11
    ref = nn.Embedding(12, 5, padding_idx=11)
    with torch.no_grad():
        ref.weight.copy_(m.dense_table())
    idx = torch.tensor([[0, 11, 3], [11, 5, 7]])
    m.use_kernels = False
    with torch.no_grad():
        np.testing.assert_allclose(m(idx).numpy(), ref(idx).numpy(), atol=1e-6)
    out = m(idx)
    assert (out[0, 1] == 0).all()
    out.square().sum().backward()
    assert (m.A.grad[11] == 0).all() and m.B.grad.abs().sum() > 0
    with pytest.raises(IndexError, match=r"\[0, 12\)"):
        m(torch.tensor([12]))
    with pytest.raises(TypeError):
        m(torch.tensor([1.0]))


@needs_emb
def test_embedding_fused_equals_torch_ops():
    torch.manual_seed(10)
    m = lt.LowRankEmbedding(20, 6, 4, padding_idx=2).eval()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    idx = torch.randint(0, 20, (3, 5))
    idx[0, 0] = 2
    for _ in range(2):
        with torch.no_grad():
            fused = m(idx)
            assert m._kernels[1] is not None
            m.use_kernels = False
            ops = m(idx)
            m.use_kernels = True
        np.testing.assert_allclose(fused.numpy(), ops.numpy(), atol=1e-5)
        assert (fused[0, 0] == 0).all()
        opt.zero_grad()
        m(idx).sum().backward()
        opt.step()
    with torch.no_grad():
        np.testing.assert_allclose(m(idx.int()).numpy(), m(idx).numpy())


def test_from_embedding():
    torch.manual_seed(11)
    emb = nn.Embedding(15, 6, padding_idx=0)
    m = lt.LowRankEmbedding.from_embedding(emb, rank=6)
    idx = torch.arange(15)
    with torch.no_grad():
        np.testing.assert_allclose(m(idx).numpy(), emb(idx).numpy(), atol=1e-5)
    m = lt.LowRankEmbedding.from_embedding(emb, energy=0.7, calibration=[idx, idx[:4]])
    assert 1 <= m.rank < 6 and "calibration indices" in m.rank_choice.reason
    for bad, why in (
        (nn.Embedding(5, 3, max_norm=1.0), "max_norm"),
        (nn.Embedding(5, 3, sparse=True), "sparse"),
        (nn.Embedding(5, 3, scale_grad_by_freq=True), "scale_grad_by_freq"),
    ):
        assert why in lt.why_not_factorizable(bad)
        with pytest.raises(ValueError, match=why):
            lt.LowRankEmbedding.from_embedding(bad, rank=2)


# -- compress, save/load ----------------------------------------------------------------


class _TextNet(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(40, 12, padding_idx=0)
        self.lstm = nn.LSTM(12, 10, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(20, 4)

    def forward(self, idx):
        y, _ = self.lstm(self.emb(idx))
        return self.fc(y[:, -1])


def _tokens(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 40, (4, 6), generator=g) for _ in range(n)]


def test_compress_text_model():
    model = _TextNet().eval()
    calib = _tokens(3)
    small, report = lt.compress(model, ratio=0.6, calibration=calib, progress=False, measure=False)
    assert isinstance(small.emb, lt.LowRankEmbedding)
    assert isinstance(small.lstm, lt.LowRankLSTM) and small.lstm.bidirectional
    assert isinstance(model.lstm, nn.LSTM)  # the original is left as is
    row = report["lstm"]
    assert row.dense_kind == "LSTM" and row.kind == "LowRankLSTM" and row.error is not None
    assert row.params_after < row.params_before and len(row.ranks) == 2
    assert report["emb"].kind == "LowRankEmbedding" and report["fc"].flops_before is not None
    assert "lstm" in str(report) and report.to_dict()["layers"][1]["ranks"]
    with torch.no_grad():
        y, y0 = small(calib[0]), model(calib[0])
    assert y.shape == y0.shape and torch.isfinite(y).all()
    _, report = lt.compress(model, budget=0.5, progress=False, exclude=["fc"])
    assert "budget=" in report["lstm"].reason and not report["emb"].compressed
    _, report = lt.compress(model, rank=3, include=[nn.LSTM], progress=False)
    assert [r.name for r in report.layers] == ["lstm"] and report["lstm"].ranks == [(3, 3)] * 2


def test_save_load_round_trip(tmp_path):
    small, _ = lt.compress(_TextNet(), energy=0.9, calibration=_tokens(2), progress=False)
    path = tmp_path / "text.lrk"
    lt.save(small, path)
    loaded = lt.load(_TextNet(seed=5), path)
    assert isinstance(loaded.lstm, lt.LowRankLSTM) and isinstance(loaded.emb, lt.LowRankEmbedding)
    assert loaded.lstm.ranks == small.lstm.ranks and loaded.emb.padding_idx == 0
    x = _tokens(1, seed=3)[0]
    with torch.no_grad():
        np.testing.assert_allclose(loaded.eval()(x).numpy(), small.eval()(x).numpy(), atol=1e-6)

    # The board's loader (no torch) lists the recurrent and embedding layers too.
    layers = lrkernels.load_layers(path)
    assert {"emb", "lstm.l0", "lstm.l0_reverse"} <= set(layers)
    assert isinstance(layers["lstm.l0_reverse"], lrkernels.LowRankLSTM)
    emb = layers["emb"](x.numpy())
    fwd, _ = layers["lstm.l0"](emb.transpose(1, 0, 2))
    bwd, _ = layers["lstm.l0_reverse"](emb.transpose(1, 0, 2), reverse=True)
    with torch.no_grad():
        ref, _ = small.lstm(small.emb(x))
    got = np.concatenate([fwd, bwd], axis=-1).transpose(1, 0, 2)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)

    class Other(_TextNet):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(12, 8, batch_first=True, bidirectional=True)

    with pytest.raises(ValueError, match="does not match"):
        lt.load(Other(), path)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [lt.LowRankLSTM, lt.LowRankGRU], ids=KIND_IDS)
def test_bad_input(cls):
    m = cls(4, 3, 2, rank=2)
    with pytest.raises(ValueError, match=r"input_size=4.*\(5, 2, 6\)"):
        m(torch.randn(5, 2, 6))
    with pytest.raises(ValueError, match="sequence length"):
        m(torch.randn(0, 2, 4))
    with pytest.raises(ValueError, match="expects input of shape"):
        m(torch.randn(4))
    bad_state = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)) if cls is lt.LowRankLSTM else None
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 3\)"):
        m(torch.randn(5, 2, 4), bad_state if bad_state else torch.zeros(1, 2, 3))
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(TypeError, match="PackedSequence"):
        m(packed)
    with pytest.raises(ValueError, match="proj_size"):
        cls(4, 3, rank=2, proj_size=2)
    with pytest.raises(ValueError, match="rank"):
        cls(4, 3, rank=0)
    with pytest.raises(ValueError, match="one .* per layer"):
        cls(4, 3, 2, rank=[(1, 1)])
