# Raspberry Pi 5 (BCM2712: 4x Cortex-A76), 64-bit Raspberry Pi OS: ARMv8.2-A + fp16 + dotprod + rcpc.
# The binaries need an ARMv8.2 core: they stop with SIGILL on a Pi 4 (use raspberry-pi-4.cmake there).
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/raspberry-pi-5.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH aarch64)
set(LRK_CPU_FLAGS "-mcpu=cortex-a76")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a76)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
