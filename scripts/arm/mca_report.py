#!/usr/bin/env python3
"""Static performance of the NEON micro-kernels without a board: llvm-mca on the compiler's loops.

For each target (compiler flags as in toolchains/*.cmake) this compiles the target's f32 GEMM
kernel file (cpp/kernels/f32-gemm/8x8-aarch64-neon.cc or 4x8-aarch32-neon.cc, both instantiating
neon-template.h) to assembly, finds the inner loop of the full-tile kernel (gemm_ukernel<MR>) and
of the GEMV kernel (gemm_ukernel<1>) -- the basic block that branches back to itself and holds the
most FMAs -- and asks llvm-mca for its cycles per iteration on each core. Fraction of peak = the
FMA issue cycles the core needs at its documented peak (FMAs / vector FMAs per cycle) over the
cycles llvm-mca predicts.

    python3 scripts/arm/mca_report.py   # needs the cross compilers and llvm-mca (Debian: llvm)

Timing under qemu means nothing; this is the ARM performance check that runs on a PC (and in
CI, as a report without thresholds: a kernel change shows its effect on every target core).
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
KERNELS = ROOT / "cpp/kernels/f32-gemm"
AARCH64_SOURCE = KERNELS / "8x8-aarch64-neon.cc"  # f32-gemm-8x8-aarch64-neon
ARMV7_SOURCE = KERNELS / "4x8-aarch32-neon.cc"  # f32-gemm-4x8-aarch32-neon

# name: (compiler, flags, llvm-mca triple, MR, kernel source)
TARGETS = {
    "aarch64 (Pi 4 build, -mcpu=cortex-a72)": (
        "aarch64-linux-gnu-g++",
        ["-mcpu=cortex-a72"],
        "aarch64-linux-gnu",
        8,
        AARCH64_SOURCE,
    ),
    "aarch64 (Pi 5 build, -mcpu=cortex-a76)": (
        "aarch64-linux-gnu-g++",
        ["-mcpu=cortex-a76"],
        "aarch64-linux-gnu",
        8,
        AARCH64_SOURCE,
    ),
    "armv7 (Pi 32-bit OS, neon-vfpv4)": (
        "arm-linux-gnueabihf-g++",
        ["-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard"],
        "armv7a-linux-gnueabihf",
        4,
        ARMV7_SOURCE,
    ),
}
# 128-bit FMA instructions each core completes per cycle (Arm's optimization guides): the A53's
# NEON datapath is 64 bits wide, the A57/A72 have one 128-bit FMA pipe, the A76/A78 two.
CORES = {"cortex-a53": 0.5, "cortex-a57": 1, "cortex-a72": 1, "cortex-a76": 2, "cortex-a78": 2}
# LLVM has AArch32 scheduling models for these only.
ARMV7_CORES = ("cortex-a57", "cortex-a72")
FMA_RE = re.compile(r"^\s+(fmla|vmla\.f32|vfma\.f32)\s+[vq]", re.M)


def find_tool(*names):
    for n in names:
        if shutil.which(n):
            return n
    return None


def kernel_loops(asm: str, rows: int):
    """The self-looping basic blocks of gemm_ukernel<rows>, as (fma_count, block_text)."""
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
        blocks.append((len(FMA_RE.findall(text)), text))
    return sorted(blocks, key=lambda b: -b[0])


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
        print("llvm-mca not found (Debian: apt-get install llvm-16): no NEON estimates")
        return 0
    version = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"LLVM version ([\d.]+)", version)
    print(
        f"llvm-mca {version.group(1) if version else '?'}; cycles per loop iteration, "
        f"fraction of the core's FMA peak\n"
    )
    print(f"{'build':42s} {'kernel':10s} {'FMAs':>4s} {'core':11s} {'cycles':>7s} {'peak %':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cxx, flags, triple, mr, source) in TARGETS.items():
            if not shutil.which(cxx):
                print(f"{name:42s} skipped: {cxx} not installed")
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
            for rows, label in ((mr, f"{mr}x8"), (1, "1x8 GEMV")):
                fmas, loop = kernel_loops(asm, rows)[0]
                loop_path = Path(tmp) / "loop.s"
                loop_path.write_text(loop)
                if args.show_loops:
                    print(f"--- {name} {label}\n{loop}")
                for core, fma_per_cycle in CORES.items():
                    if triple.startswith("armv7") and core not in ARMV7_CORES:
                        continue
                    out = subprocess.run(
                        [
                            mca,
                            f"-mtriple={triple}",
                            f"-mcpu={core}",
                            "-iterations=500",
                            str(loop_path),
                        ],
                        capture_output=True,
                        text=True,
                    )
                    cyc = re.search(r"Total Cycles:\s+(\d+)", out.stdout)
                    if not cyc:
                        print(
                            f"{name:42s} {label:10s} {fmas:4d} {core:11s} llvm-mca: "
                            f"{out.stderr.strip().splitlines()[0] if out.stderr else 'no result'}"
                        )
                        continue
                    per_iter = int(cyc.group(1)) / 500
                    peak = fmas / fma_per_cycle / per_iter
                    columns = f"{name:42s} {label:10s} {fmas:4d} {core:11s} {per_iter:7.1f}"
                    print(f"{columns} {100 * peak:6.1f}%")
    print(
        "\nNotes: LLVM <= 16 has no Cortex-A76/A78 scheduling model; it uses the Cortex-A57 model\n"
        "for them (1 FMA pipe modelled, they have 2), so their figures are lower bounds.\n"
        "LLVM's AArch32 Cortex-A57/A72 model lets a Q-form VMLA issue on both FP pipes, which the\n"
        "A72 documents as one 128-bit FMA per cycle: armv7 figures above 100% mean FMA-bound."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
