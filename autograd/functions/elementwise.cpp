// Elementwise functions with their gradients side by side.
#include "autograd/functions.h"
#include "autograd/node.h"

namespace infllm {

using autograd::record;

Tensor add(const Tensor& a, const Tensor& b) {
  Shape sa = a.shape(), sb = b.shape();
  return record("add", {a, b}, ops::add(a, b), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::sum_to(g[0], sa), ops::sum_to(g[0], sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Shape sa = a.shape(), sb = b.shape();
  return record("sub", {a, b}, ops::sub(a, b), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::sum_to(g[0], sa), ops::sum_to(ops::neg(g[0]), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor sa = a.detach(), sb = b.detach();
  return record("mul", {a, b}, ops::mul(a, b), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::sum_to(ops::mul(g[0], sb), sa.shape()),
                               ops::sum_to(ops::mul(g[0], sa), sb.shape())};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor sa = a.detach(), sb = b.detach();
  return record("div", {a, b}, ops::div(a, b), [=](const std::vector<Tensor>& g) {
    Tensor ga = ops::div(g[0], sb);
    Tensor gb = ops::neg(ops::div(ops::mul(ga, sa), sb));  // -g * a / b^2
    return std::vector<Tensor>{ops::sum_to(ga, sa.shape()), ops::sum_to(gb, sb.shape())};
  });
}

Tensor add(const Tensor& a, double scalar) {
  return record("add_scalar", {a}, ops::add(a, scalar),
                [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
}

Tensor mul(const Tensor& a, double scalar) {
  return record("mul_scalar", {a}, ops::mul(a, scalar), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(g[0], scalar)};
  });
}

Tensor neg(const Tensor& x) {
  return record("neg", {x}, ops::neg(x),
                [](const std::vector<Tensor>& g) { return std::vector<Tensor>{ops::neg(g[0])}; });
}

Tensor exp(const Tensor& x) {
  Tensor y = ops::exp(x);
  Tensor saved = y.detach();
  return record("exp", {x}, y, [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(g[0], saved)};
  });
}

Tensor log(const Tensor& x) {
  Tensor saved = x.detach();
  return record("log", {x}, ops::log(x), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::div(g[0], saved)};
  });
}

Tensor sqrt(const Tensor& x) {
  Tensor y = ops::sqrt(x);
  Tensor saved = y.detach();
  return record("sqrt", {x}, y, [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::div(ops::mul(g[0], 0.5), saved)};
  });
}

Tensor rsqrt(const Tensor& x) {
  Tensor y = ops::rsqrt(x);
  Tensor saved = y.detach();
  return record("rsqrt", {x}, y, [=](const std::vector<Tensor>& g) {
    // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
    Tensor y3 = ops::mul(ops::square(saved), saved);
    return std::vector<Tensor>{ops::mul(ops::mul(g[0], y3), -0.5)};
  });
}

Tensor sigmoid(const Tensor& x) {
  Tensor y = ops::sigmoid(x);
  Tensor saved = y.detach();
  return record("sigmoid", {x}, y, [=](const std::vector<Tensor>& g) {
    Tensor dy = ops::mul(saved, ops::add(ops::neg(saved), 1.0));  // y (1 - y)
    return std::vector<Tensor>{ops::mul(g[0], dy)};
  });
}

Tensor silu(const Tensor& x) {
  Tensor saved = x.detach();
  return record("silu", {x}, ops::silu(x), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(g[0], ops::unary(UnaryOp::silu_grad, saved))};
  });
}

Tensor gelu(const Tensor& x) {
  Tensor saved = x.detach();
  return record("gelu", {x}, ops::gelu(x), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(g[0], ops::unary(UnaryOp::gelu_grad, saved))};
  });
}

Tensor square(const Tensor& x) {
  Tensor saved = x.detach();
  return record("square", {x}, ops::square(x), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(ops::mul(g[0], saved), 2.0)};
  });
}

Tensor cast(const Tensor& x, DType dtype) {
  DType from = x.dtype();
  return record("cast", {x}, ops::cast(x, dtype), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::cast(g[0], from)};
  });
}

}  // namespace infllm
