# NVIDIA Jetson Orin (Orin / Orin NX / Orin Nano: Cortex-A78AE), JetPack 6: ARMv8.2-A + fp16 + dotprod +
# rcpc (+ssbs, +profile), exactly what gcc 12's -mcpu=cortex-a78ae enables; all of it is on the A78AE.
# qemu 7.2 has no A78 model: it emulates a Cortex-A76 (ARMv8.2-A + fp16 + dotprod + rcpc).
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/jetson-orin.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH aarch64)
set(LRK_CPU_FLAGS "-mcpu=cortex-a78ae")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a76)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
