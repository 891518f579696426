# NVIDIA Jetson Nano (Tegra X1: 4x Cortex-A57): ARMv8.0-A + CRC, tuned for the A57.
# Note: the wheels need glibc 2.34+ (JetPack 6 / Ubuntu 22.04); the Nano's last JetPack 4 is Ubuntu 18.04.
# Pass as -DCMAKE_TOOLCHAIN_FILE=toolchains/jetson-nano.cmake (scripts/arm/build-wheel.sh does); target sysroot
# from -DLRK_SYSROOT / $LRK_SYSROOT (see common-linux-cross.cmake). -DLRK_QEMU_CPU=... overrides
# the CPU that qemu emulates for CTest.
set(LRK_CROSS_ARCH aarch64)
set(LRK_CPU_FLAGS "-mcpu=cortex-a57")
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU cortex-a57)
endif()
include("${CMAKE_CURRENT_LIST_DIR}/common-linux-cross.cmake")
