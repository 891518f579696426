#!/usr/bin/env python3
"""Static performance of the NEON micro-kernels without a board: llvm-mca on the compiler's loops.

For each kernel file and build (compiler flags as in toolchains/*.cmake and CMakeLists.txt) this
compiles the file to assembly, finds the inner loop of the full-tile kernel (gemm_ukernel<MR>) and
of the GEMV kernel (gemm_ukernel<1>) -- the basic block that branches back to itself and holds the
most multiply-accumulate instructions -- and asks llvm-mca for its cycles per iteration on each
core. MACs per cycle = the loop's multiply-accumulates (lanes x instructions) over those cycles;
fraction of peak = that over the core's documented MAC peak for the instruction kind (PEAKS).

Kernels: f32 GEMM (FMLA; VMLA on armv7), f16w GEMM (FMLA on FCVTL-widened fp16 weights), f16
GEMM in fp16 arithmetic (FMLA .8h, ARMv8.2 FP16; its loop includes the spill of the fp16
accumulators into f32 every 32 k), int8 GEMM without dot products (SMULL/SMLAL + SADALP) and with
SDOT (aarch64, ARMv8.2).

Winograd F(2x2, 3x3) transforms (f32-winograd-2x2-3x3-neon: winograd-generic.h over vector
types, NEON intrinsics on armv7): the loop over channel blocks of one tile in winograd_input and
winograd_output -- the loop (a label and its last backward branch; the output's may hold the
not-taken bias branch: the bias == nullptr path is measured) with the most float add/sub lanes --
as cycles per iteration and per channel of one tile (an input tile channel is 32 float add/sub
lanes, an output one 28), and how busy llvm-mca keeps the busiest load/store unit and the
busiest vector/FP unit (resource pressure over cycles). A tile's channel block is 16 vector
loads and 16 stores (input) or 16 loads and 4 stores (output) around 32 or 28 additions per
lane, so near-even figures are expected; "vec" is the share of the lanes in q-register
instructions (0% on armv7: GCC does not auto-vectorize float arithmetic for ARMv7 NEON, which
flushes denormals, without -funsafe-math-optimizations).

    python3 scripts/arm/mca_report.py   # needs the cross compilers and llvm-mca (llvm-19 best)

Each row names the scheduling model llvm-mca really used (read from its resource names): LLVM
has no Cortex-A72, A76 or A78 model -- its cortex-a72 / cortex-a76 / cortex-a78 CPUs use the
Cortex-A57 model -- so the A76-class kernels (SDOT, and f32/f16w on a Pi 5) are measured with
-mcpu=neoverse-n1, the A76's server twin (same core: 2 x 128-bit ASIMD pipes V0/V1), which has
its own model.

Timing under qemu means nothing; this is the ARM performance check that runs on a PC (and in
CI, as a report without thresholds: a kernel change shows its effect on every target core),
except for one goal: the int8 fallback should do >= 1.8x the f32 kernel's MACs per cycle on the
A72 (Cortex-A57 model), or int8 buys nothing on a Pi 4.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K = ROOT / "cpp/kernels"

AARCH64 = ("aarch64-linux-gnu-g++", "aarch64-linux-gnu")
ARMV7 = ("arm-linux-gnueabihf-g++", "armv7a-linux-gnueabihf")
PI4 = ["-mcpu=cortex-a72"]  # toolchains/raspberry-pi-4.cmake
PI5 = ["-mcpu=cortex-a76"]  # toolchains/raspberry-pi-5.cmake
ARMV7_FLAGS = ["-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard"]
# CMakeLists.txt's per-file flavour flags: LRK_NEON_FLAGS on armv7; LRK_NEONDOT_FLAGS, which under
# the Pi 4's -mcpu=cortex-a72 become -mcpu=cortex-a76+nofp16 (-march=armv8.2-a+dotprod would
# conflict with it), and stay -march=armv8.2-a+dotprod under the Pi 5's -mcpu=cortex-a76.
ARMV7_NEON = ARMV7_FLAGS + ["-mfp16-format=ieee"]
PI4_NEONDOT = PI4 + ["-mcpu=cortex-a76+nofp16"]
PI5_NEONDOT = PI5 + ["-march=armv8.2-a+dotprod"]
# LRK_NEONFP16ARITH_FLAGS likewise: -mcpu=cortex-a76+nodotprod under the Pi 4's -mcpu.
PI4_NEONFP16ARITH = PI4 + ["-mcpu=cortex-a76+nodotprod"]
PI5_NEONFP16ARITH = PI5 + ["-march=armv8.2-a+fp16"]

# Multiply-accumulate instruction kinds: (regex of one instruction, MACs it performs).
KINDS = {
    # 4 f32 lanes per FMLA / VMLA / VFMA on q registers.
    "fma": (re.compile(r"^\s+(fmla\s+v\d+\.4s|vmla\.f32\s+q|vfma\.f32\s+q)", re.M), 4),
    # 8 fp16 lanes per FMLA .8h (ARMv8.2 FP16).
    "hfma": (re.compile(r"^\s+fmla\s+v\d+\.8h", re.M), 8),
    # 8 int16 products per SMULL(2)/SMLAL(2) (VMULL.S8/VMLAL.S8 on armv7); SADALP only widens.
    "mull": (re.compile(r"^\s+(smull2?|smlal2?\s|smlal2?\t|vmull\.s8|vmlal\.s8)", re.M), 8),
    # 4 lanes x 4 int8 products per SDOT.
    "sdot": (re.compile(r"^\s+sdot\s+v\d+\.4s", re.M), 16),
}
# MAC peaks per cycle (Arm's software optimization guides), by -mcpu and instruction kind.
# cortex-a53: 64-bit NEON datapath, half a 4-lane FMLA per cycle. cortex-a72 (A57/A72): one
# 128-bit FMLA per cycle; SMULL/SMLAL issue on F0 only, one per cycle (8 MACs), SADALP on F1.
# neoverse-n1 (= A76): two 128-bit FMLA pipes (V0, V1): 8 f32 MACs; SDOT on both pipes, 2 per
# cycle x 16 int8 MACs = 32 (llvm-mca's N1 model agrees: SDOT reciprocal throughput 0.5).
# FMLA .8h on both pipes: 2 x 8 fp16 MACs = 16.
PEAKS = {
    ("cortex-a53", "fma"): 2,
    ("cortex-a72", "fma"): 4,
    ("cortex-a72", "mull"): 8,
    ("neoverse-n1", "fma"): 8,
    ("neoverse-n1", "sdot"): 32,
    ("neoverse-n1", "hfma"): 16,
}

# (build, kernel, source, compiler/triple, flags, MR, kind, cores)
KERNELS = [
    ("aarch64 Pi 4", "f32-gemm-8x8-aarch64-neon", K / "f32-gemm/8x8-aarch64-neon.cc",
     AARCH64, PI4, 8, "fma", ("cortex-a53", "cortex-a72", "neoverse-n1")),
    ("aarch64 Pi 4", "f16w-gemm-8x8-aarch64-neon", K / "f16w-gemm/8x8-aarch64-neon.cc",
     AARCH64, PI4, 8, "fma", ("cortex-a72", "neoverse-n1")),
    ("aarch64 Pi 4", "f16-gemm-4x16-neonfp16arith", K / "f16w-gemm/4x16-neonfp16arith.cc",
     AARCH64, PI4_NEONFP16ARITH, 4, "hfma", ("neoverse-n1",)),
    ("aarch64 Pi 4", "qd8-...-4x8c4-aarch64-neon", K / "qd8-f32-qc8w-gemm/4x8c4-aarch64-neon.cc",
     AARCH64, PI4, 4, "mull", ("cortex-a72",)),
    ("aarch64 Pi 4", "qd8-...-8x8c4-neondot", K / "qd8-f32-qc8w-gemm/8x8c4-neondot.cc",
     AARCH64, PI4_NEONDOT, 8, "sdot", ("neoverse-n1",)),
    ("aarch64 Pi 5", "f32-gemm-8x8-aarch64-neon", K / "f32-gemm/8x8-aarch64-neon.cc",
     AARCH64, PI5, 8, "fma", ("neoverse-n1",)),
    ("aarch64 Pi 5", "f16w-gemm-8x8-aarch64-neon", K / "f16w-gemm/8x8-aarch64-neon.cc",
     AARCH64, PI5, 8, "fma", ("neoverse-n1",)),
    ("aarch64 Pi 5", "f16-gemm-4x16-neonfp16arith", K / "f16w-gemm/4x16-neonfp16arith.cc",
     AARCH64, PI5_NEONFP16ARITH, 4, "hfma", ("neoverse-n1",)),
    ("aarch64 Pi 5", "qd8-...-8x8c4-neondot", K / "qd8-f32-qc8w-gemm/8x8c4-neondot.cc",
     AARCH64, PI5_NEONDOT, 8, "sdot", ("neoverse-n1",)),
    # LLVM has AArch32 scheduling models for the Cortex-A57 (used by cortex-a72) but none for the
    # A7/A15/A53 in AArch32.
    ("armv7", "f32-gemm-4x8-aarch32-neon", K / "f32-gemm/4x8-aarch32-neon.cc",
     ARMV7, ARMV7_NEON, 4, "fma", ("cortex-a72",)),
    ("armv7", "f16w-gemm-4x8-aarch32-neon", K / "f16w-gemm/4x8-aarch32-neon.cc",
     ARMV7, ARMV7_NEON, 4, "fma", ("cortex-a72",)),
    ("armv7", "qd8-...-2x8c4-aarch32-neon", K / "qd8-f32-qc8w-gemm/2x8c4-aarch32-neon.cc",
     ARMV7, ARMV7_NEON, 2, "mull", ("cortex-a72",)),
]  # fmt: skip

# Winograd transforms: (build, kernel, source, compiler/triple, flags, cores). The functions and
# the float add/sub lanes of one channel of one tile (input: 16 B^T d sums + 16 (B^T d) B sums;
# output: 16 A^T M sums + 12 for (A^T M) A and the bias).
WINOGRAD_SOURCE = K / "f32-winograd/2x2-3x3-neon.cc"
WINOGRAD = [
    ("aarch64 Pi 4", "f32-winograd-2x2-3x3-neon", WINOGRAD_SOURCE, AARCH64, PI4,
     ("cortex-a53", "cortex-a72", "neoverse-n1")),
    ("aarch64 Pi 5", "f32-winograd-2x2-3x3-neon", WINOGRAD_SOURCE, AARCH64, PI5, ("neoverse-n1",)),
    # -marm: llvm-mca reads the loop as A32 code (Debian's armhf GCC defaults to Thumb-2, whose
    # encodings it rejects); the instructions are the same NEON ones.
    ("armv7", "f32-winograd-2x2-3x3-neon", WINOGRAD_SOURCE, ARMV7, ARMV7_NEON + ["-marm"],
     ("cortex-a72",)),
]  # fmt: skip
WINOGRAD_FUNCTIONS = [("input", 14, 32), ("output", 15, 28)]  # (name, len(name) + 6, lanes)
# Float add/sub instructions: (regex, lanes).
FLOAT_ADDS = [
    (re.compile(r"^\s+f(add|sub)\s+v\d+\.4s", re.M), 4),
    (re.compile(r"^\s+f(add|sub)\s+s\d+", re.M), 1),
    (re.compile(r"^\s+v(add|sub)\.f32\s+q", re.M), 4),
    (re.compile(r"^\s+v(add|sub)\.f32\s+d", re.M), 2),
    (re.compile(r"^\s+v(add|sub)\.f32\s+s", re.M), 1),
]
# llvm-mca resources by kind: load/store (A57 L and S, N1 L and the store data pipes D, the A53's
# LdSt; N1UnitS is an integer pipe) and vector/FP (A57 F0/F1 = W/X, N1 V0/V1, the A53's FPALU).
LOAD_STORE_UNITS = re.compile(r"^(A57Unit[LS]|N1Unit[LD]|A53UnitLdSt)$")
VECTOR_UNITS = re.compile(r"^(A57Unit[WX]|N1UnitV\d?|A53UnitFPALU)$")

# The int8 fallback vs the f32 kernel, same build and core, full tiles: (build, core, int8 kernel,
# f32 kernel, held to RATIO_GOAL). armv7 is shown for information only: the AArch32 A57 model
# runs the f32 kernel above the A72's documented FMA peak (see the notes printed at the end).
RATIOS = [
    ("aarch64 Pi 4", "cortex-a72", "qd8-...-4x8c4-aarch64-neon", "f32-gemm-8x8-aarch64-neon", True),
    ("armv7", "cortex-a72", "qd8-...-2x8c4-aarch32-neon", "f32-gemm-4x8-aarch32-neon", False),
]
RATIO_GOAL = 1.8


def find_tool(*names):
    for n in names:
        if shutil.which(n):
            return n
    return None


def kernel_loops(asm: str, rows: int, mac_re: re.Pattern):
    """The self-looping basic blocks of gemm_ukernel<rows>, as (mac_instructions, block_text)."""
    # lrk::(anonymous namespace)::gemm_ukernel<rows>: std::size_t is unsigned long (m) on aarch64,
    # unsigned int (j) on armv7.
    mangled = re.compile(rf"^(_ZN3lrk12_GLOBAL__N_112gemm_ukernelIL[mj]{rows}EEEv\w*):", re.M)
    m = mangled.search(asm)
    if not m:
        raise SystemExit(
            f"lrk::(anonymous namespace)::gemm_ukernel<{rows}> not found in the assembly"
        )
    body = asm[m.end() :]
    end = re.search(r"^\s+\.(size|cfi_endproc|fnend)", body, re.M)
    body = body[: end.start()] if end else body
    blocks = []
    for lm in re.finditer(r"^(\.L\d+):\n", body, re.M):
        label = lm.group(1)
        rest = body[lm.end() :]
        br = re.search(rf"^\s+(b\.\w+|b\w*|bne|bcs|bhi|bcc)\s+{re.escape(label)}\s*$", rest, re.M)
        if not br:
            continue
        block = rest[: br.end()]
        if re.search(r"^\.L\d+:", block, re.M):  # other labels inside: not a simple loop
            continue
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.strip().startswith(".")]
        text = "\n".join(lines) + "\n"
        blocks.append((len(mac_re.findall(text)), text))
    return sorted(blocks, key=lambda b: -b[0])


def function_body(asm: str, mangled_prefix: str) -> str:
    """The assembly of the first function whose mangled name starts with mangled_prefix."""
    m = re.search(rf"^({re.escape(mangled_prefix)}\w*):", asm, re.M)
    if not m:
        raise SystemExit(f"{mangled_prefix}... not found in the assembly")
    body = asm[m.end() :]
    end = re.search(r"^\s+\.(size|cfi_endproc|fnend)", body, re.M)
    return body[: end.start()] if end else body


def float_add_lanes(text: str) -> tuple[int, int]:
    """(float add/sub lanes, of which in q-register / 4s instructions) in text."""
    total = vector = 0
    for rx, lanes in FLOAT_ADDS:
        n = len(rx.findall(text)) * lanes
        total += n
        vector += n if lanes == 4 else 0
    return total, vector


def add_loop(body: str):
    """The loop with the most vector float add/sub lanes (the shortest of those, so not a loop
    around it that only adds the scalar channel tail): a label to its last backward branch,
    labels and directives dropped (branches inside are taken as not taken). None without one."""
    best = None
    for lm in re.finditer(r"^(\.L\w+):\n", body, re.M):
        label = lm.group(1)
        rest = body[lm.end() :]
        branch = rf"^\s+(?:b[\w.]*|cbn?z|tbn?z)\s+(?:[^\n]*,\s*)?{re.escape(label)}\s*$"
        brs = list(re.finditer(branch, rest, re.M))
        if not brs:
            continue
        block = rest[: brs[-1].end()]
        lines = [
            ln
            for ln in block.splitlines()
            if ln.strip() and not ln.strip().startswith(".") and not re.match(r"^\.?\w+:", ln)
        ]
        text = "\n".join(lines) + "\n"
        lanes, vector = float_add_lanes(text)
        key = (vector, -len(lines))
        if vector > 0 and (best is None or key > best[0]):
            best = (key, lanes, vector, len(lines), text)
    return best[1:] if best else None


def unit_pressure(mca_stdout: str) -> tuple[float, float]:
    """Per-iteration pressure of the busiest load/store unit and of the busiest vector unit."""
    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\w+)", mca_stdout, re.M))
    m = re.search(r"^Resource pressure per iteration:\n(.*)\n(.*)\n", mca_stdout, re.M)
    if not m:
        return float("nan"), float("nan")
    ids = re.findall(r"\[([\d.]+)\]", m.group(1))
    values = [0.0 if v == "-" else float(v) for v in m.group(2).split()]
    ls = max(
        (v for i, v in zip(ids, values) if LOAD_STORE_UNITS.match(names.get(i, ""))), default=0
    )
    vec = max((v for i, v in zip(ids, values) if VECTOR_UNITS.match(names.get(i, ""))), default=0)
    return ls, vec


def mca_cycles(mca: str, triple: str, core: str, loop_path) -> tuple:
    """(cycles per iteration over 500 iterations or None, llvm-mca's stdout, its first error line)
    for the loop in loop_path on -mcpu=core."""
    out = subprocess.run(
        [mca, f"-mtriple={triple}", f"-mcpu={core}", "-iterations=500", str(loop_path)],
        capture_output=True,
        text=True,
    )
    cyc = re.search(r"Total Cycles:\s+(\d+)", out.stdout)
    if not cyc:
        err = out.stderr.strip().splitlines()
        return None, out.stdout, err[0] if err else "no result"
    return int(cyc.group(1)) / 500, out.stdout, ""


def winograd_report(mca: str, tmp: str, show_loops: bool) -> None:
    print(
        "\nWinograd F(2x2, 3x3) transforms: the channel-block loop of one tile; cycles per\n"
        "iteration and per channel of one tile; busiest load/store and vector unit, % of cycles\n"
    )
    header = (
        f"{'build':13s} {'function':27s} {'-mcpu':11s} {'model':11s} {'insts':>5s} {'lanes':>5s} "
        f"{'vec':>4s} {'ch':>4s} {'cycles':>7s} {'cyc/ch':>6s} {'L/S %':>6s} {'vec %':>6s}"
    )
    print(header)
    print("-" * len(header))
    for build, kernel, source, (cxx, triple), flags, cores in WINOGRAD:
        if not shutil.which(cxx):
            print(f"{build:13s} {kernel:27s} skipped: {cxx} not installed")
            continue
        asm_path = Path(tmp) / "w.s"
        subprocess.run(
            [cxx, "-std=c++17", "-O3", *flags, f"-I{ROOT / 'cpp/include'}", "-S", str(source),
             "-o", str(asm_path)],
            check=True,
        )  # fmt: skip
        asm = asm_path.read_text()
        for fn, name_len, lanes_per_channel in WINOGRAD_FUNCTIONS:
            body = function_body(asm, f"_ZN3lrk12_GLOBAL__N_1{name_len}winograd_{fn}E")
            label = f"{kernel.replace('-2x2-3x3-neon', '')} {fn}"
            found = add_loop(body)
            if found is None:
                lanes, _ = float_add_lanes(body)
                print(
                    f"{build:13s} {label:27s} not vectorized: {lanes} scalar float add/sub "
                    "instructions, none on q registers (no channel-block loop to measure)"
                )
                continue
            lanes, vector, insts, loop = found
            loop_path = Path(tmp) / "wloop.s"
            loop_path.write_text(loop)
            if show_loops:
                print(f"--- {build} {kernel} {fn}\n{loop}")
            channels = lanes / lanes_per_channel
            for core in cores:
                per_iter, stdout, err = mca_cycles(mca, triple, core, loop_path)
                start = f"{build:13s} {label:27s} {core:11s}"
                if per_iter is None:
                    print(f"{start} llvm-mca: {err}")
                    continue
                ls, vec = unit_pressure(stdout)
                print(
                    f"{start} {model_name(stdout):11s} {insts:5d} {lanes:5d} "
                    f"{100 * vector / max(lanes, 1):3.0f}% {channels:4.1f} {per_iter:7.1f} "
                    f"{per_iter / channels:6.2f} {100 * ls / per_iter:5.0f}% "
                    f"{100 * vec / per_iter:5.0f}%"
                )


def model_name(mca_stdout: str) -> str:
    """The scheduling model llvm-mca used, from its resource names (A57UnitB -> Cortex-A57)."""
    m = re.search(r"^\[[\d.]+\]\s+-\s+(\w+?)Unit", mca_stdout, re.M)
    if not m:
        return "none"
    prefix = m.group(1)
    if prefix.startswith("Cortex"):
        prefix = prefix[len("Cortex") :]
    names = {"N1": "Neoverse-N1", "N2": "Neoverse-N2", "V1": "Neoverse-V1"}
    return names.get(prefix, f"Cortex-{prefix}" if re.match(r"A\d", prefix) else prefix)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--show-loops", action="store_true", help="print the analysed assembly")
    args = ap.parse_args()
    mca = find_tool(
        "llvm-mca-19",
        "llvm-mca-18",
        "llvm-mca-17",
        "llvm-mca-16",
        "llvm-mca-15",
        "llvm-mca",
        "llvm-mca-14",
    )
    if mca is None:
        print("llvm-mca not found (Debian: apt-get install llvm-19): no NEON estimates")
        return 0
    version = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"LLVM version ([\d.]+)", version)
    print(
        f"llvm-mca {version.group(1) if version else '?'}: cycles per inner-loop iteration, "
        f"MACs per cycle vs the core's MAC peak for the instruction kind\n"
    )
    header = (
        f"{'build':13s} {'kernel':27s} {'rows':>4s} {'-mcpu':11s} {'model':11s} {'kind':4s} "
        f"{'insts':>5s} {'MACs':>5s} {'cycles':>7s} {'MAC/cyc':>7s} {'peak':>4s} {'peak %':>6s}"
    )
    print(header)
    print("-" * len(header))
    results = {}  # (build, kernel, rows, core) -> MACs per cycle
    with tempfile.TemporaryDirectory() as tmp:
        for build, kernel, source, (cxx, triple), flags, mr, kind, cores in KERNELS:
            if not shutil.which(cxx):
                print(f"{build:13s} {kernel:27s} skipped: {cxx} not installed")
                continue
            asm_path = Path(tmp) / "k.s"
            subprocess.run(
                [
                    cxx,
                    "-std=c++17",
                    "-O3",
                    *flags,
                    f"-I{ROOT / 'cpp/include'}",
                    "-S",
                    str(source),
                    "-o",
                    str(asm_path),
                ],
                check=True,
            )
            asm = asm_path.read_text()
            mac_re, macs_per_inst = KINDS[kind]
            for rows in (mr, 1):
                insts, loop = kernel_loops(asm, rows, mac_re)[0]
                loop_path = Path(tmp) / "loop.s"
                loop_path.write_text(loop)
                if args.show_loops:
                    print(f"--- {build} {kernel} rows={rows}\n{loop}")
                macs = insts * macs_per_inst
                for core in cores:
                    per_iter, stdout, err = mca_cycles(mca, triple, core, loop_path)
                    start = f"{build:13s} {kernel:27s} {rows:4d} {core:11s}"
                    if per_iter is None:
                        print(f"{start} llvm-mca: {err}")
                        continue
                    rate = macs / per_iter
                    results[(build, kernel, rows, core)] = rate
                    peak = PEAKS.get((core, kind))
                    peak_text = (
                        f"{peak:4d} {100 * rate / peak:5.1f}%" if peak else f"{'?':>4s} {'':6s}"
                    )
                    print(
                        f"{start} {model_name(stdout):11s} {kind:4s} {insts:5d} {macs:5d} "
                        f"{per_iter:7.1f} {rate:7.2f} {peak_text}"
                    )
        winograd_report(mca, tmp, args.show_loops)
    print()
    for build, core, int8, f32, held in RATIOS:
        mr8 = next((k[5] for k in KERNELS if k[0] == build and k[1] == int8), None)
        mr32 = next((k[5] for k in KERNELS if k[0] == build and k[1] == f32), None)
        a = results.get((build, int8, mr8, core))
        b = results.get((build, f32, mr32, core))
        if a is None or b is None:
            continue
        if held:
            verdict = f"{'meets' if a / b >= RATIO_GOAL else 'MISSES'} the {RATIO_GOAL}x goal"
        else:
            verdict = "information only: the model's f32 figure is above the documented peak"
        print(
            f"{build}, -mcpu={core}: int8 {int8} {a:.2f} MACs/cycle vs f32 {f32} {b:.2f}: "
            f"{a / b:.2f}x ({verdict})"
        )
    print(
        "\nNotes: LLVM's cortex-a72/a76/a78 CPUs use the Cortex-A57 model (1 FMA pipe modelled;\n"
        "the A76/A78 have 2): the A76-class rows use -mcpu=neoverse-n1 and its own model.\n"
        "The N1 model issues FCVTL (fp16 -> f32) on V0 only, 2 cycles each: the f16w kernels\n"
        "cannot reach the FMA peak there (8x8: at best (64 FMLA + 16 FCVTL cycles) / 2 pipes =\n"
        "40 cycles per 4 k), and GEMV (1 row) is conversion-bound at 2 weights per cycle\n"
        "(4 bytes: 9.6 GB/s at 2.4 GHz, about a Pi 5's DRAM bandwidth).\n"
        "It issues FCVTN / FCVTL (the f16 kernel's A conversions and f32 spills) as 2 V0 uops:\n"
        "per 32 k the 4x16 tile's 256 FMLA .8h come with 32 FCVTN(2), 16 FCVTL(2), 16 FADD and\n"
        "8 MOV (zeroing): 376 pipe cycles, at best 188 cycles = 10.9 fp16 MACs per cycle (68%).\n"
        "LLVM's AArch32 Cortex-A57 model lets a Q-form VMLA issue on both FP pipes, which the A72\n"
        "documents as one 128-bit FMA per cycle: armv7 f32 figures above 100% mean FMA-bound, and\n"
        "the armv7 int8/f32 ratio is understated by as much."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
