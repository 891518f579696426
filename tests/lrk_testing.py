"""Shared helpers for the lrkernels tests: float32 error bounds, the layer model (a layer of any
kind with its factors, float64 oracle and bound), sub-case collection, threads.

Imported by the test modules as a plain module (pytest puts tests/ on sys.path). The shapes,
geometries and input layouts the tests sweep are in layer_cases.py and layer_sweeps.py; the
layer kinds come from the table in layer_table.py.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

import lrkernels
from layer_table import LAYOUTS, N_RANKS, SPEC  # noqa: F401 - LAYOUTS re-exported
from lrkernels import reference

EPS32 = float(np.finfo(np.float32).eps)
# Products of tiny numbers can land in float32 subnormals, where the rounding error is absolute.
SUBNORMAL32 = float(np.finfo(np.float32).smallest_subnormal)
# Safety factor on top of the classic n * u bound (u = eps / 2): generous enough for any summation
# order and FMA use, still orders of magnitude below what a wrong kernel produces.
BOUND_FACTOR = 8.0

CANONICAL_ISAS = ("scalar", "neon", "avx2", "avx512")


def _abs64(a) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.float64))


def lowrank_bound(x, U, V, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = U (V x) + b computed in float32.

    Stage 1 (t = V x, K terms) errs by <= K u |V||x|; stage 2 (y = U t + b, R + 1 terms) by
    <= (R + 1) u (|U||t| + |b|) plus the propagated stage-1 error |U| K u |V||x|; the cast of
    float64 inputs/weights to float32 adds <= u per factor. All of it is covered by
    8 eps (K + R + 2) (|U| (|V| |x|) + |b|).
    """
    aV = _abs64(V)
    R, K = aV.shape
    mag = (_abs64(x) @ aV.T) @ _abs64(U).T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + R + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def linear_bound(x, W, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = W x + b in float32: 8 eps (K+2) (|W||x| + |b|)."""
    aW = _abs64(W)
    K = aW.shape[1]
    mag = _abs64(x) @ aW.T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def pair(value) -> tuple:
    """An int or a pair -> (a, b)."""
    return (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)


def conv_output_hw(hw, kernel_size, stride=1, padding=0, dilation=1) -> tuple:
    """(Ho, Wo) by the formula Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (may be <= 0)."""
    out = []
    for size, k, s, p, d in zip(hw, *(pair(v) for v in (kernel_size, stride, padding, dilation))):
        span = d * (k - 1) + 1
        out.append((size + 2 * p - span) // s + 1 if size + 2 * p >= span else 0)
    return tuple(out)


def image_shape(batch, channels, hw, layout) -> tuple:
    h, w = hw
    return (batch, channels, h, w) if layout == "NCHW" else (batch, h, w, channels)


def conv2d_bound(x, weight, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"):
    """Elementwise bound on |y - y_exact| for a dense convolution computed in float32.

    Every output is a dot product of Cin kh kw terms plus the bias, so, as for `linear_bound`:
    8 eps (Cin kh kw + 2) (|W| * |x| + |b|), with * the same convolution (zero padding included).
    """
    aw = _abs64(weight)
    ab = None if bias is None else _abs64(bias)
    mag = reference.conv2d(_abs64(x), aw, ab, stride, padding, dilation, layout)
    _, cin, kh, kw = aw.shape
    n = cin * kh * kw + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def tucker_conv2d_bound(
    x, first, core, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """Elementwise bound on |y - y_exact| for the Tucker-2 convolution computed in float32.

    The magnitude chains the absolute values through the three stages, |last| * (|core| *
    (|first| * |x|)) + |b|. Stage by stage the rounding errors add up to (Cin + R_in kh kw +
    R_out + 1) u times it; the terms also include Cin kh kw + R_in, the count of a kernel that
    merges `first` into the core convolution (a Cin kh kw dot product with weights that carry
    an R_in-term rounding of their own), so either order of evaluation is covered:
    8 eps (Cin kh kw + R_in + R_in kh kw + R_out + 2) (magnitude).
    """
    af, ac, al = _abs64(first), _abs64(core), _abs64(last)
    ab = None if bias is None else _abs64(bias)
    mag = reference.tucker_conv2d(_abs64(x), af, ac, al, ab, stride, padding, dilation, layout)
    r_in, cin = af.shape
    r_out, _, kh, kw = ac.shape
    n = cin * kh * kw + r_in + r_in * kh * kw + r_out + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def cp_merged_weight(first, vertical, horizontal, last) -> np.ndarray:
    """The dense float64 (Cout, Cin, kh, kw) weight of a CP convolution:
    W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c]."""
    f, v, h, la = (np.asarray(a, dtype=np.float64) for a in (first, vertical, horizontal, last))
    return np.einsum("or,ry,rx,rc->ocyx", la, v, h, f, optimize=True)


def cp_conv2d_merged(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """The CP convolution as one dense float64 convolution with the merged weight."""
    weight = cp_merged_weight(first, vertical, horizontal, last)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    return reference.conv2d(x, weight, b, stride, padding, dilation, layout)


def cp_conv2d_bound(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """Elementwise bound on |y - y_exact| for the CP convolution computed in float32.

    The magnitude is the convolution of |x| with the merged weight of the absolute factors,
    sum_r |last||vertical||horizontal||first| (the same as chaining |.| through the four stages),
    plus |b|. Stage by stage the rounding errors add up to (Cin + kh + kw + R + 1) u times it; a
    kernel that merges the factors does a Cin kh kw dot product whose weights carry an R-term sum
    of 3-fold products (R + 3 roundings). The terms cover both orders of evaluation:
    8 eps (Cin kh kw + kh + kw + 2 R + 3 + 2) (magnitude).
    """
    af, av, ah, al = (_abs64(a) for a in (first, vertical, horizontal, last))
    ab = None if bias is None else _abs64(bias)
    mag = reference.conv2d(
        _abs64(x), cp_merged_weight(af, av, ah, al), ab, stride, padding, dilation, layout
    )
    rank, cin = af.shape
    kh, kw = av.shape[1], ah.shape[1]
    n = cin * kh * kw + kh + kw + 2 * rank + 3 + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def assert_within_bound(y, ref, bound, case: str = "") -> None:
    """|y - ref| <= bound elementwise (NaN in y is a violation); the message names the case."""
    y64 = np.asarray(y, dtype=np.float64)
    assert y64.shape == ref.shape, f"{case}: shape {y64.shape}, expected {ref.shape}"
    if y64.size == 0:
        return
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(y64 - ref)
        ok = err <= bound
        if ok.all():
            return
        bad = ~ok
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        ratio = np.where(np.isnan(err), np.inf, err / bound)
        worst = float(np.max(ratio))
    raise AssertionError(
        f"{case}: {int(bad.sum())} of {bad.size} outputs outside the float32 error bound "
        f"(worst |err|/bound = {worst:.3g}); first at index {first}: got {y64[first]!r}, "
        f"expected {ref[first]!r}, bound {bound[first]:.3g}"
    )


def check_output_array(y, expected_shape, case: str = "") -> None:
    """A layer result: a fresh, writeable, C-contiguous float32 ndarray of the expected shape."""
    assert isinstance(y, np.ndarray), f"{case}: result is {type(y).__name__}, not ndarray"
    assert y.dtype == np.float32, f"{case}: result dtype {y.dtype}"
    assert y.shape == tuple(expected_shape), (
        f"{case}: result shape {y.shape}, expected {expected_shape}"
    )
    assert y.flags.c_contiguous, f"{case}: result is not C-contiguous"
    assert y.flags.writeable, f"{case}: result is read-only"


def raises(exc, *texts):
    """pytest.raises(exc) with a message that holds every text (case-insensitive, any order):
    the essentials (argument names, shapes, dtypes), not the wording."""
    return pytest.raises(exc, match="(?is)" + "".join(f"(?=.*{re.escape(t)})" for t in texts))


def window_counts(rows, cols, per_pixel, biases, layout="NCHW"):
    """The exact output of a convolution with all-ones factors on an all-ones image: per output
    channel o, biases[o] + per_pixel * rows[i] * cols[j], where rows and cols count the kernel
    taps that land inside the image."""
    counts = per_pixel * np.outer(rows, cols).astype(np.float32)
    y = np.stack([counts + b for b in biases])[None]
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def check_padded_window_sums(layer, isa, per_pixel, layout):
    """The known values of a 3x3 convolution with all-ones factors, bias (0.5, -1.0) and padding
    (1, 2), run by `isa` on an all-ones 3x4 image of the layer's channels: exactly window_counts
    with `per_pixel` per tap inside the image (outputs beyond the image get the bias only)."""
    y = layer(np.ones(image_shape(1, layer.in_channels, (3, 4), layout), np.float32))
    assert lrkernels.last_used_isa() == isa
    expected = window_counts([2, 3, 2], [1, 2, 3, 3, 2, 1], per_pixel, [0.5, -1.0], layout)
    check_output_array(y, expected.shape)
    np.testing.assert_array_equal(y, expected)


# --------------------------------------------------------------------------------------------
# A layer of any kind with its factors, the float64 oracle and the error bound
# --------------------------------------------------------------------------------------------

BOUNDS = {
    "LowRankLinear": lowrank_bound,
    "Linear": linear_bound,
    "Conv2d": conv2d_bound,
    "TuckerConv2d": tucker_conv2d_bound,
    "CPConv2d": cp_conv2d_bound,
}
CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "layout": "NCHW"}


@dataclass
class Model:
    """A layer kind (a spec of layer_table) with its factors, bias and geometry.

    `layer` is built on first use, so the factors may be edited before (test_numerics puts NaN in
    them); `build()` makes a new layer from the factors as they are now. The reference is the
    table's float64 oracle, the bound the kind's float32 error bound (BOUNDS).
    """

    kind: str
    factors: tuple
    bias: object
    geometry: dict  # stride, padding, dilation, layout for a convolution; {} for a linear layer
    in_dim: int  # in_features or in_channels
    out_dim: int
    kernel: tuple = (1, 1)
    activation: object = None  # the fused output clamp: None, "relu", "relu6" or (min, max)
    _layer: object = field(default=None, repr=False)

    @property
    def spec(self):
        return SPEC[self.kind]

    @property
    def layer(self):
        if self._layer is None:
            self._layer = self.build()
        return self._layer

    def build(self):
        return self.spec.cls(*self.factors, self.bias, **self.geometry, activation=self.activation)

    @property
    def weights(self) -> dict:
        return dict(zip(self.spec.factor_names, self.factors), bias=self.bias)

    def describe(self) -> str:
        shapes = ", ".join(f"{n}{np.shape(a)}" for n, a in self.weights.items() if a is not None)
        act = "" if self.activation is None else f", activation={self.activation!r}"
        return f"{self.kind}({shapes}, bias={self.bias is not None}, {self.geometry}{act})"

    def reference(self, x):
        """The float64 oracle, clamped by the activation (a clamp never widens the error, so the
        unclamped bound still holds)."""
        return self.spec.reference(
            x, *self.factors, self.bias, **self.geometry, activation=self.activation
        )

    def bound(self, x):
        return BOUNDS[self.kind](x, *self.factors, self.bias, **self.geometry)

    def input_shape(self, batch, hw=None) -> tuple:
        """(in,) for batch None, (batch, in) for a linear layer; an image in the layout."""
        if not self.spec.conv:
            return (self.in_dim,) if batch is None else (batch, self.in_dim)
        return image_shape(batch, self.in_dim, hw, self.geometry["layout"])

    def make_input(self, rng, batch, hw=None, dtype=np.float32):
        return rand(rng, self.input_shape(batch, hw), dtype)

    def output_shape(self, x_shape) -> tuple:
        if not self.spec.conv:
            return tuple(x_shape[:-1]) + (self.out_dim,)
        g = self.geometry
        n, h, w = (x_shape[0], *x_shape[2:]) if g["layout"] == "NCHW" else x_shape[:3]
        hw = conv_output_hw((h, w), self.kernel, g["stride"], g["padding"], g["dilation"])
        return image_shape(n, self.out_dim, hw, g["layout"])

    def check(self, x, isa: str, case: str = ""):
        """Call the layer on x; check the ISA that ran, the result array and the error bound."""
        case = f"{case} {self.describe()} isa={isa} x.shape={np.shape(x)}".strip()
        y = self.layer(x)
        used = lrkernels.last_used_isa()
        assert used == isa, f"{case}: last_used_isa() == {used!r} after the call, expected {isa!r}"
        check_output_array(y, self.output_shape(np.shape(x)), case)
        if isinstance(x, np.ndarray):
            assert not np.shares_memory(y, x), f"{case}: result aliases the input"
        assert_within_bound(y, self.reference(x), self.bound(x), case)
        return y


def rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def make_model(
    rng,
    kind,
    in_dim,
    out_dim,
    ranks=(3, 5),
    kernel=(1, 1),
    *,
    bias=True,
    dtype=np.float32,
    activation=None,
    **geometry,
) -> Model:
    """Random standard-normal factors of a `kind` layer; `ranks` is a pool of which the kind
    takes what it needs (none for a dense layer, the first for LowRankLinear and CP, both for
    Tucker); a convolution's geometry defaults to the constructor's."""
    spec = SPEC[kind]
    kernel = pair(kernel)
    shapes = spec.factor_shapes(in_dim, out_dim, tuple(ranks)[: N_RANKS[kind]], kernel)
    factors = tuple(rand(rng, s, dtype) for s in shapes)
    b = rand(rng, (out_dim,), dtype) if bias else None
    geometry = {**CONV_DEFAULTS, **geometry} if spec.conv else {}
    return Model(kind, factors, b, geometry, in_dim, out_dim, kernel, activation)


class Cases:
    """Runs many sub-cases inside one test and reports every failing one by name at the end."""

    def __init__(self, limit: int = 25):
        self.limit = limit
        self.count = 0
        self.failures: list[str] = []

    @contextlib.contextmanager
    def case(self, name: str):
        self.count += 1
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - collect and report all failing cases
            self.failures.append(f"[{name}] {type(exc).__name__}: {exc}")

    def check(self) -> None:
        if self.failures:
            shown = "\n".join(self.failures[: self.limit])
            more = len(self.failures) - self.limit
            tail = f"\n... and {more} more" if more > 0 else ""
            pytest.fail(
                f"{len(self.failures)} of {self.count} cases failed:\n{shown}{tail}", pytrace=False
            )


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


def run_in_thread(fn):
    """fn() in a fresh thread (an empty per-thread scratch); its result, or its exception raised."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "worker thread hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


def run_concurrently(calls) -> list:
    """calls[i]() in len(calls) threads released together by a barrier; the errors, by thread."""
    barrier = threading.Barrier(len(calls))
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


# --------------------------------------------------------------------------------------------
# Numerical edge cases (test_numerics.py, test_subnormals.py)
# --------------------------------------------------------------------------------------------


def make_spec(
    kind, rng, *, cin=5, cout=4, r1=3, r2=2, kernel=3, geometry=None, bias=True, scales=None
) -> Model:
    """Random float32 factors (standard normal, times scales[name] if given) for a layer; the
    factors may be edited before `build()`."""
    conv = SPEC[kind].conv
    m = make_model(
        rng,
        kind,
        cin,
        cout,
        (r1, r2),
        kernel if conv else 1,
        bias=bias,
        **((geometry or {}) if conv else {}),
    )
    for name, scale in (scales or {}).items():
        if m.weights[name] is not None:
            m.weights[name][...] *= np.float32(scale)
    return m


def reference_of(spec, x):
    with np.errstate(all="ignore"):  # NaN and Inf are the point here
        return spec.reference(x)


def _finite_or_zero(a):
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def finite_bound(spec, x):
    """The float32 error bound, with non-finite values taken as 0: exact wherever the reference
    is finite (no non-finite value reached that output)."""
    clean = [_finite_or_zero(a) for a in spec.factors]
    return BOUNDS[spec.kind](
        _finite_or_zero(x), *clean, _finite_or_zero(spec.bias), **spec.geometry
    )


def call(layer, x, isa):
    """layer(x) in a worker thread with a timeout (a hang fails); checks the ISA that ran."""

    def body():
        y = layer(x)
        return y, lrkernels.last_used_isa()

    y, used = run_in_thread(body)
    assert used == isa, f"last_used_isa() == {used!r}, expected {isa!r}"
    return y


# Winograd F(2x2, 3x3) with every matrix and operand replaced by its absolute value: the magnitude
# that bounds the rounding error of the transformed-domain evaluation (y = A^T [sum_c (G g G^T) .
# (B^T d B)] A). Its rounding adds at most a constant factor of eps per term over the direct
# evaluation's |W| * |x|, as the transforms' coefficients are small (|B^T| rows sum to <= 2,
# |G| rows to <= 1.5, |A^T| rows to <= 3).
_WINO_AT = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=np.float64)
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 1]], dtype=np.float64)
_WINO_BT = np.array(
    [[1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float64
)  # |B^T|


def winograd_magnitude(x_nchw, weight, padding) -> np.ndarray:
    """|A^T| (sum_c (|G| |g| |G^T|) . (|B^T| |d| |B|)) |A| for a 3x3 stride-1 convolution of NCHW
    x (float64 magnitudes) with weight (Cout, Cin, 3, 3); shape (N, Cout, Ho, Wo)."""
    x = _abs64(x_nchw)
    n, c, h, w = x.shape
    ph, pw = pair(padding)
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, ph : ph + h, pw : pw + w] = x
    d = np.lib.stride_tricks.sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    v = np.einsum("ia,nctuab,jb->nctuij", _WINO_BT, d, _WINO_BT, optimize=True)
    u = np.einsum("ia,ocab,jb->ocij", _WINO_G, _abs64(weight), _WINO_G, optimize=True)
    m = np.einsum("ocij,nctuij->notuij", u, v, optimize=True)
    y = np.einsum("ia,notuab,jb->notuij", _WINO_AT, m, _WINO_AT, optimize=True)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, -1, 2 * th, 2 * tw)
    return y[:, :, :ho, :wo]


def winograd_conv2d_bound(x, weight, bias=None, padding=0, layout="NCHW") -> np.ndarray:
    """Elementwise bound on |y - y_exact| for a 3x3 stride-1 convolution by F(2x2, 3x3) in float32:
    8 eps (Cin + 16) (winograd_magnitude + |b|): Cin products summed per transformed point, at
    most 16 additions in the transforms, one rounding of the transformed weights."""
    xn = np.asarray(x) if layout == "NCHW" else np.asarray(x).transpose(0, 3, 1, 2)
    mag = winograd_magnitude(xn, weight, padding)
    if bias is not None:
        mag = mag + _abs64(bias)[None, :, None, None]
    bound = BOUND_FACTOR * (weight.shape[1] + 16) * (EPS32 * mag + SUBNORMAL32)
    return bound if layout == "NCHW" else bound.transpose(0, 2, 3, 1)


def winograd_tucker_conv2d_bound(x, first, core, last, bias=None, padding=0, layout="NCHW"):
    """The same for TuckerConv2d with a Winograd core: the magnitudes chained through |first|,
    the Winograd magnitude of |core|, |last| and |b|; 8 eps (Cin + R_in + 16 + R_out + 2) times
    that."""
    xn = np.asarray(x) if layout == "NCHW" else np.asarray(x).transpose(0, 3, 1, 2)
    t = np.einsum("rc,nchw->nrhw", _abs64(first), _abs64(xn))
    mag = np.einsum("or,nrhw->nohw", _abs64(last), winograd_magnitude(t, core, padding))
    if bias is not None:
        mag = mag + _abs64(bias)[None, :, None, None]
    n = first.shape[1] + first.shape[0] + 16 + last.shape[1] + 2
    bound = BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)
    return bound if layout == "NCHW" else bound.transpose(0, 2, 3, 1)
