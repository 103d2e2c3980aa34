// fp32 linear layers on CPU through oneDNN with weights packed once: libtorch's
// `mkldnn::_reorder_linear_weight` and `mkldnn::_linear_pointwise` (what torch.compile's CPU
// freezing uses), which `tch` does not wrap. They are called boxed through the dispatcher, so
// no C++ signature is assumed. A `tensor` here is tch's `C_tensor`, an `at::Tensor*`. Every
// function catches C++ exceptions and returns the message in `err`.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <c10/util/Exception.h>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace {
void set_err(char* err, size_t len, const char* msg) {
  if (len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = 0;
}

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}
}  // namespace

extern "C" {

// 1 when oneDNN's linear ops are registered in this libtorch, else 0.
int lf_onednn_available() {
  return c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""}).has_value() &&
                 c10::Dispatcher::singleton()
                     .findSchema({"mkldnn::_reorder_linear_weight", ""})
                     .has_value()
             ? 1
             : 0;
}

// Whether autograd records operations on this thread.
int lf_grad_enabled() { return at::GradMode::is_enabled() ? 1 : 0; }

// The weight `[out, in]` (fp32, CPU) in oneDNN's layout, or null with `err` set.
at::Tensor* lf_onednn_pack(at::Tensor* weight, char* err, size_t err_len) {
  try {
    static const c10::OperatorHandle reorder = op("mkldnn::_reorder_linear_weight");
    torch::jit::Stack stack{c10::IValue(weight->detach().contiguous()), c10::IValue()};
    reorder.callBoxed(&stack);
    return new at::Tensor(stack.at(0).toTensor());
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
    return nullptr;
  }
}

// `act(x W^T + b)` for a dense fp32 `x` of shape `[rows, in]` and a packed `W`; `act` is
// "none" or "gelu" with `algorithm` "none" (erf) or "tanh". `bias` may be null.
at::Tensor* lf_onednn_linear(at::Tensor* input, at::Tensor* packed, at::Tensor* bias,
                             const char* act, const char* algorithm, char* err,
                             size_t err_len) {
  try {
    static const c10::OperatorHandle linear = op("mkldnn::_linear_pointwise");
    c10::List<std::optional<at::Scalar>> scalars;
    torch::jit::Stack stack{
        c10::IValue(*input),
        c10::IValue(*packed),
        bias == nullptr ? c10::IValue() : c10::IValue(*bias),
        c10::IValue(std::string(act)),
        c10::IValue(scalars),
        c10::IValue(std::string(algorithm)),
    };
    linear.callBoxed(&stack);
    return new at::Tensor(stack.at(0).toTensor());
  } catch (const std::exception& e) {
    set_err(err, err_len, e.what());
    return nullptr;
  }
}
}
