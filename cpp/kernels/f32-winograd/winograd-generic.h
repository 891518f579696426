// Winograd F(2x2, 3x3) transforms (Lavin & Gray), written over blocks of contiguous channels held
// in vector types.
//
// Included by each per-ISA kernel file inside its own anonymous namespace, after it defines
// kBlock (channels per block: one or two vectors of its ISA), so every ISA gets its own TU-local
// copy vectorized with that file's flags. The 16 points of a tile are xi = 4 * i + j.
//   input:  V = B^T d B,  B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]  (d: a 4x4 input tile)
//   output: Y = A^T M A,  A^T = [1 1 1 0; 0 1 -1 -1]                     (Y: a 2x2 output tile)
// Only additions: the transforms add no rounding beyond that of the sums (the weights' G g G^T,
// with its halves, is computed once in double at construction).

// A block of kBlock channels as a GCC/Clang vector: each ISA's flags lower it to its registers
// (zmm, ymm, two q registers, ...). Explicit vector types, not auto-vectorized loops: GCC leaves
// loops storing to several points it cannot prove disjoint scalar. On armv7 GCC lowers even
// vector types to scalar VFP (NEON flushes subnormals, not IEEE), so that file brings its own.
// A kernel file may define its own Block (with + and -) first: armv7's, on NEON intrinsics.
#ifndef LRK_WINOGRAD_HAS_BLOCK
typedef float Block __attribute__((vector_size(kBlock * sizeof(float))));
#endif

template <class T>
inline T load_as(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void store_as(float* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// One block (T = Block) or one channel (T = float) of a tile: column j of row i at
// rows[i] + j * cs, point xi to v + xi * vs.
template <class T>
inline void winograd_input_block(const float* const* rows, std::size_t cs, float* v,
                                 std::size_t vs) {
  T b[4][4];  // B^T d: rows combined, per column j
  for (std::size_t j = 0; j < 4; ++j) {
    const T d0 = load_as<T>(rows[0] + j * cs), d1 = load_as<T>(rows[1] + j * cs);
    const T d2 = load_as<T>(rows[2] + j * cs), d3 = load_as<T>(rows[3] + j * cs);
    b[0][j] = d0 - d2;
    b[1][j] = d1 + d2;
    b[2][j] = d2 - d1;
    b[3][j] = d1 - d3;
  }
  for (std::size_t i = 0; i < 4; ++i) {  // (B^T d) B: columns combined
    float* o = v + 4 * i * vs;
    store_as<T>(o, b[i][0] - b[i][2]);
    store_as<T>(o + vs, b[i][1] + b[i][2]);
    store_as<T>(o + 2 * vs, b[i][2] - b[i][1]);
    store_as<T>(o + 3 * vs, b[i][1] - b[i][3]);
  }
}

// A row of tiles: tile t reads columns 2t..2t+3 of rows[0..3] (pixels of `channels` floats) and
// writes point xi of channel c to v[xi * v_stride + t * ldv + c].
inline void winograd_input(std::size_t tiles, std::size_t channels, const float* const* rows,
                           float* v, std::size_t v_stride, std::size_t ldv) {
  for (std::size_t t = 0; t < tiles; ++t) {
    const std::size_t at = 2 * t * channels;
    std::size_t c = 0;
    for (; c + kBlock <= channels; c += kBlock) {
      const float* r[4] = {rows[0] + at + c, rows[1] + at + c, rows[2] + at + c, rows[3] + at + c};
      winograd_input_block<Block>(r, channels, v + t * ldv + c, v_stride);
    }
    for (; c < channels; ++c) {
      const float* r[4] = {rows[0] + at + c, rows[1] + at + c, rows[2] + at + c, rows[3] + at + c};
      winograd_input_block<float>(r, channels, v + t * ldv + c, v_stride);
    }
  }
}

// One block or channel of a tile: point xi at m + xi * ms; o[2 * i + j] gets output (i, j) + bias.
template <class T>
inline void winograd_output_block(const float* m, std::size_t ms, const float* bias,
                                  float* const* o) {
  T a[2][4];  // A^T M: rows combined, per column j
  for (std::size_t j = 0; j < 4; ++j) {
    const T m0 = load_as<T>(m + j * ms), m1 = load_as<T>(m + (4 + j) * ms);
    const T m2 = load_as<T>(m + (8 + j) * ms), m3 = load_as<T>(m + (12 + j) * ms);
    a[0][j] = m0 + m1 + m2;
    a[1][j] = m1 - m2 - m3;
  }
  const T bv = bias != nullptr ? load_as<T>(bias) : T{};
  for (std::size_t i = 0; i < 2; ++i) {
    store_as<T>(o[2 * i], a[i][0] + a[i][1] + a[i][2] + bv);
    store_as<T>(o[2 * i + 1], a[i][1] - a[i][2] - a[i][3] + bv);
  }
}

// A row of tiles: tile t reads point xi of channel c at m[xi * m_stride + t * ldm + c] and writes
// output columns 2t, 2t+1 (only those < width) of out0 and out1 (pixel stride ldo). out1 nullptr:
// the second output row is past the image and is not written.
inline void winograd_output(std::size_t tiles, std::size_t channels, const float* m,
                            std::size_t m_stride, std::size_t ldm, const float* bias,
                            std::size_t width, float* out0, float* out1, std::size_t ldo,
                            float* spill) {
  for (std::size_t t = 0; t < tiles; ++t) {
    const std::size_t x0 = 2 * t;
    const bool second_col = x0 + 1 < width;
    // Outputs past the image go to `spill` (3 x channels floats, one part per output that can be
    // past it), so the channel loop stays branch-free.
    float* o[4];
    o[0] = out0 + x0 * ldo;
    o[1] = second_col ? o[0] + ldo : spill;
    o[2] = out1 != nullptr ? out1 + x0 * ldo : spill + channels;
    o[3] = out1 != nullptr && second_col ? o[2] + ldo : spill + 2 * channels;
    const float* mt = m + t * ldm;
    std::size_t c = 0;
    for (; c + kBlock <= channels; c += kBlock) {
      float* oc[4] = {o[0] + c, o[1] + c, o[2] + c, o[3] + c};
      winograd_output_block<Block>(mt + c, m_stride, bias != nullptr ? bias + c : nullptr, oc);
    }
    for (; c < channels; ++c) {
      float* oc[4] = {o[0] + c, o[1] + c, o[2] + c, o[3] + c};
      winograd_output_block<float>(mt + c, m_stride, bias != nullptr ? bias + c : nullptr, oc);
    }
  }
}
