# Settings shared by every ARM Linux toolchain file in this folder; included by the board files
# (aarch64-linux-gnu.cmake, raspberry-pi-*.cmake, jetson-*.cmake), not used on its own.
#
# The board file sets, before including this file:
#   LRK_CROSS_ARCH  aarch64 | armv7
#   LRK_CPU_FLAGS   the board's -mcpu/-march flags (go to CMAKE_<LANG>_FLAGS_INIT)
#   LRK_QEMU_CPU    the qemu -cpu model CMAKE_CROSSCOMPILING_EMULATOR uses (unless set with -D)
#
# The target sysroot (Debian CPython 3.11 headers and runtime, built by scripts/arm/setup-sysroot.sh)
# comes from -DLRK_SYSROOT=..., else the environment variable LRK_SYSROOT, else
# $LRK_CACHE/sysroot-<arch> (LRK_CACHE defaults to ~/.cache/lrkernels-arm). The compilers come from
# Debian's g++-aarch64-linux-gnu / g++-arm-linux-gnueabihf, with their own libc in /usr/<triple>;
# the sysroot is only searched after them (for Python's headers) and used to run things under qemu.
#
# CMake reads a toolchain file again for every try_compile; everything here must be re-entrant.

if(LRK_CROSS_ARCH STREQUAL "aarch64")
  set(CMAKE_SYSTEM_PROCESSOR aarch64)
  set(LRK_TRIPLE aarch64-linux-gnu)
  set(_lrk_qemu qemu-aarch64)
elseif(LRK_CROSS_ARCH STREQUAL "armv7")
  set(CMAKE_SYSTEM_PROCESSOR armv7l)
  set(LRK_TRIPLE arm-linux-gnueabihf)
  set(_lrk_qemu qemu-arm)
else()
  message(FATAL_ERROR "common-linux-cross.cmake: LRK_CROSS_ARCH must be aarch64 or armv7, "
                      "got '${LRK_CROSS_ARCH}' (use one of the board toolchain files)")
endif()
set(CMAKE_SYSTEM_NAME Linux)

# ---- compilers ------------------------------------------------------------------------------------
set(CMAKE_C_COMPILER ${LRK_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${LRK_TRIPLE}-g++)

# ---- target sysroot -------------------------------------------------------------------------------
if(NOT LRK_SYSROOT)
  if(DEFINED ENV{LRK_SYSROOT} AND NOT "$ENV{LRK_SYSROOT}" STREQUAL "")
    set(LRK_SYSROOT "$ENV{LRK_SYSROOT}")
  elseif(DEFINED ENV{LRK_CACHE} AND NOT "$ENV{LRK_CACHE}" STREQUAL "")
    set(LRK_SYSROOT "$ENV{LRK_CACHE}/sysroot-${LRK_CROSS_ARCH}")
  else()
    set(LRK_SYSROOT "$ENV{HOME}/.cache/lrkernels-arm/sysroot-${LRK_CROSS_ARCH}")
  endif()
endif()
set(LRK_SYSROOT "${LRK_SYSROOT}" CACHE PATH "Target sysroot (scripts/arm/setup-sysroot.sh)")
# try_compile projects re-read this file without our cache: hand the value on both ways.
set(ENV{LRK_SYSROOT} "${LRK_SYSROOT}")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES LRK_SYSROOT)

set(CMAKE_FIND_ROOT_PATH "${LRK_SYSROOT}" "/usr/${LRK_TRIPLE}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)   # build tools run on the host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)    # pybind11's CMake config lives on the host

# ---- flags ----------------------------------------------------------------------------------------
# -idirafter: Debian's <python3.11/pyconfig.h> includes <${LRK_TRIPLE}/python3.11/pyconfig.h>, found
# in the sysroot's /usr/include; searched after the cross compiler's own headers, so they win.
set(CMAKE_C_FLAGS_INIT "${LRK_CPU_FLAGS} -idirafter ${LRK_SYSROOT}/usr/include")
set(CMAKE_CXX_FLAGS_INIT "${LRK_CPU_FLAGS} -idirafter ${LRK_SYSROOT}/usr/include")

# ---- Python (headers only: a cross build cannot run the target interpreter to ask it) -------------
set(_lrk_pyinc "${LRK_SYSROOT}/usr/include/python3.11")
if(NOT EXISTS "${_lrk_pyinc}/Python.h")
  message(WARNING "lrkernels toolchain: no ${_lrk_pyinc}/Python.h; run "
                  "scripts/arm/setup-sysroot.sh ${LRK_CROSS_ARCH} or set LRK_SYSROOT")
endif()
set(Python_INCLUDE_DIR "${_lrk_pyinc}" CACHE PATH "Target Python headers (cross-compiling)")
set(Python3_INCLUDE_DIR "${_lrk_pyinc}" CACHE PATH "Target Python headers (cross-compiling)")
# The module's file suffix, for pybind11. Under scikit-build-core (scripts/arm/build-wheel.sh)
# SETUPTOOLS_EXT_SUFFIX / SKBUILD_SOABI give it; for a plain CMake build, the target's EXT_SUFFIX.
if(NOT DEFINED ENV{SETUPTOOLS_EXT_SUFFIX})
  set(PYTHON_MODULE_EXT_SUFFIX ".cpython-311-${LRK_TRIPLE}.so" CACHE STRING
      "Target Python extension suffix (cross-compiling)")
endif()

# ---- running target programs (CTest, try_run) under qemu user-mode emulation ----------------------
if(NOT LRK_QEMU_CPU)
  set(LRK_QEMU_CPU max)
endif()
find_program(LRK_QEMU_EXECUTABLE ${_lrk_qemu})
if(NOT LRK_QEMU_EXECUTABLE)
  set(LRK_QEMU_EXECUTABLE ${_lrk_qemu})   # not installed yet: the name, for PATH at run time
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR "${LRK_QEMU_EXECUTABLE};-cpu;${LRK_QEMU_CPU};-L;${LRK_SYSROOT}")
