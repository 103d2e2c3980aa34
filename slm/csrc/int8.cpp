// Dynamic int8 linear layers on CPU through libtorch's fbgemm kernels, which `tch` does not
// wrap: `fbgemm_linear_quantize_weight`, `fbgemm_pack_quantized_matrix` and
// `fbgemm_linear_int8_weight_fp32_activation`. A `tensor` here is tch's `C_tensor`, an
// `at::Tensor*`. Every function catches C++ exceptions and returns the message in `err`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/fbgemm_linear_int8_weight_fp32_activation.h>
#include <ATen/ops/fbgemm_linear_quantize_weight.h>
#include <ATen/ops/fbgemm_pack_quantized_matrix.h>
#include <c10/util/Exception.h>
#include <cstring>
#include <exception>

namespace {
// These ops warn that they are deprecated, once per process; the warning is not actionable
// for a labelfleet user, so it is dropped.
struct Quiet : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

void set_err(char* err, size_t len, const char* msg) {
  if (len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = 0;
}
}  // namespace

extern "C" {

int lf_int8_quantize(at::Tensor* weight, at::Tensor** q, at::Tensor** col_offsets,
                     at::Tensor** packed, double* scale, int64_t* zero_point, char* err,
                     size_t err_len) {
  try {
    Quiet quiet;
    c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    auto w = weight->detach().to(at::kFloat).contiguous();
    auto r = at::fbgemm_linear_quantize_weight(w);
    auto p = at::fbgemm_pack_quantized_matrix(std::get<0>(r));
    *q = new at::Tensor(std::get<0>(r));
    *col_offsets = new at::Tensor(std::get<1>(r));
    *packed = new at::Tensor(p);
    *scale = std::get<2>(r);
    *zero_point = std::get<3>(r);
    return 0;
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
    return 1;
  }
}

at::Tensor* lf_int8_linear(at::Tensor* input, at::Tensor* q, at::Tensor* packed,
                           at::Tensor* col_offsets, double scale, int64_t zero_point,
                           at::Tensor* bias, char* err, size_t err_len) {
  try {
    Quiet quiet;
    c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    return new at::Tensor(at::fbgemm_linear_int8_weight_fp32_activation(
        *input, *q, *packed, *col_offsets, at::Scalar(scale), at::Scalar(zero_point), *bias));
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
    return nullptr;
  }
}
}
