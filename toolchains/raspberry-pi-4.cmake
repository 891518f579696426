# Raspberry Pi 4 (BCM2711: 4x Cortex-A72), 64-bit Raspberry Pi OS: ARMv8.0-A + CRC, tuned for the A72.
# No ARMv8.2 (fp16 arithmetic, dotprod): -mcpu=cortex-a72 implies armv8-a+crc.
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/raspberry-pi-4.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH aarch64)
set(LRK_CPU_FLAGS "-mcpu=cortex-a72")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a72)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
