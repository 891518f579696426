"""Saving and loading layers without pickle and without torch: the lrkernels archive format.

An archive is an uncompressed ``.npz`` (a zip of ``.npy`` files) in which every entry is a plain
numeric or bool array (float16/32/64, complex64/128, int*, uint*, bool), so it loads anywhere numpy
does (a 32-bit board without torch included) and loading never unpickles. The header is JSON,
stored as UTF-8 bytes in a uint8 array under the reserved name ``__lrkernels_header__``:

    {"format": "lrkernels-archive", "version": 1, "writer": "lrkernels 0.1.0", ...}

Layers (``save_layers``) add to the header

    "layers": [{"name": "layer1.0.conv1", "kind": "TuckerConv2d",
                "factors": ["first", "core", "last"], "has_bias": true,
                "in_dim": 64, "out_dim": 64, "ranks": [16, 16], "kernel_size": [3, 3],
                "keywords": {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                             "layout": "NCHW"},
                "arrays": {"first": "layers/layer1.0.conv1/first", ...,
                           "bias": "layers/layer1.0.conv1/bias"}}, ...]     (file order)
    "metadata": {...}                                                      (when given)

with the factors (float32) stored as ``layers/<name>/<factor>`` and the bias as
``layers/<name>/bias``; extra arrays keep the names they were given (``state/fc.weight``), any
name but the header's and those under ``layers/``.

    write_archive(path, header, arrays)      the container: a JSON-able header dict and arrays
    read_archive(path) -> (header, arrays)   validated; every defect is a ValueError naming path
    describe_layer(layer) -> (description, arrays)   and build_layer(description, arrays) -> layer
    save_layers(layers, path, *, metadata=None, extra_arrays=None)
    load_layers(path) -> {name: layer}       (file order; layers compute bit-identical outputs)

Paths are str or os.PathLike (written as given: no ".npz" is appended, and a path is replaced
atomically once the archive is complete), or binary file objects (seekable for reading).
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from . import _core
from .layer_specs import spec_for

__all__ = [
    "FORMAT",
    "VERSION",
    "HEADER_KEY",
    "write_archive",
    "read_archive",
    "describe_layer",
    "build_layer",
    "save_layers",
    "load_layers",
]

FORMAT = "lrkernels-archive"
VERSION = 1  # the major version this lrkernels writes and the newest it reads
HEADER_KEY = "__lrkernels_header__"
LAYERS_PREFIX = "layers/"

# Constructor keywords saved when a layer has them as an attribute whose value is not None, in
# addition to the keyword-only parameters of the kind's constructor signature (geometry).
_OPTIONAL_KEYWORDS = ("activation",)

_INT_KINDS = "iu"


def _allowed_dtype(dtype: np.dtype) -> bool:
    """Plain numeric and bool dtypes of a portable size (no longdouble: armv7 has none)."""
    if dtype.fields is not None or dtype.subdtype is not None:
        return False
    if dtype.kind == "b" or dtype.kind in _INT_KINDS:
        return True
    if dtype.kind == "f":
        return dtype.itemsize in (2, 4, 8)
    if dtype.kind == "c":
        return dtype.itemsize in (8, 16)
    return False


def _label(file) -> str:
    if isinstance(file, (str, bytes, os.PathLike)):
        return os.fsdecode(file)
    name = getattr(file, "name", None)
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else repr(file)


def _is_path(file) -> bool:
    return isinstance(file, (str, bytes, os.PathLike))


# --------------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------------


def _check_array_name(name, what="array name"):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} contains a NUL character")


def _as_plain_array(name, value) -> np.ndarray:
    if isinstance(value, (np.ndarray, np.generic, bool, int, float, complex, list, tuple)):
        a = np.asarray(value)
    else:
        raise TypeError(
            f"array {name!r} must be a numpy array (numeric or bool), got {type(value).__name__}"
        )
    if not _allowed_dtype(a.dtype):
        raise TypeError(
            f"array {name!r} has dtype {a.dtype}; an archive holds only bool, int, uint, "
            "float16/32/64 and complex64/128 arrays"
        )
    return a


def _header_bytes(header) -> np.ndarray:
    try:
        text = json.dumps(header, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the archive header must be JSON-able: {exc}") from None
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def write_archive(path, header: Mapping, arrays: Mapping) -> None:
    """Write `arrays` ({name: numeric/bool array}) and the JSON-able `header` dict to `path`.

    The header gets "format", "version" and "writer" added (a "format" or "version" of its own
    must be this format's). Array names are non-empty str ("/" allowed), not the header's key.
    TypeError for a non-JSON-able header or an array of another dtype (object, str, structured,
    longdouble); nothing is written then.
    """
    if not isinstance(header, Mapping):
        raise TypeError(f"header must be a dict, got {type(header).__name__}")
    for key in header:
        if not isinstance(key, str):
            raise TypeError(f"header keys must be str, got {key!r}")
    if header.get("format", FORMAT) != FORMAT or header.get("version", VERSION) != VERSION:
        raise ValueError(
            f"header format/version are set by write_archive ({FORMAT!r}, {VERSION}), got "
            f"{header.get('format')!r}, {header.get('version')!r}"
        )
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    full = {"format": FORMAT, "version": VERSION, "writer": f"lrkernels {_core.__version__}"}
    full.update((k, v) for k, v in header.items() if k not in ("format", "version"))
    entries = {HEADER_KEY: _header_bytes(full)}
    for name, value in arrays.items():
        _check_array_name(name)
        if name == HEADER_KEY:
            raise ValueError(f"array name {HEADER_KEY!r} is reserved for the header")
        entries[name] = _as_plain_array(name, value)

    if not _is_path(path):
        _write_zip(path, entries)
        return
    # Written next to path and renamed once complete: no half-written archive under path.
    path = os.fsdecode(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "xb") as f:
        try:
            _write_zip(f, entries)
        except BaseException:
            f.close()
            os.remove(tmp)
            raise
    try:
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def _write_zip(file, entries) -> None:
    # What np.savez does, minus its keyword-argument names ("file", "allow_pickle" are valid array
    # names here) and with allow_pickle=False.
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in entries.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)


class _Invalid(Exception):
    """A defect of the file, turned into ValueError(path: ...) by read_archive."""


def _check_member(zf: zipfile.ZipFile, member: str) -> None:
    """The .npy header of a zip member: a plain dtype and a data size that matches its shape
    (before numpy allocates the array a corrupt header could make huge)."""
    info = zf.getinfo(member)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _Invalid(f"entry {member!r}: unsupported .npy version {version}")
        offset = f.tell()
    if dtype.hasobject:
        raise _Invalid(f"entry {member!r} is an object array (pickled Python objects)")
    if not _allowed_dtype(dtype):
        raise _Invalid(f"entry {member!r} has dtype {dtype}, not a plain numeric or bool dtype")
    count = 1
    for n in shape:
        count *= int(n)
    if info.file_size - offset != count * dtype.itemsize:
        raise _Invalid(
            f"entry {member!r}: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, "
            f"the entry has {info.file_size - offset}"
        )


def _parse_header(data: np.ndarray) -> dict:
    if data.dtype != np.uint8 or data.ndim != 1:
        raise _Invalid(f"the header entry is {data.dtype} of shape {data.shape}, not uint8 bytes")
    try:
        header = json.loads(data.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Invalid(f"the header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _Invalid(f"the header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT:
        raise _Invalid(f"header format is {header.get('format')!r}, expected {FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Invalid(f"header version is {version!r}, expected a positive int")
    if version > VERSION:
        raise _Invalid(
            f"format version {version} was written by a newer lrkernels ({header.get('writer')}); "
            f"this lrkernels ({_core.__version__}) reads versions up to {VERSION}: upgrade it"
        )
    return header


def _read(file) -> tuple:
    try:
        loaded = np.load(file, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - every defect of the file becomes one ValueError
        raise _Invalid(
            f"not an .npz (zip) archive, or truncated ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, np.ndarray):
        raise _Invalid("a single .npy array, not an .npz archive")
    with loaded as npz:
        members = npz.zip.namelist()
        if len(set(members)) != len(members):
            dup = sorted({m for m in members if members.count(m) > 1})
            raise _Invalid(f"duplicate entries {dup}")
        for member in members:
            if not member.endswith(".npy"):
                raise _Invalid(f"entry {member!r} is not a .npy array")
        if HEADER_KEY + ".npy" not in members:
            raise _Invalid(f"no header entry {HEADER_KEY!r}: not an lrkernels archive")
        try:
            _check_member(npz.zip, HEADER_KEY + ".npy")
            header = _parse_header(npz[HEADER_KEY])
            arrays = {}
            for member in members:
                key = member[: -len(".npy")]
                if key == HEADER_KEY:
                    continue
                _check_member(npz.zip, member)
                arrays[key] = npz[key]
        except _Invalid:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt zip or .npy data
            raise _Invalid(f"corrupt data ({type(exc).__name__}: {exc})") from None
    return header, arrays


def read_archive(path) -> tuple:
    """(header, arrays) of the archive at `path`: the header dict (with "format", "version",
    "writer") and {name: array} in file order (the header entry excluded).

    Loads with np.load(allow_pickle=False) only. A file that is not a valid archive (not a zip,
    truncated, corrupt, a plain .npy, no or bad header, another format, a newer version, an object
    or other non-numeric array) raises ValueError naming the path and the defect; a missing or
    unreadable path raises the OSError of opening it.
    """
    label = _label(path)
    try:
        if _is_path(path):
            with open(path, "rb") as f:
                return _read(f)
        return _read(path)
    except _Invalid as exc:
        raise ValueError(f"{label}: not a valid lrkernels archive: {exc}") from None


# --------------------------------------------------------------------------------------------
# one layer
# --------------------------------------------------------------------------------------------


def _jsonable(value, what):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), what)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, what) for v in value]
    raise TypeError(f"{what} = {value!r} ({type(value).__name__}) cannot be saved as JSON")


def _from_json(value):
    # JSON lists are the tuples (pairs) the constructors take.
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def _keyword_names(spec) -> list:
    """The constructor keywords of a kind: its keyword-only parameters (the geometry of the
    convolutions; any new one too) and _OPTIONAL_KEYWORDS."""
    try:
        params = inspect.signature(spec.cls.__init__).parameters.values()
        names = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    except (TypeError, ValueError):  # no signature: the geometry of a convolution
        names = ["stride", "padding", "dilation", "layout", "algorithm"] if spec.conv else []
    names += [n for n in _OPTIONAL_KEYWORDS if n not in names]
    return names


# The recurrent and embedding layers (lrkernels.recurrent, lrkernels.embedding) are not rows of the
# layer-kind table (they have states and integer inputs); their descriptions are written here.
def _sequence_classes() -> dict:
    from .embedding import Embedding, LowRankEmbedding
    from .recurrent import GRU, LSTM, LowRankGRU, LowRankLSTM

    return {
        c.__name__: c for c in (LSTM, GRU, LowRankLSTM, LowRankGRU, Embedding, LowRankEmbedding)
    }


def _is_sequence_layer(layer) -> bool:
    return type(layer).__name__ in _sequence_classes() and isinstance(
        layer, tuple(_sequence_classes().values())
    )


def _sequence_kind(layer) -> str:
    for name, cls in _sequence_classes().items():
        if type(layer) is cls:
            return name
    for name, cls in reversed(list(_sequence_classes().items())):  # a user subclass: its base
        if isinstance(layer, cls):
            return name
    raise TypeError(f"expected an lrkernels layer, got {type(layer).__name__}")


def _matrix_arrays(prefix, w) -> dict:
    if isinstance(w, tuple):
        return {f"{prefix}_U": np.array(w[0]), f"{prefix}_V": np.array(w[1])}
    return {prefix: np.array(w)}


def _describe_sequence(layer) -> tuple:
    kind = _sequence_kind(layer)
    if kind.endswith("Embedding"):
        arrays = (
            {"A": np.array(layer.A), "B": np.array(layer.B)}
            if kind == "LowRankEmbedding"
            else {"table": np.array(layer.table)}
        )
        description = {
            "kind": kind,
            "factors": list(arrays),
            "has_bias": False,
            "in_dim": layer.num_embeddings,
            "out_dim": layer.embedding_dim,
            "ranks": [layer.rank] if kind == "LowRankEmbedding" else [],
            "keywords": {"padding_idx": layer.padding_idx},
        }
        return description, arrays
    arrays = {
        **_matrix_arrays("weight_ih", layer.weight_ih),
        **_matrix_arrays("weight_hh", layer.weight_hh),
    }
    factors = list(arrays)
    for name in ("bias_ih", "bias_hh"):
        value = getattr(layer, name)
        if value is not None:
            arrays[name] = np.array(value)
    description = {
        "kind": kind,
        "factors": factors,
        "has_bias": layer.bias_ih is not None or layer.bias_hh is not None,
        "in_dim": layer.input_size,
        "out_dim": layer.hidden_size,
        "ranks": list(layer.ranks),
        "keywords": {"batch_first": layer.batch_first},
    }
    return description, arrays


def _build_sequence(kind, description, arrays):
    cls = _sequence_classes()[kind]
    factors = description.get("factors")
    if not isinstance(factors, list) or not all(isinstance(f, str) for f in factors):
        raise ValueError(f"{kind}: bad description (factors {factors!r})")
    for name in factors:
        if name not in arrays:
            raise ValueError(f"{kind}: missing array {name!r}")
    keywords = description.get("keywords", {})
    if not isinstance(keywords, Mapping):
        raise ValueError(f"{kind}: keywords must be a dict, got {keywords!r}")
    a = {n: np.asarray(arrays[n]) for n in arrays}
    try:
        if kind == "LowRankEmbedding":
            layer = cls(a["A"], a["B"], padding_idx=keywords.get("padding_idx"))
        elif kind == "Embedding":
            layer = cls(a["table"], padding_idx=keywords.get("padding_idx"))
        else:

            def matrix(prefix):
                if f"{prefix}_U" in factors:
                    return (a[f"{prefix}_U"], a[f"{prefix}_V"])
                return a[prefix]

            layer = cls(
                matrix("weight_ih"),
                matrix("weight_hh"),
                a.get("bias_ih"),
                a.get("bias_hh"),
                batch_first=bool(keywords.get("batch_first", False)),
            )
    except KeyError as exc:
        raise ValueError(f"{kind}: missing array {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: cannot build the layer: {exc}") from None
    dims = (
        (layer.num_embeddings, layer.embedding_dim)
        if kind.endswith("Embedding")
        else (layer.input_size, layer.hidden_size)
    )
    if list(dims) != [description.get("in_dim"), description.get("out_dim")]:
        raise ValueError(
            f"{kind}: arrays give sizes {dims}, the description says "
            f"({description.get('in_dim')}, {description.get('out_dim')})"
        )
    return layer


def describe_layer(layer) -> tuple:
    """(description, arrays) of a layer: the JSON-able description (kind, factor names, bias,
    sizes, ranks, kernel size, constructor keywords) and {factor name: float32 array, "bias": ...}.

    Keywords: every keyword-only constructor parameter (stride, padding, dilation as pairs,
    layout, algorithm) and "activation", each saved when the layer's attribute of that name is not
    None (precision "fp32" and algorithm "direct", what build_layer assumes when absent, are left
    out).
    TypeError for a non-layer.
    """
    if _is_sequence_layer(layer):
        return _describe_sequence(layer)
    if not isinstance(layer, _core.Layer):
        raise TypeError(f"expected an lrkernels layer, got {type(layer).__name__}")
    spec = spec_for(layer)
    in_dim, out_dim = spec.in_out(layer)
    keywords = {}
    for name in _keyword_names(spec):
        value = getattr(layer, name, None)
        if name == "precision" and value == "fp32":
            continue  # the default: archives of fp32 layers read as before precision= existed
        if name == "algorithm" and value == "direct":
            continue  # what build_layer takes when absent: archives read as before algorithm=
        if value is not None:
            keywords[name] = _jsonable(value, f"{spec.name}.{name}")
    description = {
        "kind": spec.name,
        "factors": list(spec.factor_names),
        "has_bias": layer.bias is not None,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "ranks": list(spec.ranks(layer)),
        "keywords": keywords,
    }
    if spec.conv:
        description["kernel_size"] = list(spec.kernel(layer))
    arrays = {
        n: np.array(a, dtype=np.float32) for n, a in zip(spec.factor_names, spec.factors(layer))
    }
    if layer.bias is not None:
        arrays["bias"] = np.array(layer.bias, dtype=np.float32)
    return description, arrays


def build_layer(description: Mapping, arrays: Mapping):
    """The layer of a describe_layer description and its arrays (a base lrkernels class: a
    subclass is rebuilt as its kind). It computes bit-identical outputs to the described layer.

    ValueError naming what is wrong: an unknown kind, a missing array, an array whose shape does
    not match the description, keywords this lrkernels' constructor refuses.
    """
    if not isinstance(description, Mapping):
        raise TypeError(f"description must be a dict, got {type(description).__name__}")
    kind = description.get("kind")
    if isinstance(kind, str) and kind in _sequence_classes():
        return _build_sequence(kind, description, arrays)
    try:
        spec = spec_for(kind) if isinstance(kind, str) else None
    except TypeError:
        spec = None
    if spec is None:
        raise ValueError(f"unknown layer kind {kind!r}")
    names = list(spec.factor_names) + (["bias"] if description.get("has_bias", False) else [])
    for name in names:
        if name not in arrays:
            raise ValueError(f"{spec.name}: missing array {name!r}")
    factors = [np.asarray(arrays[n]) for n in spec.factor_names]
    bias = np.asarray(arrays["bias"]) if "bias" in names else None
    try:
        expected = spec.factor_shapes(
            description["in_dim"],
            description["out_dim"],
            tuple(description.get("ranks", ())),
            tuple(description.get("kernel_size", (1, 1))),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{spec.name}: bad description ({type(exc).__name__}: {exc})") from None
    shapes = [(n, f.shape, tuple(e)) for n, f, e in zip(spec.factor_names, factors, expected)]
    if bias is not None:
        shapes.append(("bias", bias.shape, (description["out_dim"],)))
    for name, got, want in shapes:
        if got != want:
            raise ValueError(f"{spec.name}: array {name!r} has shape {got}, expected {want}")
    keywords = description.get("keywords", {})
    if not isinstance(keywords, Mapping):
        raise ValueError(f"{spec.name}: keywords must be a dict, got {keywords!r}")
    keywords = {k: _from_json(v) for k, v in keywords.items()}
    if spec.conv and "algorithm" not in keywords:
        # Archives before algorithm= existed, and any saved without it, were computed direct:
        # algorithm="auto" could pick Winograd now and change the bits.
        keywords["algorithm"] = "direct"
    try:
        return spec.cls(*factors, bias, **keywords)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{spec.name}: cannot build the layer with keywords {keywords}: {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# named layers
# --------------------------------------------------------------------------------------------


def _named_layers(layers) -> list:
    if isinstance(layers, Mapping):
        items = list(layers.items())
    elif isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a mapping of name -> layer, got {type(layers).__name__}")
    else:
        items = [tuple(item) for item in layers]
        if any(len(item) != 2 for item in items):
            raise TypeError("layers must be a mapping of name -> layer or (name, layer) pairs")
    seen = set()
    for name, layer in items:
        _check_array_name(name, "layer name")
        if name in seen:
            raise ValueError(f"duplicate layer name {name!r}")
        seen.add(name)
        if not isinstance(layer, _core.Layer) and not _is_sequence_layer(layer):
            raise TypeError(f"layer {name!r} is a {type(layer).__name__}, not an lrkernels layer")
    return items


def save_layers(layers, path, *, metadata=None, extra_arrays=None) -> None:
    """Save named layers (a mapping name -> layer, or (name, layer) pairs; any non-empty str
    names, e.g. torch module paths) to one archive at `path` (see the module docstring).

    metadata: a JSON-able dict stored as header["metadata"] (read back as json.loads gives it:
    tuples come back as lists). extra_arrays: {name: numeric/bool array} stored under their names
    (not under "layers/"), dtypes kept. TypeError for a non-layer, a non-str name or a
    non-JSON-able metadata, ValueError for an empty or duplicate name or a reserved array name.
    """
    items = _named_layers(layers)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    if extra_arrays is None:
        extra_arrays = {}
    if not isinstance(extra_arrays, Mapping):
        raise TypeError(f"extra_arrays must be a dict or None, got {type(extra_arrays).__name__}")
    arrays = {}
    entries = []
    for name, layer in items:
        description, layer_arrays = describe_layer(layer)
        keys = {}
        for array_name, a in layer_arrays.items():
            keys[array_name] = f"{LAYERS_PREFIX}{name}/{array_name}"
            arrays[keys[array_name]] = a
        entries.append({"name": name, **description, "arrays": keys})
    for name in extra_arrays:
        _check_array_name(name, "extra array name")
        if name.startswith(LAYERS_PREFIX) or name == HEADER_KEY:
            raise ValueError(
                f"extra array name {name!r} is reserved (the layers' arrays are under "
                f"{LAYERS_PREFIX!r})"
            )
    arrays.update(extra_arrays)
    header = {"layers": entries}
    if metadata is not None:
        header["metadata"] = dict(metadata)
    write_archive(path, header, arrays)


def load_layers(path) -> dict:
    """{name: layer} of an archive written by save_layers, in file order. ValueError naming the
    path for an invalid archive or layer entry (read_archive gives the header and all arrays)."""
    header, arrays = read_archive(path)
    label = _label(path)
    entries = header.get("layers", [])
    if not isinstance(entries, list):
        raise ValueError(f"{label}: header 'layers' is not a list")
    layers = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{label}: layer entry {i} has no name")
        name = entry["name"]
        if name in layers:
            raise ValueError(f"{label}: duplicate layer name {name!r}")
        keys = entry.get("arrays")
        if not isinstance(keys, dict):
            raise ValueError(f"{label}: layer {name!r} has no 'arrays' table")
        layer_arrays = {}
        for array_name, key in keys.items():
            if key not in arrays:
                raise ValueError(
                    f"{label}: layer {name!r}: array {array_name!r} ({key!r}) is not in the file"
                )
            layer_arrays[array_name] = arrays[key]
        try:
            layers[name] = build_layer(entry, layer_arrays)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{label}: layer {name!r}: {exc}") from None
    return layers
