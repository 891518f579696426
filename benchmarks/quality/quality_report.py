"""Quality of lrkernels.torch.compress on two real pretrained networks shipped inside packages
(issue 15 item 7): Silero VAD 16 kHz (conv encoder + LSTM; pip silero-vad) and MTCNN's PNet /
RNet / ONet (pip facenet-pytorch), on real offline inputs (espeak-ng speech with silence and
noise; scikit-image / scikit-learn sample images and the LFW subset).

At 0.75 / 0.5 / 0.25 of the parameters of the factorizable layers, per variant:
  weight-only        compress(model, ratio=q)            and budget=q (weight spectra)
  data-aware         compress(model, ratio=q, calibration=cal)   and budget=q,
                     allocation="spectrum" (sequential fit: each layer to its own dense output)
  asym ratio         ratio=q, calibration=cal, fit="asymmetric" (to the dense model's output)
  seq+sensitivity    budget=q, calibration=cal, fit="sequential", allocation="sensitivity"
  asym+sensitivity   compress(model, budget=q, calibration=cal, fit="asymmetric",
                              allocation="sensitivity")   ("pending" when compress lacks them)
  + distilled        lt.distill(student, teacher, calibration batches) on the above
Per layer: held-out relative output error ||f_c(x) - f(x)|| / ||f(x)|| with x the inputs the
DENSE model gives that layer on held-out data, and the ranks. Whole model: Silero: speech
decisions (p > 0.5) agreeing with the dense model on held-out chunks, mean |p - p_dense|;
MTCNN: the full cascade's detections kept (IoU >= 0.5 with a detection of the compressed
cascade) on held-out images, extra detections, and each net's decisions (cascade thresholds
0.6 / 0.7 / 0.7) agreeing on its held-out inputs.

One thread (torch, lrkernels, BLAS).

    pip install scikit-image; pip install --no-deps silero-vad facenet-pytorch
    apt-get install espeak-ng
    PYTHONPATH=python python benchmarks/quality/quality_report.py [--quick] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import lrkernels  # noqa: E402
import lrkernels.torch as lt  # noqa: E402

FRACTIONS = (0.75, 0.5, 0.25)


def variants(q, cal, key):
    """name -> compress keywords (besides progress/measure/num_threads); a list: compress calls
    chained; "_skip": parts (MTCNN nets) left dense."""
    v = {
        "weight-only ratio": dict(ratio=q),
        "weight-only budget": dict(budget=q),
        "data-aware ratio": dict(ratio=q, calibration=cal),
        "data-aware budget": dict(budget=q, calibration=cal, allocation="spectrum"),
        "asym ratio": dict(ratio=q, calibration=cal, fit="asymmetric"),
        "seq+sensitivity": dict(
            budget=q, calibration=cal, fit="sequential", allocation="sensitivity"
        ),
        "asym+sensitivity": dict(
            budget=q, calibration=cal, fit="asymmetric", allocation="sensitivity"
        ),
    }
    if key == "silero":
        # budget= leaves the LSTM dense: factorize it afterwards by ratio=q (data-aware) so the
        # whole model is at q
        v["asym+sensitivity, LSTM ratio"] = [
            v["asym+sensitivity"],
            dict(ratio=q, calibration=cal, include=["lstm"]),
        ]
    if key == "mtcnn":
        # PNet (1.3% of MTCNN's parameters) decides which windows the cascade looks at
        v["asym+sensitivity, PNet dense"] = dict(v["asym+sensitivity"], _skip=("pnet",))
    return v


DISTILL_FROM = (
    "weight-only ratio",
    "data-aware ratio",
    "asym+sensitivity",
    "asym+sensitivity, LSTM ratio",
    "asym+sensitivity, PNet dense",
)


def run_compress(model, kwargs):
    """(model, report) or (None, why) when a keyword is not in this lrkernels yet. kwargs: one
    dict, or a list of dicts applied in turn (the report's rows merged, later calls winning)."""
    if isinstance(kwargs, list):
        out, report = model, None
        for kw in kwargs:
            out, rep = run_compress(out, kw)
            if out is None:
                return None, rep
            if report is None:
                report = rep
            else:
                later = {r.name: r for r in rep.layers if r.compressed}
                report.layers = [later.get(r.name, r) for r in report.layers]
                report.warnings += rep.warnings
        return out, report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out, report = lt.compress(model, progress=False, measure=False, num_threads=1, **kwargs)
        except TypeError as e:
            if "unexpected keyword" in str(e):
                return None, f"pending ({e})"
            raise
    report.warnings = [str(w.message) for w in caught if "compress" in str(w.message)]
    return out, report


# ------------------------------------------------------------------------------------------------
# generic measurements
# ------------------------------------------------------------------------------------------------


def capture_inputs(model, names, batches, max_items=None):
    """name -> list of the first positional input of that module over ``batches``."""
    got = {n: [] for n in names}
    hooks = []
    for n in names:
        mod = model.get_submodule(n)
        hooks.append(mod.register_forward_pre_hook(lambda m, a, n=n: got[n].append(a[0].detach())))
    try:
        with torch.no_grad():
            for b in batches:
                model(*(b if isinstance(b, tuple) else (b,)))
    finally:
        for h in hooks:
            h.remove()
    return got


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def layer_errors(dense, compressed, inputs):
    """name -> held-out relative output error of the compressed model's layer on the inputs the
    dense model gives it (summed over batches)."""
    out = {}
    with torch.no_grad():
        for name, xs in inputs.items():
            d, c = dense.get_submodule(name), compressed.get_submodule(name)
            num = den = 0.0
            for x in xs:
                yd, yc = _first(d(x)), _first(c(x))
                num += float(((yc - yd) ** 2).sum())
                den += float((yd**2).sum())
            out[name] = (num / max(den, 1e-30)) ** 0.5
    return out


def ranks_text(row):
    if not row.compressed:
        return "dense"
    r = row.ranks
    if isinstance(r, list):  # LSTM: [(r_ih, r_hh)] per layer/direction
        return ",".join(f"{a}/{b}" for a, b in r)
    if isinstance(r, tuple):
        return "x".join(str(v) for v in r)
    return str(r)


def min_rank(row):
    if not row.compressed or row.ranks is None:
        return None
    r = row.ranks
    flat = []
    for v in r if isinstance(r, (list, tuple)) else [r]:
        flat.extend(v if isinstance(v, tuple) else [v])
    return min(int(v) for v in flat)


def distill(student, teacher, batches, held, epochs, lr):
    try:
        res = lt.distill(
            student, teacher, batches, epochs=epochs, lr=lr, held_out=held, progress=False
        )
    except AttributeError as e:
        return f"pending ({e})"
    return res


# ------------------------------------------------------------------------------------------------
# Silero VAD
# ------------------------------------------------------------------------------------------------


def silero(args, results):
    import data
    from silero_vad_model import SileroVAD

    if not data.espeak_available():
        print("Silero VAD: skipped (espeak-ng not installed)")
        return
    dense = SileroVAD.pretrained()
    cal_audio = torch.from_numpy(data.speech_clips("calibration"))
    held_audio = torch.from_numpy(data.speech_clips("heldout"))
    if args.quick:
        cal_audio, held_audio = cal_audio[::2], held_audio[::2]
    cal = list(torch.split(cal_audio, 2))
    held = list(torch.split(held_audio, 4))
    names = ["conv1", "conv2", "conv3", "conv4", "lstm", "final"]
    inputs = capture_inputs(dense, names, held)
    with torch.no_grad():
        p_dense = torch.cat([dense(b) for b in held])
    n_chunks = p_dense.numel()
    speech = float((p_dense > 0.5).float().mean())
    print(
        f"\n## Silero VAD 16k (silero-vad, weights of its jit model)\n\n"
        f"calibration: {len(cal_audio)} clips x 6 s ({len(cal)} batches); held out: "
        f"{len(held_audio)} clips, {n_chunks} chunks of 32 ms ({speech:.0%} speech by the dense "
        "model); other sentences and voices than calibration"
    )

    def fidelity(model):
        with torch.no_grad():
            p = torch.cat([model(b) for b in held])
        agree = float(((p > 0.5) == (p_dense > 0.5)).float().mean())
        return dict(agree=agree, mad=float((p - p_dense).abs().mean()))

    run_network("silero", dense, cal, held, inputs, fidelity, args, results, distill_lr=1e-4)


# ------------------------------------------------------------------------------------------------
# MTCNN
# ------------------------------------------------------------------------------------------------


class _Recorder:
    """Wraps a net: records its inputs, runs the wrapped net."""

    def __init__(self, net):
        self.net, self.inputs = net, []

    def __call__(self, x):
        self.inputs.append(x.detach())
        return self.net(x)


def mtcnn(args, results):
    import data
    import mtcnn_model as mm

    nets = {n: mm.pretrained(n) for n in ("pnet", "rnet", "onet")}
    lfw_cal, _, lfw_held, _ = data.lfw_split()

    def cascade_inputs(images):
        rec = {n: _Recorder(m) for n, m in nets.items()}
        dets = [mm.detect(im, rec["pnet"], rec["rnet"], rec["onet"]) for _, im in images]
        return {n: [x for x in r.inputs if len(x)] for n, r in rec.items()}, dets

    cal_images = data.detection_images("calibration")
    held_images = data.detection_images("heldout")
    cal_in, _ = cascade_inputs(cal_images)
    held_in, dense_dets = cascade_inputs(held_images)
    for lfw, d in ((lfw_cal, cal_in), (lfw_held, held_in)):
        d["pnet"].append(data.crops_tensor(lfw, 12))
        d["rnet"].append(data.crops_tensor(lfw, 24))
        d["onet"].append(data.crops_tensor(lfw, 48))
    # PNet: at most 64 calibration batches are read; keep the largest scales' share bounded
    thresholds = {"pnet": 0.6, "rnet": 0.7, "onet": 0.7}
    n_dense = sum(len(b) for b in dense_dets)
    print(
        "\n## MTCNN (facenet-pytorch: PNet, RNet, ONet)\n\n"
        f"calibration: {len(cal_images)} images ({', '.join(n for n, _ in cal_images)}) -> the "
        f"inputs the dense cascade gives each net (PNet {len(cal_in['pnet'])} pyramid levels, "
        f"RNet {sum(len(x) for x in cal_in['rnet'])} crops, ONet "
        f"{sum(len(x) for x in cal_in['onet'])} crops) + 100 LFW-subset crops; held out: "
        f"{len(held_images)} images ({', '.join(n for n, _ in held_images)}), {n_dense} dense "
        f"detections, + the other 100 LFW crops"
    )

    with torch.no_grad():
        dense_dec = {n: [_prob(n, nets[n](x)) for x in held_in[n]] for n in nets}

    def fidelity(models):
        out = {}
        with torch.no_grad():
            for n, m in models.items():
                agree = tot = 0
                for x, pd in zip(held_in[n], dense_dec[n]):
                    pc = _prob(n, m(x))
                    agree += int(((pc > thresholds[n]) == (pd > thresholds[n])).sum())
                    tot += pd.numel()
                out[f"{n} agree"] = agree / tot
        kept = extra = 0
        for (_, im), d in zip(held_images, dense_dets):
            c = mm.detect(im, models["pnet"], models["rnet"], models["onet"])
            if len(d) and len(c):
                m = mm.iou(d, c) >= 0.5
                kept += int(m.any(1).sum())
                extra += int((~m.any(0)).sum())
            else:
                extra += len(c)
        out["kept"] = kept / max(n_dense, 1)
        out["extra"] = extra
        return out

    run_network(
        "mtcnn",
        nets,
        {n: cal_in[n] for n in nets},
        {n: held_in[n] for n in nets},
        None,
        fidelity,
        args,
        results,
        distill_lr=1e-4,
    )


def _prob(name, out):
    p = out[-1]  # softmax (N, 2[, h, w])
    return p[:, 1]


# ------------------------------------------------------------------------------------------------
# the driver (one model, or a dict of separately compressed nets)
# ------------------------------------------------------------------------------------------------


def run_network(key, dense, cal, held, inputs, fidelity, args, results, distill_lr):
    multi = isinstance(dense, dict)
    parts = dense if multi else {"": dense}
    cals = cal if multi else {"": cal}
    helds = held if multi else {"": held}
    layer_names = {}
    held_inputs = {}
    for p, m in parts.items():
        names = [
            n
            for n, mod in m.named_modules()
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LSTM))
        ]
        layer_names[p] = names
        held_inputs[p] = inputs if inputs is not None else capture_inputs(m, names, helds[p])

    def as_models(d):
        return d if multi else d[""]

    base = fidelity(as_models(parts))
    fractions = (0.5,) if args.quick else FRACTIONS
    res = results.setdefault(key, {"dense": base, "rows": []})
    print(f"\ndense vs itself: {_fmt_fid(base)}\n")
    per_layer = []
    for q in fractions:
        models_by_variant = {}
        for vname, _ in variants(q, None, key).items():
            t0 = time.perf_counter()
            comp, reports, errs, pending = {}, {}, {}, None
            for p, m in parts.items():
                kw = variants(q, cals[p], key)[vname]
                if isinstance(kw, dict) and p in kw.get("_skip", ()):
                    out, rep = copy.deepcopy(m), _dense_report(m)
                else:
                    if isinstance(kw, dict):
                        kw = {k: v for k, v in kw.items() if k != "_skip"}
                    out, rep = run_compress(m, kw)
                if out is None:
                    pending = rep
                    break
                comp[p], reports[p] = out, rep
                errs[p] = layer_errors(m, out, held_inputs[p])
            secs = time.perf_counter() - t0
            if pending:
                row = dict(q=q, variant=vname, status=pending)
                res["rows"].append(row)
                print(f"| {q} | {vname} | {pending} |")
                continue
            models_by_variant[vname] = (comp, reports, errs)
            row = summarize(q, vname, parts, reports, errs, fidelity(as_models(comp)), secs)
            res["rows"].append(row)
            print_row(row)
        # distillation
        for vname in DISTILL_FROM:
            if vname not in variants(q, None, key):
                continue
            if vname not in models_by_variant:
                row = dict(q=q, variant=f"{vname} + distill", status="pending (no base model)")
                res["rows"].append(row)
                print(f"| {q} | {vname} + distill | pending |")
                continue
            comp, reports, _ = models_by_variant[vname]
            student = {p: copy.deepcopy(m) for p, m in comp.items()}
            t0 = time.perf_counter()
            info = {}
            spec = variants(q, None, key)[vname]
            skip = spec.get("_skip", ()) if isinstance(spec, dict) else ()
            for p in parts:
                if p in skip:  # left dense: nothing to fine-tune
                    continue
                r = distill(
                    student[p], parts[p], cals[p], helds[p], args.distill_epochs, distill_lr
                )
                if isinstance(r, str):
                    info = None
                    break
                info[p or key] = (r.held_out_before, r.held_out_after, r.steps)
            secs = time.perf_counter() - t0
            if info is None:
                res["rows"].append(dict(q=q, variant=f"{vname} + distill", status=r))
                print(f"| {q} | {vname} + distill | {r} |")
                continue
            errs = {p: layer_errors(parts[p], student[p], held_inputs[p]) for p in parts}
            row = summarize(
                q, f"{vname} + distill", parts, reports, errs, fidelity(as_models(student)), secs
            )
            row["distill"] = info
            res["rows"].append(row)
            print_row(row)
        per_layer.append((q, models_by_variant))
    print_layers(key, parts, layer_names, per_layer, res)


def _dense_report(model):
    """A report of a net left dense (every layer as is)."""
    rows = []
    for n, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LSTM)):
            k = type(m).__name__
            size = sum(p.numel() for p in m.parameters())
            rows.append(
                lt.LayerReport(
                    name=n,
                    dense_kind=k,
                    kind=k,
                    shape=(),
                    input_shape=None,
                    reason="left dense",
                    params_before=size,
                    params_after=size,
                )
            )
    rep = lt.CompressionReport(rows, {}, 1)
    rep.warnings = []
    return rep


def summarize(q, vname, parts, reports, errs, fid, secs):
    before = sum(r.params_before for r in reports.values())
    after = sum(r.params_after for r in reports.values())
    layers = {}
    mins, collapsed = [], []
    for p, rep in reports.items():
        for row in rep.layers:
            name = f"{p}.{row.name}" if p else row.name
            layers[name] = dict(
                ranks=ranks_text(row),
                params=(row.params_before, row.params_after),
                err=errs[p].get(row.name),
                reason=row.reason,
            )
            mr = min_rank(row)
            if mr is not None:
                mins.append(mr)
                if mr <= 2:
                    collapsed.append(f"{name} {ranks_text(row)} ({errs[p].get(row.name, 0):.3f})")
    warns = sorted({w for rep in reports.values() for w in getattr(rep, "warnings", [])})
    return dict(
        q=q,
        variant=vname,
        params_before=before,
        params_after=after,
        fraction=after / before,
        min_rank=min(mins) if mins else None,
        fidelity=fid,
        layers=layers,
        seconds=secs,
        warnings=warns,
        collapsed=collapsed,
    )


def _fmt_fid(f):
    parts = []
    for k, v in f.items():
        if k == "agree":
            parts.append(f"decisions agree {v:.2%}")
        elif k == "mad":
            parts.append(f"mean |dp| {v:.4f}")
        elif k == "kept":
            parts.append(f"detections kept {v:.0%}")
        elif k == "extra":
            parts.append(f"extra {v}")
        else:
            parts.append(f"{k} {v:.2%}")
    return ", ".join(parts)


def print_row(row):
    print(
        f"| {row['q']} | {row['variant']} | {row['fraction']:.3f} | {row['min_rank']} | "
        f"{_fmt_fid(row['fidelity'])} | {row['seconds']:.1f} s |"
        + (f" distill held-out loss {_fmt_distill(row['distill'])}" if "distill" in row else "")
        + (f" rank<=2 (held-out err): {', '.join(row['collapsed'])}" if row["collapsed"] else "")
    )


def _fmt_distill(info):
    return "; ".join(f"{k} {a:.3g}->{b:.3g} ({s} steps)" for k, (a, b, s) in info.items())


def print_layers(key, parts, layer_names, per_layer, res):
    print(f"\n### {key}: held-out layer errors, weight-only vs data-aware (ratio=q: equal ranks)\n")
    print(
        "| q | layer | ranks | params | weight-only | data-aware | DA/WO | asym+sens ranks | err |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worst = []
    for q, mv in per_layer:
        if "weight-only ratio" not in mv or "data-aware ratio" not in mv:
            continue
        for p in parts:
            wo_rep, wo_err = mv["weight-only ratio"][1][p], mv["weight-only ratio"][2][p]
            da_rep, da_err = mv["data-aware ratio"][1][p], mv["data-aware ratio"][2][p]
            asym = mv.get("asym+sensitivity")
            for row in wo_rep.layers:
                da_row = da_rep[row.name]
                name = f"{p}.{row.name}" if p else row.name
                a, b = wo_err[row.name], da_err[row.name]
                ratio = b / a if a > 0 else float("nan")
                if row.compressed and da_row.compressed:
                    worst.append((ratio, q, name))
                extra = "| - | - |"
                if asym is not None:
                    ar = asym[1][p][row.name]
                    extra = f"| {ranks_text(ar)} | {asym[2][p][row.name]:.4f} |"
                print(
                    f"| {q} | {name} | {ranks_text(row)} / {ranks_text(da_row)} | "
                    f"{row.params_before}>{da_row.params_after} | {a:.4f} | {b:.4f} | "
                    f"{ratio:.2f} {extra}"
                )
    if worst:
        worst.sort(reverse=True)
        r, q, name = worst[0]
        n_ok = sum(1 for w in worst if w[0] <= 0.7)
        print(
            f"\ndata-aware <= 0.7x weight-only on {n_ok}/{len(worst)} (layer, q) pairs; worst "
            f"DA/WO {r:.2f} ({name} at q={q}); never worse: {all(w[0] <= 1.0 for w in worst)}"
        )
        res["da_over_wo"] = [dict(ratio=w[0], q=w[1], layer=w[2]) for w in worst]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="q=0.5 only, half the Silero clips")
    ap.add_argument("--only", choices=("silero", "mtcnn"), help="one network")
    ap.add_argument("--distill-epochs", type=int, default=None)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.distill_epochs is None:
        args.distill_epochs = 4 if args.quick else 10
    torch.manual_seed(0)
    torch.set_num_threads(1)
    lrkernels.set_num_threads(1)
    print(
        f"lrkernels {getattr(lrkernels, '__version__', '?')}, torch {torch.__version__}, "
        f"1 thread; {os.cpu_count()} CPUs; quick={args.quick}"
    )
    results = {}
    t0 = time.perf_counter()
    print("\n| q | variant | params kept | min rank | end to end | time | |")
    if args.only in (None, "silero"):
        silero(args, results)
    if args.only in (None, "mtcnn"):
        mtcnn(args, results)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
