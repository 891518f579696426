"""The command line: ``python -m lrkernels info|bench|demo`` (bench on tiny layers, to stay
fast); bad arguments end in a usage error before any run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

import lrkernels
from lrkernels import __main__ as cli
from lrkernels import bench


@pytest.fixture
def tiny_bench(monkeypatch):
    monkeypatch.setattr(bench, "LINEAR_SHAPES", [(40, 48, 8, "tiny linear")])
    monkeypatch.setattr(
        bench, "CONV_SHAPES", [(16, 10, 3, 1, "tiny conv"), (16, 12, 3, 2, "tiny s2")]
    )
    monkeypatch.setattr(
        bench, "RECURRENT_SHAPES", [("lstm", 16, 1, 4, "tiny lstm"), ("gru", 16, 1, 4, "tiny gru")]
    )
    monkeypatch.setattr(bench, "RECURRENT_SEQ", 5)
    monkeypatch.setattr(bench, "EMBEDDING_SHAPES", [(50, 12, 3, 7, "tiny embedding")])


def test_info_prints_json(capsys):
    assert cli.main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["isa"] == lrkernels.get_isa()
    assert info["isas_available"] == lrkernels.available_isas()


def test_bench_table_and_json(tiny_bench, tmp_path, capsys):
    peaks, results = bench.run(quick=True, progress=None, bandwidth_bytes=1 << 20)
    # 1 linear shape x 2 batches + 2 conv shapes, each factorized + dense
    assert len(results) == 2 * (2 + 2)
    assert peaks["read_bandwidth_gbs"] > 0
    for fact, dense in zip(results[0::2], results[1::2]):
        # kind: the layer class name (the one naming scheme); factorized: the role in the pair
        assert (fact.kind, dense.kind) in (("LowRankLinear", "Linear"), ("TuckerConv2d", "Conv2d"))
        assert fact.factorized and not dense.factorized
        assert fact.layer == dense.layer and fact.batch == dense.batch
        assert fact.seconds > 0 and dense.seconds > 0
        assert fact.speedup_vs_dense == pytest.approx(dense.seconds / fact.seconds)
        assert 0 < fact.fraction_of_peak and fact.peak_basis == "FMA peak"
    # batch-1 linear rows (memory-bound) also compare their GB/s with the read probe, as a ratio
    batch1 = [r for r in results if r.batch == 1 and r.kind in ("LowRankLinear", "Linear")]
    assert batch1 and all(r.extra["vs_read_probe"] > 0 for r in batch1)
    assert all("vs_read_probe" not in r.extra for r in results if r not in batch1)
    # FLOPs from the layer table: the stride-2 conv (16ch 12x12 3x3, pad 1, rank 4) -> 6x6 output
    s2 = [r for r in results if r.layer == "tiny s2"]
    assert s2[1].flops == 2 * 6 * 6 * 16 * 16 * 9
    assert s2[0].flops == 2 * (12 * 12 * 16 * 4 + 6 * 6 * 4 * 4 * 9 + 6 * 6 * 4 * 16)
    assert s2[0].weight_bytes == 4 * (4 * 16 * 2 + 4 * 4 * 9)
    table = bench.format_table(peaks, results)
    assert "tiny linear" in table and "tiny conv" in table and "speed-up" in table
    assert "TuckerConv2d" in table and "LowRankLinear" in table
    assert "% FMA" in table and "vs read" in table and "not a ceiling" in table
    assert "% peak" not in table and "%b" not in table  # issue 11 item 8: 192.7% "of a peak"


def test_bench_sequence_rows(tiny_bench):
    rows = bench.sequence_rows(quick=True, progress=None)
    assert [r["layer"] for r in rows] == ["tiny lstm", "tiny gru", "tiny embedding"]
    for r in rows:
        assert r["factorized_seconds"] > 0 and r["dense_seconds"] > 0
        assert r["speedup_vs_dense"] == pytest.approx(r["dense_seconds"] / r["factorized_seconds"])
    # stored floats (no biases here): the factors or W_ih + W_hh; A and B or the table
    assert rows[0]["factor_bytes"] == 4 * 2 * 4 * (4 * 16 + 16)
    assert rows[0]["dense_bytes"] == 4 * 2 * 4 * 16 * 16
    assert rows[2]["factor_bytes"] == 4 * 3 * (50 + 12) and rows[2]["dense_bytes"] == 4 * 50 * 12
    table = bench.format_sequence_table(rows)
    assert "tiny lstm" in table and "tiny embedding" in table and "speed-up" in table


def test_bench_cli_json(tiny_bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "rank_sweep", lambda quick: {"linear": [(8, 1.5), (16, 1.2)]})
    monkeypatch.setattr(
        bench,
        "machine_peaks",
        lambda quick, threads, bandwidth_bytes=0: {
            "isa": lrkernels.get_isa(),
            "threads": threads,
            "fma_peak_gflops_per_core": None,
            "fma_peak_gflops": None,
            "read_bandwidth_gbs": 10.0,
        },
    )
    out = tmp_path / "bench.json"
    before = lrkernels.get_num_threads()
    try:
        assert (
            cli.main(["bench", "--quick", "--no-progress", "--threads", "1", "--json", str(out)])
            == 0
        )
    finally:
        lrkernels.set_num_threads(before)
    data = json.loads(out.read_text())
    assert data["machine"]["threads"] == 1
    assert len(data["results"]) == 8 and data["rank_sweep"]["linear"][0] == [8, 1.5]
    assert [r["layer"] for r in data["sequence_results"]][-1] == "tiny embedding"
    assert "lrkernels bench" in capsys.readouterr().out


@pytest.mark.skipif(
    bool(os.environ.get("LRKERNELS_NO_SUBPROCESS")),
    reason="LRKERNELS_NO_SUBPROCESS is set (e.g. under qemu user emulation)",
)
def test_demo_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "lrkernels", "demo", "--batches", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "match the numpy reference" in proc.stdout


# --------------------------------------------------------------------------------------------
# arguments checked first: exit 2 with one error line, before any output or run (issue 11 item 8)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_run(monkeypatch):
    """bench.run and demo fail the test if reached: a bad argument must stop the CLI before."""

    def ran(*args, **kwargs):
        raise AssertionError("the run started despite a bad argument")

    monkeypatch.setattr(bench, "run", ran)
    monkeypatch.setattr(cli, "demo", ran)
    monkeypatch.setattr(cli.os, "execve", ran)


def _usage_error(capsys, argv, match):
    before = (lrkernels.get_isa(), lrkernels.get_num_threads())
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and match in errors[0], err
    assert (lrkernels.get_isa(), lrkernels.get_num_threads()) == before


@pytest.mark.parametrize("command", ["bench", "demo"])
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_bad_threads(no_run, capsys, command, value):
    top = lrkernels._core.max_num_threads()
    _usage_error(capsys, [command, "--threads", value], f"from 1 to {top}")


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_threads_above_set_num_threads_limit(no_run, capsys, command):
    top = lrkernels._core.max_num_threads()
    _usage_error(capsys, [command, "--threads", str(top + 1)], f"from 1 to {top}")
    with pytest.raises(ValueError):  # the limit is set_num_threads' own
        lrkernels.set_num_threads(top + 1)


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_bad_isa(no_run, capsys, command):
    _usage_error(capsys, [command, "--isa", "bogus"], "unknown ISA 'bogus'")
    available = lrkernels.available_isas()
    missing = [i for i in ("scalar", "neon", "avx2", "avx512") if i not in available]
    if missing:  # e.g. neon on x86
        _usage_error(capsys, [command, "--isa", missing[0]], "not available")


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_bad_demo_batches(no_run, capsys, value):
    _usage_error(capsys, ["demo", "--batches", "1", value], "expected an integer >= 1")


def test_unwritable_json_fails_before_the_run(no_run, capsys, tmp_path):
    _usage_error(capsys, ["bench", "--json", str(tmp_path / "missing" / "b.json")], "--json")
    _usage_error(capsys, ["bench", "--json", str(tmp_path)], "is a directory")
    # the check itself neither truncates an existing file nor leaves a new one behind
    existing = tmp_path / "old.json"
    existing.write_text("keep")
    parser = argparse.ArgumentParser()
    cli._check_writable(parser, "--json", str(existing))
    cli._check_writable(parser, "--json", str(tmp_path / "new.json"))
    assert existing.read_text() == "keep" and sorted(tmp_path.iterdir()) == [existing]


def test_plot_without_matplotlib_fails_before_the_run(no_run, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    _usage_error(capsys, ["bench", "--plot", str(tmp_path / "p.png")], "needs matplotlib")
