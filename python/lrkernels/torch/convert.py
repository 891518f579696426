"""torch modules <-> lrkernels: factorizing nn.Linear / nn.Conv2d / nn.LSTM / nn.GRU /
nn.Embedding, folding BatchNorm.

``why_not_factorizable(module)`` says why a module stays dense (None when it can be factorized);
``factorize_linear`` / ``factorize_conv`` run the lrkernels ``from_dense`` of the target kind on the
module's weight (float64 numpy) and return the torch module (``factorize_rnn``: every weight matrix
of an nn.LSTM / nn.GRU; ``factorize_embedding``: an nn.Embedding's table); ``fold_batchnorm``
folds an eval-mode BatchNorm that follows a factorized module into its last factor and bias.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import lrkernels

from ._kernel_cache import KernelModule
from .modules import CPConv2d, FactorizedModule, LowRankLinear, TuckerConv2d

__all__ = [
    "factorize_conv",
    "factorize_embedding",
    "factorize_linear",
    "factorize_rnn",
    "fold_batchnorm",
    "to_numpy",
    "why_not_factorizable",
]

_CRITERIA = ("rank", "energy", "ratio", "vbmf")


def to_numpy(t, dtype=np.float64):
    """A tensor or array-like as a numpy array (detached, on the CPU)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu")
        t = t.to(torch.float64) if t.is_floating_point() else t
        return np.asarray(t.numpy(), dtype=dtype)
    return np.asarray(t, dtype=dtype)


def conv_padding(conv):
    """nn.Conv2d's padding as a symmetric (ph, pw) pair; ValueError for 'same' padding that is
    not symmetric (an even effective kernel)."""
    p = conv.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        pads = []
        for k, d, s in zip(conv.kernel_size, conv.dilation, conv.stride):
            total = d * (k - 1)
            if total % 2 or s != 1:
                raise ValueError("padding='same' with an even effective kernel is asymmetric")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(p)


def why_not_factorizable(module):
    """None when ``module`` (nn.Linear, nn.Conv2d, nn.LSTM, nn.GRU or nn.Embedding) can be
    factorized, else the reason."""
    if isinstance(module, (FactorizedModule, KernelModule)):
        return "already factorized"
    if isinstance(module, nn.Linear):
        if type(module) is not nn.Linear:
            # e.g. nn.MultiheadAttention's out_proj, whose weight its parent reads directly
            return f"{type(module).__name__} is not a plain nn.Linear"
        if min(module.in_features, module.out_features) < 2:
            return f"a {module.out_features}x{module.in_features} weight has no lower rank"
        return None
    if isinstance(module, nn.Conv2d):
        if type(module) is not nn.Conv2d:
            return f"{type(module).__name__} is not a plain nn.Conv2d"
        if module.groups != 1:
            return f"groups={module.groups} (grouped/depthwise convolutions are left dense)"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only zero padding is fused)"
        try:
            conv_padding(module)
        except ValueError as e:
            return str(e)
        if min(module.in_channels, module.out_channels) < 2:
            return f"{module.in_channels} -> {module.out_channels} channels have no lower rank"
        return None
    if isinstance(module, (nn.LSTM, nn.GRU)):
        if type(module) not in (nn.LSTM, nn.GRU):
            return f"{type(module).__name__} is not a plain nn.LSTM or nn.GRU"
        if getattr(module, "proj_size", 0):
            return f"proj_size={module.proj_size} (LSTM projections are not supported)"
        if module.hidden_size < 2:
            return "hidden_size=1: the recurrent weights have no lower rank"
        return None
    if isinstance(module, nn.Embedding):
        if type(module) is not nn.Embedding:
            return f"{type(module).__name__} is not a plain nn.Embedding"
        if module.max_norm is not None:
            return (
                f"max_norm={module.max_norm} (the lookup renormalizes the table's rows in place: "
                "there is no fixed table to factorize)"
            )
        if module.sparse:
            return "sparse=True (sparse gradients of the table have no factorized equivalent)"
        if module.scale_grad_by_freq:
            return "scale_grad_by_freq=True (a gradient rule of the dense table only)"
        if min(module.num_embeddings, module.embedding_dim) < 2:
            return f"a {module.num_embeddings}x{module.embedding_dim} table has no lower rank"
        return None
    return f"{type(module).__name__} is not nn.Linear, nn.Conv2d, nn.LSTM, nn.GRU or nn.Embedding"


def _check_criterion(criterion, allowed=("calibration", "method")):
    names = _CRITERIA + (("ranks",) if "ranks" in allowed else ())
    given = [k for k in names if criterion.get(k) is not None and criterion.get(k) is not False]
    unknown = sorted(set(criterion) - set(_CRITERIA) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown}; a criterion is one of {list(_CRITERIA)}")
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of rank=, energy=, ratio=, vbmf=True; got {given or 'none'}"
        )
    return {k: v for k, v in criterion.items() if v is not None}


def _calibration(calibration, ndim):
    if calibration is None:
        return None
    x = to_numpy(calibration)
    if ndim == 2 and x.ndim > 2:
        x = x.reshape(-1, x.shape[-1])
    return x


def factorize_linear(linear, *, layer_class=LowRankLinear, **criterion):
    """The LowRankLinear (``layer_class``) of an nn.Linear by one criterion (see
    ``lrkernels.LowRankLinear.from_dense``), on the module's device and dtype."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
    reason = why_not_factorizable(linear)
    if reason:
        raise ValueError(f"cannot factorize this nn.Linear: {reason}")
    criterion = _check_criterion(criterion, allowed=("calibration",))
    criterion["calibration"] = _calibration(criterion.get("calibration"), 2)
    bias = None if linear.bias is None else to_numpy(linear.bias)
    layer = lrkernels.LowRankLinear.from_dense(to_numpy(linear.weight), bias, **criterion)
    module = layer_class.from_layer(layer)
    return module.to(linear.weight.device, linear.weight.dtype)


def factorize_conv(conv, *, layer_class=TuckerConv2d, **criterion):
    """The TuckerConv2d or CPConv2d (``layer_class``) of an nn.Conv2d by one criterion (see the
    lrkernels class's ``from_dense``), with its stride, padding, dilation and bias."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"from_conv needs an nn.Conv2d, got {type(conv).__name__}")
    reason = why_not_factorizable(conv)
    if reason:
        raise ValueError(f"cannot factorize this nn.Conv2d: {reason}")
    if layer_class not in (TuckerConv2d, CPConv2d) and not issubclass(
        layer_class, (TuckerConv2d, CPConv2d)
    ):
        raise TypeError(f"layer_class must be TuckerConv2d or CPConv2d, got {layer_class!r}")
    tucker = issubclass(layer_class, TuckerConv2d)
    allowed = ("calibration", "method", "ranks") if tucker else ("calibration",)
    allowed += ("max_seconds", "n_iter_max", "tol", "seed", "progress")
    criterion = _check_criterion(criterion, allowed=allowed)
    criterion["calibration"] = _calibration(criterion.get("calibration"), 4)
    geometry = dict(
        stride=tuple(conv.stride), padding=conv_padding(conv), dilation=tuple(conv.dilation)
    )
    bias = None if conv.bias is None else to_numpy(conv.bias)
    lrk_class = getattr(lrkernels, layer_class.kind)
    layer = lrk_class.from_dense(
        to_numpy(conv.weight), bias, layout="NCHW", **geometry, **criterion
    )
    module = layer_class.from_layer(layer)
    return module.to(conv.weight.device, conv.weight.dtype)


def batchnorm_affine(bn):
    """(scale, shift) of an eval-mode BatchNorm: bn(y) = y * scale + shift, per channel."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"expected a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
    return scale, shift


def fold_batchnorm(module, bn):
    """Fold ``bn`` (its running statistics, as in eval mode) into ``module``'s output side: the
    last factor (U for LowRankLinear) is scaled per output channel and the bias shifted (a bias
    is added if the module had none). In place; returns ``module``."""
    if not isinstance(module, FactorizedModule):
        raise TypeError(
            f"fold_batchnorm needs an lrkernels.torch module, got {type(module).__name__}"
        )
    out = getattr(module, "out_features", None) or module.out_channels
    if bn.num_features != out:
        raise ValueError(f"BatchNorm has {bn.num_features} features, the module {out} outputs")
    scale, shift = batchnorm_affine(bn)
    last = getattr(module, module.output_factor)
    with torch.no_grad():
        bias = module.bias.double() if module.bias is not None else torch.zeros_like(scale)
        rows = scale.reshape(-1, *([1] * (last.ndim - 1)))
        last.copy_((last.double() * rows).to(last.dtype))
        new_bias = (bias * scale + shift).to(last.dtype)
        if module.bias is None:
            module.bias = nn.Parameter(new_bias.to(last.device))
        else:
            module.bias.copy_(new_bias)
    module.refresh()
    return module


def _one_criterion(where, **given):
    named = [k for k, v in given.items() if v is not None and v is not False]
    if len(named) != 1:
        options = ", ".join(f"{k}=" if k != "vbmf" else "vbmf=True" for k in given)
        raise ValueError(f"{where}: give exactly one of {options}; got {named or 'none'}")
    return named[0]


def _sequences(calibration, batch_first, input_size, where):
    """Calibration input sequences (a tensor / array or a list of them; (seq, batch, in), or
    (batch, seq, in) when batch_first, or (seq, in)) -> a list of float64 (seq, batch, in)
    tensors."""
    if calibration is None:
        return None
    single = isinstance(calibration, (torch.Tensor, np.ndarray))
    items = [calibration] if single else list(calibration)
    if not items:
        raise ValueError(f"{where}: calibration is empty: give at least one input sequence")
    seqs = []
    for c in items:
        t = torch.from_numpy(to_numpy(c))
        if t.ndim == 2:
            t = t.unsqueeze(1)
        elif t.ndim == 3 and batch_first:
            t = t.transpose(0, 1)
        if t.ndim != 3 or t.shape[-1] != input_size or t.shape[0] == 0:
            raise ValueError(
                f"{where}: calibration sequences must be (seq, batch, {input_size}) "
                f"{'(batch first) ' if batch_first else ''}or (seq, {input_size}) with seq > 0, "
                f"got {tuple(np.shape(c))}"
            )
        seqs.append(t)
    return seqs


def factorize_rnn(
    rnn,
    *,
    layer_class=None,
    rank=None,
    ranks=None,
    energy=None,
    ratio=None,
    vbmf=False,
    calibration=None,
):
    """LowRankLSTM / LowRankGRU of an nn.LSTM / nn.GRU: every layer/direction's W_ih and W_hh by
    ``lrkernels.decompose.linear_factors`` (the machinery of ``LowRankLinear.from_dense``) under
    one criterion. rank (or ranks, the same): an int or (r_ih, r_hh), None in the pair keeping
    that matrix dense; a rank above a matrix's bound min(rows, cols) is lowered to it. energy /
    ratio / vbmf=True: per matrix. calibration: input sequences; the inputs of layer 0 fit its
    W_ih, the dense model's own layer outputs (run layer by layer, zero initial state) fit the
    later layers' W_ih and every W_hh (the hidden states h_{t-1} that multiply it). On the
    module's device and dtype; ``rank_choice`` holds the per-matrix choices."""
    from .recurrent import LowRankGRU, LowRankLSTM

    if not isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise TypeError(f"from_lstm/from_gru need an nn.LSTM or nn.GRU, got {type(rnn).__name__}")
    reason = why_not_factorizable(rnn)
    if reason:
        raise ValueError(f"cannot factorize this {type(rnn).__name__}: {reason}")
    mode = "LSTM" if isinstance(rnn, nn.LSTM) else "GRU"
    if layer_class is None:
        layer_class = LowRankLSTM if mode == "LSTM" else LowRankGRU
    if layer_class.mode != mode:
        raise TypeError(f"a {type(rnn).__name__} becomes a LowRank{mode}, not {layer_class}")
    where = f"LowRank{mode}.from_{mode.lower()}"
    if rank is not None and ranks is not None:
        raise ValueError(f"{where}: rank= and ranks= are the same criterion; give one")
    rank = ranks if ranks is not None else rank
    which = _one_criterion(where, rank=rank, energy=energy, ratio=ratio, vbmf=vbmf)
    if which == "rank":
        from .recurrent import _rank_pair

        rank_pair = _rank_pair(rank)
    D = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    dense = layer_class(
        rnn.input_size,
        H,
        rnn.num_layers,
        rnn.bias,
        rnn.batch_first,
        0.0,
        rnn.bidirectional,
        rank=None,
    )
    with torch.no_grad():  # float64 copies of the exact weights, for the hidden states
        for name, p in dense.named_parameters():
            p.data = rnn.get_parameter(name).detach().to("cpu", torch.float64)
    rows = [{"ih": [], "hh": []} for _ in range(rnn.num_layers * D)]
    seqs = _sequences(calibration, rnn.batch_first, rnn.input_size, where)
    if seqs is not None:
        with torch.no_grad():
            for xs in seqs:
                for k, (inp, outs) in enumerate(dense._layer_outputs(xs)):
                    for d, o in enumerate(outs):
                        r = rows[k * D + d]
                        r["ih"].append(inp.reshape(-1, inp.shape[-1]).numpy())
                        prev = o[:-1] if d == 0 else o[1:]  # h_{t-1}, in processing order
                        if prev.shape[0]:
                            r["hh"].append(prev.reshape(-1, H).numpy())
    factors, chosen, reasons, details = [], [], [], {}
    for index in range(rnn.num_layers * D):
        k, d = divmod(index, D)
        sfx = f"l{k}" + ("_reverse" if d else "")
        W_ih, W_hh = (w.detach().numpy() for w in dense.dense_weights(index))
        pair, fs = [], []
        for slot, (tag, W) in enumerate((("ih", W_ih), ("hh", W_hh))):
            name = f"weight_{tag}_{sfx}"
            X = np.concatenate(rows[index][tag]) if rows[index][tag] else None
            if which == "rank":
                r = rank_pair[slot]
                if r is None:
                    pair.append(None)
                    fs.append(W)
                    reasons.append(f"{name}: dense (rank None)")
                    continue
                crit = {"rank": min(r, min(W.shape))}
            else:
                crit = {which: energy if which == "energy" else ratio if which == "ratio" else True}
            U, V, choice = lrkernels.decompose.linear_factors(W, calibration=X, **crit)
            pair.append(U.shape[1])
            fs.append((U, V))
            reasons.append(f"{name}: rank {U.shape[1]} ({choice.reason})")
            details[name] = choice
        chosen.append(tuple(pair))
        factors.append(fs)
    module = layer_class(
        rnn.input_size,
        H,
        rnn.num_layers,
        rnn.bias,
        rnn.batch_first,
        rnn.dropout,
        rnn.bidirectional,
        rank=chosen,
    )
    with torch.no_grad():
        for index, fs in enumerate(factors):
            entry = module._layout[index]
            for tag, f in zip(("ih", "hh"), fs):
                for n, t in zip(entry[tag], f if isinstance(f, tuple) else (f,)):
                    getattr(module, n).copy_(torch.from_numpy(np.asarray(t)))
            for n in entry["bias"] or ():
                getattr(module, n).copy_(rnn.get_parameter(n).detach())
    module.rank_choice = lrkernels.rank.RankChoice(chosen, "; ".join(reasons), details)
    ref = rnn.get_parameter("weight_ih_l0")
    return module.to(ref.device, ref.dtype)


def factorize_embedding(
    embedding, *, layer_class=None, rank=None, energy=None, ratio=None, vbmf=False, calibration=None
):
    """LowRankEmbedding of an nn.Embedding: table ~ A @ B with A = table @ B^T and B the top right
    singular vectors of the table (rows weighted by sqrt(count + 1) of their indices in
    ``calibration``, a tensor / array / list of index tensors, when given: frequent rows are fitted
    best, unseen ones still count). One criterion: rank= (lowered to min(num, dim)), energy=,
    ratio=, vbmf=True (as ``lrkernels.rank``, on the weighted table). The padding_idx row is zero
    (torch's semantics of the lookup: that output row is zero and gets no gradient)."""
    from .embedding import LowRankEmbedding

    if not isinstance(embedding, nn.Embedding):
        raise TypeError(f"from_embedding needs an nn.Embedding, got {type(embedding).__name__}")
    reason = why_not_factorizable(embedding)
    if reason:
        raise ValueError(f"cannot factorize this nn.Embedding: {reason}")
    layer_class = layer_class or LowRankEmbedding
    where = "LowRankEmbedding.from_embedding"
    which = _one_criterion(where, rank=rank, energy=energy, ratio=ratio, vbmf=vbmf)
    T = to_numpy(embedding.weight)
    num, dim = T.shape
    idx = None
    if calibration is not None:
        single = isinstance(calibration, (torch.Tensor, np.ndarray))
        items = [calibration] if single else list(calibration)
        idx = [to_numpy(c, np.int64).ravel() for c in items]
        idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    if which == "rank":
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"{where}: rank must be a positive int, got {rank!r}")
        rank = min(rank, num, dim)
    criterion = {"rank": rank, "energy": energy, "ratio": ratio, "vbmf": vbmf}[which]
    try:  # one implementation of the (frequency-weighted) fit: the core's from_dense
        layer = lrkernels.LowRankEmbedding.from_dense(
            T, **{which: criterion}, calibration=idx, padding_idx=embedding.padding_idx
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    choice, pad = layer.rank_choice, embedding.padding_idx
    A, B = np.array(layer.A), np.array(layer.B)
    module = layer_class.from_factors(
        torch.from_numpy(A.astype(np.float32)),
        torch.from_numpy(B.astype(np.float32)),
        padding_idx=pad,
    )
    module.rank_choice = choice
    return module.to(embedding.weight.device, embedding.weight.dtype)
