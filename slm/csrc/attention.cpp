// Scaled dot-product attention for short sequences on CPU, fp32, with AVX-512.
//
// libtorch's CPU attention runs its block products through MKL's sgemm, which takes its AVX2
// path on AMD processors; on a cross-encoder's shapes (head size 32-64, a few hundred tokens)
// that reached about 110 GFLOP/s of a 460 GFLOP/s machine. Here each (sequence, head) is done
// whole in cache: K^T of the valid keys is packed once, then blocks of query rows go through
// Q K^T, a masked softmax and P V with register-blocked FMA kernels. The heads are read in
// place from the projections' `[B, T, heads * head_dim]` outputs and the result is written in
// that layout too, so the head split and merge cost no copies.
//
// A `tensor` here is tch's `C_tensor`, an `at::Tensor*`. Every function catches C++ exceptions
// and returns the message in `err`. The kernels are compiled for AVX-512 only (a target pragma),
// and `lf_attention_available` says whether this processor has it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

namespace {

void set_err(char* err, size_t len, const char* msg) {
  if (len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = 0;
}

// One (sequence, head): where its rows are and how far apart (in floats).
struct Head {
  const float* q;
  int64_t q_stride;
  const float* k;
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  float* out;
  int64_t out_stride;
  int64_t rows;
  // the keys that are not masked out, in order
  const int32_t* keys;
  int64_t num_keys;
};

// Query rows per block, and key columns per block of Q K^T (in vectors of 16).
constexpr int kRowBlock = 6;
constexpr int kKeyVectors = 4;
constexpr int kKeyBlock = 16 * kKeyVectors;

#pragma GCC push_options
#pragma GCC target("avx512f")

// e^x for x <= 0 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial for e^r; relative error
// about 1e-7). Inputs below -87.3 give 0 or a subnormal, as expf does.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// Transposes a 16x16 tile held as 16 rows in registers, in place.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 2]);
    const __m512d c = _mm512_castps_pd(t[i + 1]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// K^T of the valid keys, `dim` rows of `cols` floats (zero past the last key), 16x16 tiles
// at a time.
template <int kDimVectors>
void pack_keys_transposed(const Head& h, int64_t cols, float* kt) {
  for (int64_t j0 = 0; j0 < cols; j0 += 16) {
    for (int dv = 0; dv < kDimVectors; ++dv) {
      __m512 tile[16];
      for (int i = 0; i < 16; ++i)
        tile[i] = j0 + i < h.num_keys
                      ? _mm512_loadu_ps(h.k + h.keys[j0 + i] * h.k_stride + 16 * dv)
                      : _mm512_setzero_ps();
      transpose16(tile);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(kt + (16 * dv + i) * cols + j0, tile[i]);
    }
  }
}

// scores[r][j] = scale * q_r . k_j for `kRows` query rows from `row0`, all packed key columns.
template <int kDimVectors, int kRows>
void scores_block(const Head& h, int64_t row0, float scale, const float* kt, int64_t cols,
                  float* scores) {
  constexpr int kDim = 16 * kDimVectors;
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j0 = 0; j0 < cols; j0 += kKeyBlock) {
    __m512 acc[kRows][kKeyVectors];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kKeyVectors; ++c) acc[r][c] = _mm512_setzero_ps();
    for (int d = 0; d < kDim; ++d) {
      __m512 kv[kKeyVectors];
      for (int c = 0; c < kKeyVectors; ++c) kv[c] = _mm512_loadu_ps(kt + d * cols + j0 + 16 * c);
      for (int r = 0; r < kRows; ++r) {
        const __m512 qv = _mm512_set1_ps(h.q[(row0 + r) * h.q_stride + d]);
        for (int c = 0; c < kKeyVectors; ++c) acc[r][c] = _mm512_fmadd_ps(qv, kv[c], acc[r][c]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kKeyVectors; ++c)
        _mm512_storeu_ps(scores + r * cols + j0 + 16 * c, _mm512_mul_ps(acc[r][c], vscale));
  }
}

// In place: the first `n` scores of a row become e^(s - max); returns 1 / their sum.
inline float softmax_row(float* row, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, row + j));
  }
  const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), max));
    _mm512_mask_storeu_ps(row + j, m, e);
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
  }
  return 1.0f / _mm512_reduce_add_ps(vsum);
}

// out_r = (sum_j p[r][j] v_j) / sum_j p[r][j] for `kRows` rows from `row0`.
template <int kDimVectors, int kRows>
void weighted_values_block(const Head& h, int64_t row0, const float* probs, int64_t cols,
                           const float* inv_sum) {
  __m512 acc[kRows][kDimVectors];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kDimVectors; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < h.num_keys; ++j) {
    const float* value = h.v + h.keys[j] * h.v_stride;
    __m512 vv[kDimVectors];
    for (int c = 0; c < kDimVectors; ++c) vv[c] = _mm512_loadu_ps(value + 16 * c);
    for (int r = 0; r < kRows; ++r) {
      const __m512 p = _mm512_set1_ps(probs[r * cols + j]);
      for (int c = 0; c < kDimVectors; ++c) acc[r][c] = _mm512_fmadd_ps(p, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    const __m512 norm = _mm512_set1_ps(inv_sum[r]);
    float* out = h.out + (row0 + r) * h.out_stride;
    for (int c = 0; c < kDimVectors; ++c)
      _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[r][c], norm));
  }
}

template <int kDimVectors, int kRows>
void row_block(const Head& h, int64_t row0, float scale, const float* kt, int64_t cols,
               float* scores) {
  scores_block<kDimVectors, kRows>(h, row0, scale, kt, cols, scores);
  float inv_sum[kRows];
  for (int r = 0; r < kRows; ++r) inv_sum[r] = softmax_row(scores + r * cols, h.num_keys);
  weighted_values_block<kDimVectors, kRows>(h, row0, scores, cols, inv_sum);
}

template <int kDimVectors>
void head_attention(const Head& h, float scale, float* kt, float* scores) {
  const int64_t cols = (h.num_keys + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
  pack_keys_transposed<kDimVectors>(h, cols, kt);
  int64_t row0 = 0;
  for (; row0 + kRowBlock <= h.rows; row0 += kRowBlock)
    row_block<kDimVectors, kRowBlock>(h, row0, scale, kt, cols, scores);
  switch (h.rows - row0) {
    case 1: row_block<kDimVectors, 1>(h, row0, scale, kt, cols, scores); break;
    case 2: row_block<kDimVectors, 2>(h, row0, scale, kt, cols, scores); break;
    case 3: row_block<kDimVectors, 3>(h, row0, scale, kt, cols, scores); break;
    case 4: row_block<kDimVectors, 4>(h, row0, scale, kt, cols, scores); break;
    case 5: row_block<kDimVectors, 5>(h, row0, scale, kt, cols, scores); break;
    default: break;
  }
}

void head_attention_dispatch(int dim_vectors, const Head& h, float scale, float* kt,
                             float* scores) {
  switch (dim_vectors) {
    case 1: head_attention<1>(h, scale, kt, scores); break;
    case 2: head_attention<2>(h, scale, kt, scores); break;
    case 4: head_attention<4>(h, scale, kt, scores); break;
    default: TORCH_CHECK(false, "head size ", 16 * dim_vectors, " is not 16, 32 or 64");
  }
}

#pragma GCC pop_options

bool supported_head_dim(int64_t d) { return d == 16 || d == 32 || d == 64; }

}  // namespace

extern "C" {

// 1 when this processor runs the AVX-512 kernels, else 0.
int lf_attention_available() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

// 1 when the kernels take heads of this size.
int lf_attention_head_dim_supported(int64_t head_dim) { return supported_head_dim(head_dim) ? 1 : 0; }

// softmax(scale * Q K^T + mask) V, per head, without dropout or autograd.
// `q` is `[B, R, heads * head_dim]` (the query rows), `k` and `v` `[B, T, heads * head_dim]`,
// fp32 on the CPU with a dense last dimension; `key_mask` is `[B, T]` bool (true = attend), or
// null for none. Returns `[B, R, heads * head_dim]`, rows whose keys are all masked out as 0.
at::Tensor* lf_attention(at::Tensor* q, at::Tensor* k, at::Tensor* v, at::Tensor* key_mask,
                         int64_t heads, double scale, char* err, size_t err_len) {
  try {
    TORCH_CHECK(lf_attention_available(), "this processor has no AVX-512");
    TORCH_CHECK(q->dim() == 3 && k->dim() == 3 && v->dim() == 3, "q, k and v must be 3-D");
    for (const at::Tensor* t : {q, k, v}) {
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(),
                  "q, k and v must be fp32 on the CPU");
      TORCH_CHECK(t->stride(2) == 1, "q, k and v need a dense last dimension");
    }
    const int64_t batch = q->size(0), rows = q->size(1), width = q->size(2), seq = k->size(1);
    TORCH_CHECK(heads > 0 && width % heads == 0, "width ", width, " is not a multiple of ",
                heads, " heads");
    const int64_t head_dim = width / heads;
    TORCH_CHECK(supported_head_dim(head_dim), "head size ", head_dim, " is not 16, 32 or 64");
    TORCH_CHECK(k->size(0) == batch && v->size(0) == batch && v->size(1) == seq &&
                    k->size(2) == width && v->size(2) == width,
                "q ", q->sizes(), ", k ", k->sizes(), " and v ", v->sizes(), " do not match");
    // the valid keys of every sequence, as indices
    std::vector<std::vector<int32_t>> keys(batch);
    at::Tensor mask;
    if (key_mask != nullptr) {
      TORCH_CHECK(key_mask->dim() == 2 && key_mask->size(0) == batch && key_mask->size(1) == seq,
                  "key_mask ", key_mask->sizes(), " is not [", batch, ", ", seq, "]");
      TORCH_CHECK(key_mask->device().is_cpu(), "key_mask must be on the CPU");
      mask = key_mask->to(at::kBool).contiguous();
    }
    for (int64_t b = 0; b < batch; ++b) {
      keys[b].reserve(seq);
      const bool* m = mask.defined() ? mask.data_ptr<bool>() + b * seq : nullptr;
      for (int64_t j = 0; j < seq; ++j)
        if (m == nullptr || m[j]) keys[b].push_back(static_cast<int32_t>(j));
    }
    // every row of a sequence with keys is written below; only keyless sequences need zeros
    at::Tensor out = at::empty({batch, rows, width}, q->options());
    for (int64_t b = 0; b < batch; ++b)
      if (keys[b].empty()) out[b].zero_();
    const float* qp = q->data_ptr<float>();
    const float* kp = k->data_ptr<float>();
    const float* vp = v->data_ptr<float>();
    float* op = out.data_ptr<float>();
    const int64_t max_cols = (seq + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
    const int dim_vectors = static_cast<int>(head_dim / 16);
    at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> kt(head_dim * max_cols);
      std::vector<float> scores(kRowBlock * max_cols);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / heads, hd = (i % heads) * head_dim;
        if (keys[b].empty()) continue;
        const Head h{qp + b * q->stride(0) + hd, q->stride(1),
                     kp + b * k->stride(0) + hd, k->stride(1),
                     vp + b * v->stride(0) + hd, v->stride(1),
                     op + b * out.stride(0) + hd, out.stride(1),
                     rows, keys[b].data(), static_cast<int64_t>(keys[b].size())};
        head_attention_dispatch(dim_vectors, h, static_cast<float>(scale), kt.data(),
                                scores.data());
      }
    });
    return new at::Tensor(std::move(out));
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
    return nullptr;
  }
}
}
