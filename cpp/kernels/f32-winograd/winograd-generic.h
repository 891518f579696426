// Winograd F(2x2, 3x3) transforms (Lavin & Gray), written as fixed-width loops over blocks of
// contiguous channels that the compiler turns into SIMD registers.
//
// Included by each per-ISA kernel file inside its own anonymous namespace, after it defines
// kBlock (channels per block: one or two vectors of its ISA), so every ISA gets its own TU-local
// copy vectorized with that file's flags. The 16 points of a tile are xi = 4 * i + j.
//   input:  V = B^T d B,  B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]  (d: a 4x4 input tile)
//   output: Y = A^T M A,  A^T = [1 1 1 0; 0 1 -1 -1]                     (Y: a 2x2 output tile)
// Only additions: the transforms add no rounding beyond that of the sums (the weights' G g G^T,
// with its halves, is computed once in double at construction).

// B channels of one tile: column j of row i at rows[i] + j * cs, point xi to v + xi * vs.
template <std::size_t B>
inline void winograd_input_block(const float* const* rows, std::size_t cs, float* v,
                                 std::size_t vs) {
  float b[4][4][B];  // B^T d: rows combined, per column j
  for (std::size_t j = 0; j < 4; ++j) {
    const float* d0 = rows[0] + j * cs;
    const float* d1 = rows[1] + j * cs;
    const float* d2 = rows[2] + j * cs;
    const float* d3 = rows[3] + j * cs;
    for (std::size_t k = 0; k < B; ++k) {
      b[0][j][k] = d0[k] - d2[k];
      b[1][j][k] = d1[k] + d2[k];
      b[2][j][k] = d2[k] - d1[k];
      b[3][j][k] = d1[k] - d3[k];
    }
  }
  // (B^T d) B: columns combined. One loop per output point: stores to two points in one loop
  // could overlap (vs < B) for all the compiler knows, and GCC then leaves the loop scalar.
  // Unrolled, so that b stays in registers (GCC keeps the rolled loop's b on the stack).
#pragma GCC unroll 4
  for (std::size_t i = 0; i < 4; ++i) {
    float* o = v + 4 * i * vs;
    for (std::size_t k = 0; k < B; ++k) o[k] = b[i][0][k] - b[i][2][k];
    for (std::size_t k = 0; k < B; ++k) o[vs + k] = b[i][1][k] + b[i][2][k];
    for (std::size_t k = 0; k < B; ++k) o[2 * vs + k] = b[i][2][k] - b[i][1][k];
    for (std::size_t k = 0; k < B; ++k) o[3 * vs + k] = b[i][1][k] - b[i][3][k];
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
      winograd_input_block<kBlock>(r, channels, v + t * ldv + c, v_stride);
    }
    for (; c < channels; ++c) {
      const float* r[4] = {rows[0] + at + c, rows[1] + at + c, rows[2] + at + c, rows[3] + at + c};
      winograd_input_block<1>(r, channels, v + t * ldv + c, v_stride);
    }
  }
}

// B channels of one tile: point xi at m + xi * ms; o[2 * i + j] gets output (i, j) + bias.
template <std::size_t B>
inline void winograd_output_block(const float* m, std::size_t ms, const float* bias,
                                  float* const* o) {
  float a[2][4][B];  // A^T M: rows combined, per column j
  for (std::size_t j = 0; j < 4; ++j) {
    const float* m0 = m + j * ms;
    const float* m1 = m + (4 + j) * ms;
    const float* m2 = m + (8 + j) * ms;
    const float* m3 = m + (12 + j) * ms;
    for (std::size_t k = 0; k < B; ++k) {
      a[0][j][k] = m0[k] + m1[k] + m2[k];
      a[1][j][k] = m1[k] - m2[k] - m3[k];
    }
  }
  float bv[B];
  for (std::size_t k = 0; k < B; ++k) bv[k] = bias != nullptr ? bias[k] : 0.0f;
  for (std::size_t i = 0; i < 2; ++i) {  // one loop per output, as in winograd_input_block
    float* o0 = o[2 * i];
    float* o1 = o[2 * i + 1];
    for (std::size_t k = 0; k < B; ++k) o0[k] = a[i][0][k] + a[i][1][k] + a[i][2][k] + bv[k];
    for (std::size_t k = 0; k < B; ++k) o1[k] = a[i][1][k] - a[i][2][k] - a[i][3][k] + bv[k];
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
      winograd_output_block<kBlock>(mt + c, m_stride, bias != nullptr ? bias + c : nullptr, oc);
    }
    for (; c < channels; ++c) {
      float* oc[4] = {o[0] + c, o[1] + c, o[2] + c, o[3] + c};
      winograd_output_block<1>(mt + c, m_stride, bias != nullptr ? bias + c : nullptr, oc);
    }
  }
}
