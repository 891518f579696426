// Winograd F(2x2, 3x3) transforms (Lavin & Gray), written as plain loops over contiguous channels.
//
// Included by each per-ISA kernel file inside its own anonymous namespace, so every ISA gets its
// own TU-local copy vectorized with that file's flags. The 16 points of a tile are xi = 4 * i + j.
//   input:  V = B^T d B,  B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]  (d: a 4x4 input tile)
//   output: Y = A^T M A,  A^T = [1 1 1 0; 0 1 -1 -1]                     (Y: a 2x2 output tile)
// Only additions: the transforms add no rounding beyond that of the sums (the weights' G g G^T,
// with its halves, is computed once in double at construction).

// One tile's 16 input points for `channels` channels: column j of row i is rows[i] + j * cs.
inline void winograd_input_tile(std::size_t channels, const float* __restrict r0,
                                const float* __restrict r1, const float* __restrict r2,
                                const float* __restrict r3, std::size_t cs, float* __restrict v,
                                std::size_t vs) {
  for (std::size_t c = 0; c < channels; ++c) {
    float b[4][4];  // B^T d: rows combined, per column j
    for (std::size_t j = 0; j < 4; ++j) {
      const float d0 = r0[j * cs + c], d1 = r1[j * cs + c], d2 = r2[j * cs + c],
                  d3 = r3[j * cs + c];
      b[0][j] = d0 - d2;
      b[1][j] = d1 + d2;
      b[2][j] = d2 - d1;
      b[3][j] = d1 - d3;
    }
    for (std::size_t i = 0; i < 4; ++i) {  // (B^T d) B: columns combined
      v[(4 * i + 0) * vs + c] = b[i][0] - b[i][2];
      v[(4 * i + 1) * vs + c] = b[i][1] + b[i][2];
      v[(4 * i + 2) * vs + c] = b[i][2] - b[i][1];
      v[(4 * i + 3) * vs + c] = b[i][1] - b[i][3];
    }
  }
}

// A row of tiles: tile t reads columns 2t..2t+3 of rows[0..3] (pixels of `channels` floats) and
// writes point xi of channel c to v[xi * v_stride + t * ldv + c].
inline void winograd_input(std::size_t tiles, std::size_t channels, const float* const* rows,
                           float* v, std::size_t v_stride, std::size_t ldv) {
  for (std::size_t t = 0; t < tiles; ++t) {
    const std::size_t at = 2 * t * channels;
    winograd_input_tile(channels, rows[0] + at, rows[1] + at, rows[2] + at, rows[3] + at, channels,
                        v + t * ldv, v_stride);
  }
}

// One tile's 2x2 outputs for `channels` channels: o[i][j] = (A^T M A)[i][j] + bias.
inline void winograd_output_tile(std::size_t channels, const float* __restrict m, std::size_t ms,
                                 const float* __restrict bias, float* __restrict o00,
                                 float* __restrict o01, float* __restrict o10,
                                 float* __restrict o11) {
  for (std::size_t c = 0; c < channels; ++c) {
    float a[2][4];  // A^T M: rows combined, per column j
    for (std::size_t j = 0; j < 4; ++j) {
      const float m0 = m[j * ms + c], m1 = m[(4 + j) * ms + c], m2 = m[(8 + j) * ms + c],
                  m3 = m[(12 + j) * ms + c];
      a[0][j] = m0 + m1 + m2;
      a[1][j] = m1 - m2 - m3;
    }
    const float b = bias != nullptr ? bias[c] : 0.0f;
    o00[c] = a[0][0] + a[0][1] + a[0][2] + b;
    o01[c] = a[0][1] - a[0][2] - a[0][3] + b;
    o10[c] = a[1][0] + a[1][1] + a[1][2] + b;
    o11[c] = a[1][1] - a[1][2] - a[1][3] + b;
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
    float* o00 = out0 + x0 * ldo;
    float* o01 = second_col ? o00 + ldo : spill;
    float* o10 = out1 != nullptr ? out1 + x0 * ldo : spill + channels;
    float* o11 = out1 != nullptr && second_col ? o10 + ldo : spill + 2 * channels;
    winograd_output_tile(channels, m + t * ldm, m_stride, bias, o00, o01, o10, o11);
  }
}
