// Kernel families: one config struct per (operation, data type), one config per (family, ISA),
// filled field by field in cpp/src/configs/<dtype>_<op>_config.cc (XNNPACK's gemm-config.c,
// BLIS's bli_cntx_init_<arch>.c). A KernelSet gathers the families of one ISA; layers look their
// kernels up there, once per call, and packed weights remember the config they were packed for.
#pragma once

#include <cstddef>
#include <vector>

#include "lrkernels/isa.h"
#include "lrkernels/microfnptr.h"

namespace lrk {

enum class DType : int { f32 = 0, f16 = 1, qs8 = 2, qu8 = 3 };

// CPU features, finer than the ISA names: a config may require sub-ISA features (ARM dotprod or
// fp16 arithmetic, x86 VNNI or AVX512-FP16) on top of its ISA. Bit values of cpu_feature_mask().
enum CpuFeature : unsigned {
  kCpuNeon = 1u << 0,           // Advanced SIMD (armv7: with VFPv4 fused multiply-add)
  kCpuNeonFp16Arith = 1u << 1,  // ARMv8.2 FP16 arithmetic (asimdhp)
  kCpuNeonDot = 1u << 2,        // ARMv8.2 SDOT/UDOT (asimddp)
  kCpuAvx2Fma = 1u << 8,        // AVX2 + FMA3, OS saves YMM
  kCpuAvx512f = 1u << 9,        // AVX-512F, OS saves ZMM and opmasks
  kCpuAvx512Vnni = 1u << 10,    // AVX512-VNNI
  kCpuAvx512Fp16 = 1u << 11,    // AVX512-FP16
  kCpuF16c = 1u << 12,          // F16C: fp16 <-> fp32 conversions (vcvtph2ps)
  kCpuAvxVnni = 1u << 13,       // AVX-VNNI: VEX-encoded vpdpbusd on ymm
};
unsigned cpu_feature_mask();  // what this CPU (and the OS register state) supports
// The sub-ISA features a kernel lookup may use: cpu_feature_mask() less those disabled with
// set_disabled_cpu_features() (tests force the fallbacks that way: SDOT -> SMULL, VNNI -> AVX2).
unsigned enabled_cpu_features();
// Only the sub-ISA bits (kCpuOverridableFeatures) can be disabled: the ISA itself is set_isa's.
void set_disabled_cpu_features(unsigned mask);
unsigned disabled_cpu_features();
constexpr unsigned kCpuOverridableFeatures =
    kCpuNeonFp16Arith | kCpuNeonDot | kCpuAvx512Vnni | kCpuAvx512Fp16 | kCpuF16c | kCpuAvxVnni;
// /proc/cpuinfo's names ("asimddp", "avx512_vnni", ...) of the bits, and back (0 when unknown).
const char* cpu_feature_name(unsigned bit);
unsigned cpu_feature_from_name(const char* name);

// f32 GEMM family: register tile, K block, per-row micro-kernels and the weight packer.
struct F32GemmConfig {
  const char* name = nullptr;  // "f32-gemm-<mr>x<nr>-<isa>": also the kernel file's name
  Isa isa = Isa::scalar;
  unsigned required_features = 0;  // CpuFeature bits beyond the ISA itself
  DType input_type = DType::f32, weight_type = DType::f32, output_type = DType::f32;
  std::size_t input_bytes = 4, weight_bytes = 4, output_bytes = 4;  // element sizes
  std::size_t mr = 0;                                               // rows of the full tile
  std::size_t nr = 0;  // columns of the full tile = packed panel width
  std::size_t kc = 0;  // K block: a kc x nr weight panel fits in about half of L1
  // ukernel[r] computes an r x nr tile, r in 1..mr (slot 0 unused). Fewer rows than mr get their
  // own instantiation instead of wasted FMAs on padding rows.
  F32GemmUkernelFn ukernel[kMaxMr + 1] = {};
  PackGemmWeightsFn pack = nullptr;
  // Optional variant with a narrower panel for operands with at most narrow->nr output columns.
  const F32GemmConfig* narrow = nullptr;
};

// qd8-f32-qc8w GEMM family (int8): dynamically quantized int8 inputs, int8 weights with one scale
// per output channel, int32 dot products; the driver (quantized_gemm.cc) quantizes and
// dequantizes. Several rows per ISA, in order of preference, by sub-ISA feature (VNNI, dotprod).
struct QD8GemmConfig {
  const char* name = nullptr;  // "qd8-f32-qc8w-gemm-<mr>x<nr>c4-<isa or flavour>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  std::size_t mr = 0, nr = 0;
  int input_offset = 0;  // 0: A holds int8 q; 128: A holds uint8 q + 128 (u8 x s8 dot products)
  QD8GemmUkernelFn ukernel[kMaxMr + 1] = {};
  // The element-wise steps around the GEMM, compiled for the row's ISA (cpp/kernels/qd8-convert/).
  QD8RangeFn range = nullptr;
  QD8QuantizeFn quantize = nullptr;
  QD8DequantizeFn dequantize = nullptr;
};

struct F32TransposeConfig {
  const char* name = nullptr;  // "f32-transpose-<tile>-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  F32TransposeFn transpose = nullptr;
};

struct F32DwconvConfig {
  const char* name = nullptr;  // "f32-dwconv-taps-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  F32DwconvFn depthwise = nullptr;
};

struct F32WinogradConfig {
  const char* name = nullptr;  // "f32-winograd-2x2-3x3-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  F32WinogradInputFn input = nullptr;
  F32WinogradOutputFn output = nullptr;
};

struct F32ClampConfig {
  const char* name = nullptr;  // "f32-clamp-tile-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  F32ClampFn clamp = nullptr;
};

struct F32RnnConfig {
  const char* name = nullptr;  // "f32-rnn-cells-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  F32LstmCellFn lstm_cell = nullptr;
  F32GruCellFn gru_cell = nullptr;
};

struct FmaProbeConfig {
  const char* name = nullptr;  // "f32-fma-probe-<isa>"
  Isa isa = Isa::scalar;
  unsigned required_features = 0;
  FmaProbeFn probe = nullptr;
  std::size_t flops_per_iteration = 0;
};

// Each family's config for an ISA, or nullptr when the build lacks it or this CPU cannot run it.
const F32GemmConfig* f32_gemm_config(Isa isa);
const F32TransposeConfig* f32_transpose_config(Isa isa);
const F32DwconvConfig* f32_dwconv_config(Isa isa);
const F32WinogradConfig* f32_winograd_config(Isa isa);
const F32ClampConfig* f32_clamp_config(Isa isa);
const F32RnnConfig* f32_rnn_config(Isa isa);
const FmaProbeConfig* fma_probe_config(Isa isa);  // nullptr for scalar: no meaningful peak

// Reduced-precision families: the preferred row of an ISA whose features are enabled now
// (enabled_cpu_features(): looked up per call, not cached), or nullptr; and every row of the ISA
// this CPU can run, preferred first (the tests run each one).
// f16w: F32GemmConfigs with weight_type f16 (fp16 storage, f32 arithmetic).
const F32GemmConfig* f16w_gemm_config(Isa isa);
std::vector<const F32GemmConfig*> f16w_gemm_configs(Isa isa);
const QD8GemmConfig* qd8_gemm_config(Isa isa);
std::vector<const QD8GemmConfig*> qd8_gemm_configs(Isa isa);

// The kernels of one ISA, every family (BLIS's context). Every field but fma_probe is non-null.
struct KernelSet {
  Isa isa = Isa::scalar;
  const F32GemmConfig* f32_gemm = nullptr;
  const F32TransposeConfig* f32_transpose = nullptr;
  const F32DwconvConfig* f32_dwconv = nullptr;
  const F32WinogradConfig* f32_winograd = nullptr;
  const F32ClampConfig* f32_clamp = nullptr;
  const F32RnnConfig* f32_rnn = nullptr;
  const FmaProbeConfig* fma_probe = nullptr;
};
// nullptr when the ISA is not compiled into this build or not supported by this CPU.
const KernelSet* kernel_set(Isa isa);

// The generic packers of GEMM weights (cpp/src/pack.cc); configs point at them. The f16 packer
// rounds each weight to the nearest fp16 (ties to even; beyond 65504 to infinity, NaN kept).
void pack_f32_gemm_weights(const void* w, const void* bias, std::size_t n, std::size_t k,
                           std::size_t nr, void* dst);
void pack_f16_gemm_weights(const void* w, const void* bias, std::size_t n, std::size_t k,
                           std::size_t nr, void* dst);
// IEEE binary16 <-> binary32, round to nearest even (portable: the scalar kernels and the packer).
unsigned short fp16_from_float(float f);
float fp16_to_float(unsigned short h);

}  // namespace lrk
