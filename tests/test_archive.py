"""The lrkernels archive (lrkernels.archive): layers saved without pickle and loaded without torch.

Round trips of every kind of the layer table (both layouts, with and without bias, non-default
geometry) give layers that compute bit-identical outputs; metadata and extra arrays come back with
their dtypes; the file is a plain uncompressed zip of .npy entries that np.load reads with
allow_pickle=False; every malformed file is a ValueError naming the path, never an unpickling.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import lrkernels
from layer_table import KIND_LAYOUTS, SPEC, kind_layout_id
from lrk_testing import make_model
from lrkernels import archive
from lrkernels.archive import (
    HEADER_KEY,
    build_layer,
    describe_layer,
    load_layers,
    read_archive,
    save_layers,
    write_archive,
)

CONV_GEOMETRY = dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))


def _model(rng, kind, layout, bias):
    geometry = {**CONV_GEOMETRY, "layout": layout} if SPEC[kind].conv else {}
    kernel = (3, 2) if SPEC[kind].conv else (1, 1)
    return make_model(rng, kind, 7, 6, (3, 5), kernel, bias=bias, **geometry)


def _input(rng, model):
    return model.make_input(rng, 3, (9, 8) if model.spec.conv else None)


def _assert_same_layer(a, b):
    assert type(a) is type(b)
    spec = SPEC[type(a).__name__]
    for name, fa, fb in zip(spec.factor_names, spec.factors(a), spec.factors(b)):
        assert fa.dtype == fb.dtype and np.array_equal(fa, fb), name
    assert (a.bias is None) == (b.bias is None)
    if a.bias is not None:
        assert np.array_equal(a.bias, b.bias)
    assert spec.geometry(a) == spec.geometry(b)


def _path_in(message_path):
    return re.escape(os.fspath(message_path))


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind,layout", KIND_LAYOUTS, ids=kind_layout_id)
def test_describe_build_round_trip(rng, kind, layout, bias):
    model = _model(rng, kind, layout, bias)
    layer = model.layer
    description, arrays = describe_layer(layer)
    assert description["kind"] == kind
    assert description["factors"] == list(SPEC[kind].factor_names)
    assert description["has_bias"] is bias
    assert set(arrays) == set(SPEC[kind].factor_names) | ({"bias"} if bias else set())
    assert all(a.dtype == np.float32 for a in arrays.values())
    if SPEC[kind].conv:
        assert description["keywords"] == {
            "stride": [2, 1],
            "padding": [1, 2],
            "dilation": [2, 1],
            "layout": layout,
        }
        assert description["kernel_size"] == [3, 2]
    json.dumps(description)  # JSON-able
    rebuilt = build_layer(json.loads(json.dumps(description)), arrays)
    _assert_same_layer(layer, rebuilt)
    x = _input(rng, model)
    np.testing.assert_array_equal(rebuilt(x), layer(x))


@pytest.mark.parametrize("kind,layout", KIND_LAYOUTS, ids=kind_layout_id)
def test_save_load_bit_identical(tmp_path, rng, kind, layout):
    layers = {
        "features.0": _model(rng, kind, layout, True).layer,
        "features.3/b": _model(rng, kind, layout, False).layer,
    }
    path = tmp_path / "model.lrk"
    save_layers(layers, path)
    loaded = load_layers(path)
    assert list(loaded) == list(layers)
    for name, layer in layers.items():
        _assert_same_layer(layer, loaded[name])
        model = _model(rng, kind, layout, True)  # only its input shape is used
        x = _input(rng, model)
        np.testing.assert_array_equal(loaded[name](x), layer(x))


def test_every_kind_in_one_file_in_order(tmp_path, rng):
    layers = {}
    for i, (kind, layout) in enumerate(KIND_LAYOUTS):
        layers[f"z{i}.{kind}"] = _model(rng, kind, layout, i % 2 == 0).layer
    names = list(reversed(list(layers)))  # file order is the given order, not sorted
    layers = {n: layers[n] for n in names}
    save_layers(layers, str(tmp_path / "all.npz"))
    loaded = load_layers(str(tmp_path / "all.npz"))
    assert list(loaded) == names
    for name in names:
        _assert_same_layer(layers[name], loaded[name])


def test_pairs_pathlib_and_file_objects(tmp_path, rng):
    layer = _model(rng, "LowRankLinear", None, True).layer
    save_layers([("a", layer)], pathlib.Path(tmp_path / "p.npz"))
    _assert_same_layer(layer, load_layers(pathlib.Path(tmp_path / "p.npz"))["a"])
    buf = io.BytesIO()
    save_layers({"a": layer}, buf, metadata={"k": 1})
    buf.seek(0)
    _assert_same_layer(layer, load_layers(buf)["a"])
    buf.seek(0)
    assert read_archive(buf)[0]["metadata"] == {"k": 1}


def test_subclass_is_saved_as_its_kind(tmp_path, rng):
    class MyLinear(lrkernels.LowRankLinear):
        pass

    model = _model(rng, "LowRankLinear", None, True)
    layer = MyLinear(*model.factors, model.bias)
    save_layers({"fc": layer}, tmp_path / "s.npz")
    loaded = load_layers(tmp_path / "s.npz")["fc"]
    assert type(loaded) is lrkernels.LowRankLinear
    x = _input(rng, model)
    np.testing.assert_array_equal(loaded(x), layer(x))


def test_metadata_and_extra_arrays_round_trip(tmp_path, rng):
    extra = {
        "state/bn.num_batches_tracked": np.array(17, np.int64),
        "state/fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "state/half": rng.standard_normal(5).astype(np.float16),
        "state/double": rng.standard_normal((2, 2)),
        "state/mask": np.array([True, False, True]),
        "state/empty": np.zeros((0, 3), np.float32),
        "state/fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "state/big-endian": np.arange(4, dtype=">f4"),
        "state/complex": np.array([1 + 2j], np.complex64),
        "file": np.arange(3, dtype=np.uint8),  # np.savez keyword names are plain names here
        "allow_pickle": np.arange(2, dtype=np.int16),
        "état/ü": np.arange(2, dtype=np.int32),
    }
    for dt in (np.int8, np.int16, np.int32, np.uint16, np.uint32, np.uint64):
        extra[f"ints/{np.dtype(dt).name}"] = np.array([0, 1, np.iinfo(dt).max], dt)
    metadata = {"model": "resnet18", "modules": {"fc": {"rank": 3, "energy": 0.9}}, "n": [1, 2]}
    layer = _model(rng, "TuckerConv2d", "NHWC", True).layer
    path = tmp_path / "m.npz"
    save_layers({"layer1.0.conv1": layer}, path, metadata=metadata, extra_arrays=extra)
    header, arrays = read_archive(path)
    assert header["format"] == "lrkernels-archive" and header["version"] == 1
    assert header["metadata"] == metadata
    assert [e["name"] for e in header["layers"]] == ["layer1.0.conv1"]
    entry = header["layers"][0]
    assert entry["arrays"] == {
        n: f"layers/layer1.0.conv1/{n}" for n in ("first", "core", "last")
    } | {"bias": "layers/layer1.0.conv1/bias"}
    for name, a in extra.items():
        assert arrays[name].dtype == a.dtype, name
        assert arrays[name].shape == a.shape, name
        np.testing.assert_array_equal(arrays[name], a)
    assert set(arrays) == set(extra) | set(entry["arrays"].values())


def test_write_read_archive_low_level(tmp_path):
    path = tmp_path / "raw.npz"
    write_archive(path, {"note": "hi", "nested": {"a": [1, 2.5, None, True]}}, {"x/y": np.ones(2)})
    header, arrays = read_archive(path)
    assert header["note"] == "hi" and header["nested"] == {"a": [1, 2.5, None, True]}
    assert header["writer"] == f"lrkernels {lrkernels.__version__}"
    assert list(arrays) == ["x/y"]
    assert load_layers(path) == {}


def test_file_is_a_plain_zip_of_npy_without_pickle(tmp_path, rng):
    path = tmp_path / "plain.npz"
    save_layers(
        {"fc": _model(rng, "LowRankLinear", None, True).layer},
        path,
        extra_arrays={"state/n": np.array(1, np.int64)},
    )
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert all(i.filename.endswith(".npy") for i in infos)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert f"{HEADER_KEY}.npy" in zf.namelist()
    with np.load(path, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    assert all(a.dtype != object for a in loaded.values())
    header = json.loads(loaded[HEADER_KEY].tobytes().decode("utf-8"))
    assert header["format"] == "lrkernels-archive" and header["version"] == 1


@pytest.mark.parametrize("activation", ["relu", "relu6", (-1.0, 2.0), (None, 0.5)])
def test_activation_round_trips(rng, activation):
    model = _model(rng, "LowRankLinear", None, True)
    layer = lrkernels.LowRankLinear(*model.factors, model.bias, activation=activation)
    description, arrays = describe_layer(layer)
    json.dumps(description)
    assert "activation" in description["keywords"]
    back = build_layer(description, arrays)
    assert back.activation == layer.activation
    assert (back.output_min, back.output_max) == (layer.output_min, layer.output_max)
    x = 3 * rng.standard_normal((4, layer.in_features)).astype(np.float32)
    np.testing.assert_array_equal(back(x), layer(x))


@pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_SUBPROCESS")),
    reason="LRKERNELS_NO_SUBPROCESS is set (e.g. under qemu user emulation)",
)
def test_layers_without_torch(tmp_path):
    code = (
        "import sys, numpy as np, lrkernels\n"
        "layer = lrkernels.LowRankLinear(np.ones((3, 2)), np.ones((2, 4)))\n"
        f"lrkernels.save_layers({{'fc': layer}}, {str(tmp_path / 't.npz')!r})\n"
        f"lrkernels.load_layers({str(tmp_path / 't.npz')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


# --------------------------------------------------------------------------------------------
# malformed files: ValueError naming the path, never pickle
# --------------------------------------------------------------------------------------------


_UNPICKLED = []


def _mark_unpickled():
    _UNPICKLED.append(True)
    return "unpickled"


class _Payload:
    def __reduce__(self):
        return (_mark_unpickled, ())


def _raw_npz(path, header, **arrays):
    """An .npz written by numpy itself, with this header (a dict, or raw bytes) and arrays."""
    data = header if isinstance(header, bytes) else json.dumps(header).encode()
    np.savez(path, **{HEADER_KEY: np.frombuffer(data, np.uint8)}, **arrays)


def _valid_header():
    return {"format": "lrkernels-archive", "version": 1, "layers": []}


def _good_archive(path, rng):
    save_layers({"fc": _model(rng, "LowRankLinear", None, True).layer}, path)
    return path.read_bytes()


def _refused(path, *texts):
    with pytest.raises(ValueError, match=_path_in(path)) as info:
        read_archive(path)
    for text in texts:
        assert text in str(info.value), str(info.value)
    with pytest.raises(ValueError, match=_path_in(path)):
        load_layers(path)
    return str(info.value)


def test_object_array_is_refused_and_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    _raw_npz(path, _valid_header(), x=np.array([_Payload()], dtype=object))
    _refused(path, "object array")
    assert not _UNPICKLED


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, rng, fraction):
    data = _good_archive(tmp_path / "good.npz", rng)
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: int(len(data) * fraction)])
    _refused(path)


def test_random_bytes_and_flipped_bytes(tmp_path, rng):
    path = tmp_path / "random.npz"
    path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(path)
    path.write_bytes(b"PK\x03\x04" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    _refused(path)
    data = bytearray(_good_archive(tmp_path / "good.npz", rng))
    for i in range(0, len(data), max(1, len(data) // 40)):  # one flipped byte anywhere
        bad = bytearray(data)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            load_layers(path)  # a flip in the factor data can still be a valid file
        except ValueError as exc:
            assert os.fspath(path) in str(exc)


def test_plain_npy_and_pickle_files(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.ones(3))
    _refused(path, "single .npy")
    path = tmp_path / "pickle.pkl"
    import pickle

    path.write_bytes(pickle.dumps({"a": _Payload()}))
    _refused(path)
    assert not _UNPICKLED


def test_bad_headers(tmp_path):
    cases = {
        "no-header": None,
        "wrong-format": {"format": "something-else", "version": 1},
        "future": {"format": "lrkernels-archive", "version": 2, "writer": "lrkernels 9"},
        "version-str": {"format": "lrkernels-archive", "version": "1"},
        "not-object": [1, 2],
        "not-json": b"{not json",
        "not-utf8": b"\xff\xfe",
    }
    texts = {
        "no-header": "no header",
        "wrong-format": "something-else",
        "future": "newer lrkernels",
        "not-json": "JSON",
        "not-utf8": "UTF-8",
    }
    for name, header in cases.items():
        path = tmp_path / f"{name}.npz"
        if header is None:
            np.savez(path, x=np.ones(2))
        else:
            _raw_npz(path, header)
        _refused(path, *[texts[name]] if name in texts else [])


def test_bad_entries(tmp_path, rng):
    path = tmp_path / "strings.npz"
    _raw_npz(path, _valid_header(), s=np.array(["a", "b"]))
    _refused(path, "dtype")
    path = tmp_path / "not-npy.npz"
    _raw_npz(path, _valid_header())
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("readme.txt", b"hello")
    _refused(path, "readme.txt")
    # an .npy header claiming far more data than the entry holds (no huge allocation)
    path = tmp_path / "huge.npz"
    _raw_npz(path, _valid_header())
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }"
    header = header.ljust(117) + "\n"
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(
            "big.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
        )
    _refused(path, "big.npy")


def test_layer_entries_missing_or_wrong(tmp_path, rng):
    layer = _model(rng, "TuckerConv2d", "NCHW", True).layer
    description, arrays = describe_layer(layer)
    keys = {n: f"layers/t/{n}" for n in arrays}
    stored = {keys[n]: a for n, a in arrays.items()}

    def archive_with(entry, **drop):
        path = tmp_path / f"entry{len(list(tmp_path.iterdir()))}.npz"
        kept = {k: v for k, v in stored.items() if k not in drop.get("keys", ())}
        _raw_npz(path, {**_valid_header(), "layers": [entry]}, **kept)
        return path

    ok = archive_with({"name": "t", **description, "arrays": keys})
    _assert_same_layer(layer, load_layers(ok)["t"])
    for entry, drop, text in [
        ({"name": "t", **description, "arrays": keys}, {"keys": ["layers/t/core"]}, "core"),
        ({"name": "t", **description, "kind": "Dense9000", "arrays": keys}, {}, "Dense9000"),
        ({**description, "arrays": keys}, {}, "no name"),
        ({"name": "t", **description, "out_dim": 5, "arrays": keys}, {}, "shape"),
    ]:
        path = archive_with(entry, **drop)
        with pytest.raises(ValueError, match=_path_in(path)) as info:
            load_layers(path)
        assert text in str(info.value)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_archive(tmp_path / "nope.npz")


# --------------------------------------------------------------------------------------------
# bad arguments
# --------------------------------------------------------------------------------------------


def test_build_layer_errors(rng):
    description, arrays = describe_layer(_model(rng, "CPConv2d", "NHWC", True).layer)
    with pytest.raises(ValueError, match="Nope"):
        build_layer({**description, "kind": "Nope"}, arrays)
    with pytest.raises(ValueError, match="'vertical'"):
        build_layer(description, {k: v for k, v in arrays.items() if k != "vertical"})
    with pytest.raises(ValueError, match="'bias'"):
        build_layer(description, {k: v for k, v in arrays.items() if k != "bias"})
    with pytest.raises(ValueError, match="shape"):
        build_layer(description, {**arrays, "last": arrays["last"][:, :1]})
    with pytest.raises(ValueError, match="kernel_size|layout"):
        build_layer({**description, "keywords": {"layout": "NWHC"}}, arrays)
    with pytest.raises(TypeError):
        describe_layer(np.ones(3))


def test_save_layers_bad_arguments(tmp_path, rng):
    layer = _model(rng, "Linear", None, True).layer
    path = tmp_path / "bad.npz"
    with pytest.raises(TypeError, match="'b'"):
        save_layers({"a": layer, "b": object()}, path)
    with pytest.raises(TypeError, match="layer name"):
        save_layers({1: layer}, path)
    with pytest.raises(ValueError, match="empty"):
        save_layers({"": layer}, path)
    with pytest.raises(ValueError, match="duplicate"):
        save_layers([("a", layer), ("a", layer)], path)
    with pytest.raises(TypeError):
        save_layers(layer, path)
    with pytest.raises(TypeError, match="metadata"):
        save_layers({"a": layer}, path, metadata=[1])
    with pytest.raises(TypeError, match="JSON"):
        save_layers({"a": layer}, path, metadata={"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_layers({"a": layer}, path, extra_arrays={"layers/a/W": np.ones(1)})
    with pytest.raises(ValueError, match="reserved"):
        save_layers({"a": layer}, path, extra_arrays={HEADER_KEY: np.ones(1)})
    with pytest.raises(TypeError, match="dtype"):
        save_layers({"a": layer}, path, extra_arrays={"o": np.array([None], dtype=object)})
    with pytest.raises(TypeError, match="dtype"):
        save_layers({"a": layer}, path, extra_arrays={"s": np.array(["x"])})
    if np.dtype(np.longdouble).itemsize > 8:  # on armv7 longdouble is float64, which is fine
        with pytest.raises(TypeError, match="dtype"):
            save_layers({"a": layer}, path, extra_arrays={"l": np.ones(2, np.longdouble)})
    with pytest.raises(ValueError, match="format"):
        write_archive(path, {"format": "other"}, {})
    with pytest.raises(ValueError, match="version"):
        write_archive(path, {"version": 2}, {})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_module_exports():
    for name in ("save_layers", "load_layers", "read_archive", "write_archive"):
        assert getattr(lrkernels, name) is getattr(archive, name)


def test_failed_write_leaves_no_temporary(tmp_path, rng):
    layer = _model(rng, "Linear", None, True).layer
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        save_layers({"a": layer}, tmp_path / "dir")  # the rename onto a directory fails
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    path = tmp_path / "keep.npz"
    save_layers({"a": layer}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_layers({"a": layer, "b": 1}, path)
    assert path.read_bytes() == before  # a refused save leaves the old archive as it was


def test_recurrent_and_embedding_layers_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    W = rng.standard_normal((48, 10)).astype(np.float32)
    H = rng.standard_normal((48, 12)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    layers = {
        "lstm": lrkernels.LowRankLSTM((W[:, :3], W[:3]), H, b, None, batch_first=True),
        "gru": lrkernels.GRU(W[:36], H[:36]),
        "emb": lrkernels.LowRankEmbedding(W[:, :4], H[:4], padding_idx=2),
        "table": lrkernels.Embedding(W),
    }
    path = tmp_path / "seq.npz"
    lrkernels.save_layers(layers, path)
    back = lrkernels.load_layers(path)
    assert [type(v) for v in back.values()] == [type(v) for v in layers.values()]
    x = rng.standard_normal((2, 5, 10)).astype(np.float32)
    assert np.array_equal(back["lstm"](x)[0], layers["lstm"](x)[0])
    assert back["lstm"].batch_first and back["lstm"].ranks == (3, None)
    xs = rng.standard_normal((5, 2, 10)).astype(np.float32)
    assert np.array_equal(back["gru"](xs)[0], layers["gru"](xs)[0])
    idx = np.array([[0, 2], [47, 5]])
    assert np.array_equal(back["emb"](idx), layers["emb"](idx)) and back["emb"].padding_idx == 2
    assert np.array_equal(back["table"](idx), W[idx])
    header, arrays = lrkernels.read_archive(path)
    header["layers"][0]["in_dim"] = 11
    lrkernels.write_archive(path, header, arrays)
    with pytest.raises(ValueError, match="description says"):
        lrkernels.load_layers(path)
