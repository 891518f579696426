# Generic 64-bit ARM Linux: baseline ARMv8-A (NEON, no CRC/fp16/dotprod), runs on any aarch64 board.
# qemu emulates a Cortex-A53, the plainest ARMv8-A core it knows.
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH aarch64)
set(LRK_CPU_FLAGS "-march=armv8-a")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a53)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
