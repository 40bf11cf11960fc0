// An implementation of the DenseNet's conv and BN units on the naive double
// reference (tests/support/reference.hpp): what the trainer tests check the
// network's wiring and the real engines against.
#pragma once

#include <string>

#include "../examples/01_densenet_trainer/network.hpp"
#include "support/reference.hpp"

namespace trainer::test {

namespace ref = bnff::ref;
using bnff::index_t;

// The unit's conv and BN on packed double copies, through the naive reference.
class reference_engine : public conv_bn_engine {
 public:
  std::string name() const override { return "reference"; }
  void prepare(const densenet&) override {}
  std::uint64_t workspace_bytes() const override { return 0; }

  void forward(const unit& u, bool training) override {
    const ref::vec x = load(u.x);
    ref::vec a = x;
    if (u.kind != unit_kind::conv) {
      const ref::vec gamma = load(u.bn.gamma), beta = load(u.bn.beta);
      ref::vec rm = load(u.bn.running_mean), rv = load(u.bn.running_var);
      ref::vec z = training ? ref::bn_forward_train(u.x.shape(), x, gamma, beta, u.bn.eps, u.bn.momentum, rm, rv).y
                            : ref::bn_forward_infer(u.x.shape(), x, gamma, beta, rm, rv, u.bn.eps);
      for (index_t c = 0; c < u.x.c(); ++c)
        u.bn.running_mean[c] = float(rm[std::size_t(c)]), u.bn.running_var[c] = float(rv[std::size_t(c)]);
      a = ref::relu(z);
    }
    store(u.kind == unit_kind::bn_relu ? a : ref::conv2d_forward(u.conv.problem, a, load(u.conv.weight)), u.y,
          grad_mode::overwrite);
  }

  void backward(const unit& u) override {
    const ref::vec x = load(u.x), dy = load(u.dy);
    ref::vec z = x, a = x;
    if (u.kind != unit_kind::conv) {
      const auto st = ref::batch_stats(u.x.shape(), x);
      z = ref::bn_normalize(u.x.shape(), x, st.mean, st.var, load(u.bn.gamma), load(u.bn.beta), u.bn.eps);
      a = ref::relu(z);
    }
    ref::vec da = dy;
    if (u.kind != unit_kind::bn_relu) {
      store(ref::conv2d_backward_weights(u.conv.problem, a, dy), u.conv.d_weight, grad_mode::overwrite);
      da = ref::conv2d_backward_data(u.conv.problem, dy, load(u.conv.weight));
    }
    ref::vec dx = da;
    if (u.kind != unit_kind::conv) {
      const auto g = ref::bn_backward(u.x.shape(), x, ref::relu_backward(z, da), load(u.bn.gamma), u.bn.eps);
      for (index_t c = 0; c < u.x.c(); ++c)
        u.bn.d_gamma[c] = float(g.dgamma[std::size_t(c)]), u.bn.d_beta[c] = float(g.dbeta[std::size_t(c)]);
      dx = g.dx;
    }
    if (!u.dx.empty()) store(dx, u.dx, u.dx_mode);
  }

 private:
  template <class T>
  static ref::vec load(tensor_view<T> v) {
    ref::vec out;
    for (index_t n = 0; n < v.n(); ++n)
      for (index_t c = 0; c < v.c(); ++c)
        for (index_t h = 0; h < v.h(); ++h)
          for (index_t w = 0; w < v.w(); ++w) out.push_back(double(v(n, c, h, w)));
    return out;
  }
  template <class T>
  static ref::vec load(bnff::vector_view<T> v) {
    return ref::vec(v.begin(), v.end());
  }
  static void store(const ref::vec& src, tensor_view<float> v, grad_mode mode) {
    std::size_t i = 0;
    for (index_t n = 0; n < v.n(); ++n)
      for (index_t c = 0; c < v.c(); ++c)
        for (index_t h = 0; h < v.h(); ++h)
          for (index_t w = 0; w < v.w(); ++w, ++i)
            v(n, c, h, w) = float(src[i] + (mode == grad_mode::accumulate ? double(v(n, c, h, w)) : 0.0));
  }
};

}  // namespace trainer::test
