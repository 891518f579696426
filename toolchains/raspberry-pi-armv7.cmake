# 32-bit Raspberry Pi OS (armhf) on Pi 2/3/4/5: ARMv7-A with NEON and VFPv4 (fused multiply-add), hard-float.
# Debian's armhf default has no NEON (and NEON intrinsics would not inline without it); every Pi
# from the Pi 2 (Cortex-A7) up has NEON + VFPv4. qemu emulates a Cortex-A15 (same feature set).
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/raspberry-pi-armv7.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH armv7)
set(LRK_CPU_FLAGS "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a15)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
