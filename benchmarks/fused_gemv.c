/* Batch-1 products y = W x for weights stored (out, in) row-major, single-threaded, accumulated in float32.
 *
 * Built at run time by benchmarks/bench_fused_gemv.py (gcc -O3 -march=native -shared) and called through
 * ctypes; a sizing experiment for issue 20, not a library kernel.
 *
 *   gemv_f32  : W float32                                   (the control, written like the other two)
 *   gemv_bf16 : W bfloat16 bits (uint16), widened in registers: a bf16 is the high half of a float32
 *   gemv_i8   : W int8 with one float32 scale per output row: y[r] = scale[r] * sum_i W[r, i] x[i]
 *
 * The AVX2 paths read each row in blocks of 256 bits and widen the block to float32 in registers with shifts,
 * so the lanes come out in a fixed permutation of the inputs; x is permuted the same way once per call (into
 * `xs`, a caller-provided scratch of `in` floats), so the inner loop is loads, shifts, converts and FMAs only.
 * Four rows are done at a time with their own accumulators (independent FMA chains, x loaded once per block
 * for all four), and the same columns of the next four rows are prefetched: the bf16 and int8 loops spend more
 * instructions per byte than the fp32 one, so the out-of-order window alone keeps too few cache misses in flight
 * (without the prefetch a GPT-2 decode step's int8 products took 1.4-1.6x as long on this machine, bf16 1.15x,
 * fp32 the same). Every function has a plain C fallback without AVX2, and a scalar tail for inputs that are
 * not a multiple of the block.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __AVX2__
#include <immintrin.h>

/* The cache lines at `p` and at the same column of the three rows after it. Prefetches do not fault, so the
 * rows past the last one may be named. */
static void prefetch_rows(const void *p, int64_t row_bytes) {
    const char *c = (const char *)p;
    _mm_prefetch(c, _MM_HINT_T0);
    _mm_prefetch(c + row_bytes, _MM_HINT_T0);
    _mm_prefetch(c + 2 * row_bytes, _MM_HINT_T0);
    _mm_prefetch(c + 3 * row_bytes, _MM_HINT_T0);
}

static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

static float bf16_to_float(uint16_t bits) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)bits << 16;
    return v.f;
}

int has_avx2(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

/* ---- float32 -------------------------------------------------------------------------------------------- */

static float dot_f32_tail(const float *w, const float *x, int64_t from, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = from; i < n; i++) acc += w[i] * x[i];
    return acc;
}

void gemv_f32(const float *w, const float *x, float *y, float *xs, int64_t out, int64_t in) {
    (void)xs;  /* no permutation needed: lanes are in input order */
    int64_t r = 0;
#ifdef __AVX2__
    const int64_t body = in - in % 16;
    for (; r + 4 <= out; r += 4) {
        const float *w0 = w + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        for (int64_t i = 0; i < body; i += 16) {
            const __m256 xa = _mm256_loadu_ps(x + i), xb = _mm256_loadu_ps(x + i + 8);
            prefetch_rows(w3 + in + i, in * 4);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xa, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xa, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xa, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xa, a3);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i + 8), xb, b0);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i + 8), xb, b1);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i + 8), xb, b2);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i + 8), xb, b3);
        }
        y[r] = hsum(_mm256_add_ps(a0, b0)) + dot_f32_tail(w0, x, body, in);
        y[r + 1] = hsum(_mm256_add_ps(a1, b1)) + dot_f32_tail(w1, x, body, in);
        y[r + 2] = hsum(_mm256_add_ps(a2, b2)) + dot_f32_tail(w2, x, body, in);
        y[r + 3] = hsum(_mm256_add_ps(a3, b3)) + dot_f32_tail(w3, x, body, in);
    }
#endif
    for (; r < out; r++) y[r] = dot_f32_tail(w + r * in, x, 0, in);
}

/* ---- bfloat16 ------------------------------------------------------------------------------------------- */

static float dot_bf16_tail(const uint16_t *w, const float *x, int64_t from, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = from; i < n; i++) acc += bf16_to_float(w[i]) * x[i];
    return acc;
}

/* A block is 16 bf16 = 8 32-bit words; word k holds inputs 2k (low half) and 2k + 1 (high half).
 * even lanes: word << 16; odd lanes: word & 0xffff0000. xs holds, per block, x[2k] for k = 0..7, then x[2k+1]. */
void gemv_bf16(const uint16_t *w, const float *x, float *y, float *xs, int64_t out, int64_t in) {
    int64_t r = 0;
#ifdef __AVX2__
    const int64_t body = in - in % 16;
    for (int64_t i = 0; i < body; i += 16)
        for (int k = 0; k < 8; k++) {
            xs[i + k] = x[i + 2 * k];
            xs[i + 8 + k] = x[i + 2 * k + 1];
        }
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    for (; r + 4 <= out; r += 4) {
        const uint16_t *w0 = w + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        for (int64_t i = 0; i < body; i += 16) {
            const __m256 xe = _mm256_loadu_ps(xs + i), xo = _mm256_loadu_ps(xs + i + 8);
            prefetch_rows(w3 + in + i, in * 2);
#define BF16_ROW(a, b, wr)                                                                   \
            {                                                                                \
                const __m256i v = _mm256_loadu_si256((const __m256i *)(wr + i));             \
                a = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe, a);  \
                b = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, high)), xo, b); \
            }
            BF16_ROW(a0, b0, w0)
            BF16_ROW(a1, b1, w1)
            BF16_ROW(a2, b2, w2)
            BF16_ROW(a3, b3, w3)
#undef BF16_ROW
        }
        y[r] = hsum(_mm256_add_ps(a0, b0)) + dot_bf16_tail(w0, x, body, in);
        y[r + 1] = hsum(_mm256_add_ps(a1, b1)) + dot_bf16_tail(w1, x, body, in);
        y[r + 2] = hsum(_mm256_add_ps(a2, b2)) + dot_bf16_tail(w2, x, body, in);
        y[r + 3] = hsum(_mm256_add_ps(a3, b3)) + dot_bf16_tail(w3, x, body, in);
    }
#else
    (void)xs;
#endif
    for (; r < out; r++) y[r] = dot_bf16_tail(w + r * in, x, 0, in);
}

/* ---- int8, per-row scale -------------------------------------------------------------------------------- */

static float dot_i8_tail(const int8_t *w, const float *x, int64_t from, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = from; i < n; i++) acc += (float)w[i] * x[i];
    return acc;
}

/* A block is 32 int8 = 8 32-bit words; byte j of word k is input 4k + j. Byte j, sign-extended to 32 bits,
 * is (word << (24 - 8j)) >> 24 (arithmetic): byte 3 needs only the right shift. xs holds, per block,
 * x[4k + j] for k = 0..7 at xs[block + 8j + k]. */
void gemv_i8(const int8_t *w, const float *scale, const float *x, float *y, float *xs, int64_t out, int64_t in) {
    int64_t r = 0;
#ifdef __AVX2__
    const int64_t body = in - in % 32;
    for (int64_t i = 0; i < body; i += 32)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 8; k++) xs[i + 8 * j + k] = x[i + 4 * k + j];
    for (; r + 4 <= out; r += 4) {
        const int8_t *w0 = w + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        for (int64_t i = 0; i < body; i += 32) {
            const __m256 x0 = _mm256_loadu_ps(xs + i), x1 = _mm256_loadu_ps(xs + i + 8);
            const __m256 x2 = _mm256_loadu_ps(xs + i + 16), x3 = _mm256_loadu_ps(xs + i + 24);
            prefetch_rows(w3 + in + i, in);
#define I8_ROW(a, b, wr)                                                                                   \
            {                                                                                              \
                const __m256i v = _mm256_loadu_si256((const __m256i *)(wr + i));                           \
                a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24)), x0, a); \
                b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 16), 24)), x1, b); \
                a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 8), 24)), x2, a);  \
                b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(v, 24)), x3, b);                  \
            }
            I8_ROW(a0, b0, w0)
            I8_ROW(a1, b1, w1)
            I8_ROW(a2, b2, w2)
            I8_ROW(a3, b3, w3)
#undef I8_ROW
        }
        y[r] = scale[r] * (hsum(_mm256_add_ps(a0, b0)) + dot_i8_tail(w0, x, body, in));
        y[r + 1] = scale[r + 1] * (hsum(_mm256_add_ps(a1, b1)) + dot_i8_tail(w1, x, body, in));
        y[r + 2] = scale[r + 2] * (hsum(_mm256_add_ps(a2, b2)) + dot_i8_tail(w2, x, body, in));
        y[r + 3] = scale[r + 3] * (hsum(_mm256_add_ps(a3, b3)) + dot_i8_tail(w3, x, body, in));
    }
#else
    (void)xs;
#endif
    for (; r < out; r++) y[r] = scale[r] * dot_i8_tail(w + r * in, x, 0, in);
}
