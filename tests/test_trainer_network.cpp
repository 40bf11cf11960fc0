// The DenseNet skeleton: units, channel slices, gradient modes and parameter
// counts; and, with an engine built on the double reference (tests/support),
// the whole network's gradient against finite differences, which checks how
// the network wires the conv and BN units, pooling and the classifier together.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include "../examples/01_densenet_trainer/cli.hpp"
#include "../examples/01_densenet_trainer/network.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

using namespace trainer;
using bnff::index_t;
namespace ref = bnff::ref;

namespace {

model_config tiny_config() {
  model_config c;
  c.image_size = 8;
  c.blocks = {2, 3};
  c.growth = 4;  // stem 8, bottleneck 16
  c.compression = 0.5;
  return c;
}

// Which buffer, image-0 channel range a view covers.
struct located {
  index_t buffer = -1, first = 0, count = 0;
};
located locate(const densenet& net, const float* p, index_t count) {
  const auto& bufs = net.buffers();
  for (std::size_t b = 0; b < bufs.size(); ++b) {
    const float* base = bufs[b].data.data();
    if (p >= base && p < base + bufs[b].data.size())
      return {index_t(b), index_t(p - base) / bufs[b].shape.plane(), count};
  }
  return {};
}

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

}  // namespace

TEST_CASE("densenet: units, channel slices and shapes of DenseNet-BC", "[trainer][network]") {
  const densenet net(tiny_config(), 3, 1);
  const auto& u = net.units();
  // stem, 2 x 2 block-1 halves, transition, pool, 3 x 2 block-2 halves, final BN-ReLU, global pool
  REQUIRE(u.size() == 1 + 4 + 1 + 1 + 6 + 1 + 1);
  CHECK(u[0].kind == unit_kind::conv);
  CHECK(u[0].conv.problem.r == 3);
  CHECK(u[0].dx.empty());
  CHECK(u[5].name == "t1.conv");
  CHECK(u[6].kind == unit_kind::avg_pool2x2);
  CHECK(u[13].kind == unit_kind::bn_relu);
  CHECK(u[14].kind == unit_kind::global_avg_pool);

  // Block 1: concat of 8 + 2 x 4 = 16 channels at 8x8; every conv2 writes the next 4-channel slice of it.
  const index_t concat = u[0].out.buffer;
  CHECK(net.buffers()[std::size_t(concat)].shape == bnff::shape4{3, 16, 8, 8});
  for (int l = 0; l < 2; ++l) {
    const unit& conv1 = u[std::size_t(1 + 2 * l)];
    const unit& conv2 = u[std::size_t(2 + 2 * l)];
    const index_t c_in = 8 + 4 * l;
    CHECK(conv1.x.c() == c_in);
    CHECK(conv1.x.data() == net.buffers()[std::size_t(concat)].data.data());  // channels [0, c_in) of the concat
    CHECK(conv1.conv.problem.k == 16);
    CHECK(conv1.conv.problem.r == 1);
    CHECK(conv2.conv.problem.r == 3);
    CHECK(conv2.conv.problem.pad == 1);
    CHECK(conv2.out.buffer == concat);
    CHECK(conv2.out.first == c_in);
    CHECK(conv2.y.data() == net.buffers()[std::size_t(concat)].data.data() + c_in * 64);
    CHECK(conv2.y.strides().n == 16 * 64);  // a slice, not a copy
    CHECK(conv2.x.data() == conv1.y.data());
  }
  // Transition: 16 -> 8 channels, then pooled into block 2's concat (8 + 3 x 4 = 20 channels at 4x4).
  CHECK(u[5].conv.problem.k == 8);
  CHECK(u[6].y.shape() == bnff::shape4{3, 8, 4, 4});
  CHECK(net.buffers()[std::size_t(u[6].out.buffer)].shape == bnff::shape4{3, 20, 4, 4});
  CHECK(net.classifier_shape().in == 20);

  // No two forward outputs share memory.
  for (std::size_t i = 0; i < u.size(); ++i)
    for (std::size_t j = i + 1; j < u.size(); ++j) {
      INFO(u[i].name << " and " << u[j].name);
      CHECK(!bnff::overlaps(u[i].y, u[j].y));
    }
}

TEST_CASE("densenet: backward order completes every gradient before it is read", "[trainer][network]") {
  const densenet net(tiny_config(), 2, 1);
  // Per gradient buffer channel: has any unit written it yet (walking backward)?
  std::map<index_t, std::vector<bool>> written;
  for (std::size_t b = 0; b < net.buffers().size(); ++b)
    written[index_t(b)] = std::vector<bool>(std::size_t(net.buffers()[b].shape.c), false);
  const located features = locate(net, net.units().back().dy.data(), 1);
  std::fill(written[features.buffer].begin(), written[features.buffer].end(), true);  // the classifier's backward
  const auto& units = net.units();
  for (auto it = units.rbegin(); it != units.rend(); ++it) {
    INFO(it->name);
    const located dy = locate(net, it->dy.data(), it->dy.c());
    REQUIRE(dy.buffer >= 0);
    for (index_t c = dy.first; c < dy.first + dy.count; ++c) CHECK(written[dy.buffer][std::size_t(c)]);
    // A gradient is read once, by the backward of the unit that produced the value: after that
    // its memory is free (the bottleneck gradient buffer of a block serves every layer in turn).
    for (index_t c = dy.first; c < dy.first + dy.count; ++c) written[dy.buffer][std::size_t(c)] = false;
    if (it->dx.empty()) continue;
    const located dx = locate(net, it->dx.data(), it->dx.c());
    REQUIRE(dx.buffer >= 0);
    CHECK(net.buffers()[std::size_t(dx.buffer)].gradient);
    for (index_t c = dx.first; c < dx.first + dx.count; ++c) {
      // overwrite only where nothing was written yet; accumulate only onto written values
      CHECK(written[dx.buffer][std::size_t(c)] == (it->dx_mode == grad_mode::accumulate));
      written[dx.buffer][std::size_t(c)] = true;
    }
  }
}

TEST_CASE("densenet: parameters of DenseNet-121's first block, by formula", "[trainer][network]") {
  const options o = [] {
    const char* argv[] = {"t", "--preset", "densenet121-block1"};
    return parse_command_line(3, argv);
  }();
  const densenet net(o.model, 2, 1);
  std::uint64_t expect = 64 * 3 * 9;  // stem conv3x3
  for (int l = 0; l < 6; ++l) {
    const std::uint64_t c = 64 + 32 * std::uint64_t(l);
    expect += 2 * c + 128 * c + 2 * 128 + 32 * 128 * 9;  // BN1, conv1x1, BN2, conv3x3
  }
  expect += 2 * 256 + 256 * 10 + 10;  // final BN, classifier
  CHECK(net.parameter_count() == expect);
  // Activation buffers: input, concat (256 ch), 6 bottlenecks (128 ch), final BN-ReLU (256 ch), features.
  const std::uint64_t plane = 56 * 56;
  CHECK(net.activation_bytes() == 4 * 2 * (3 * plane + 256 * plane + 6 * 128 * plane + 256 * plane + 256));
  // He initialization: every conv weight drawn, BN gamma 1, beta 0, running var 1.
  for (const auto& p : const_cast<densenet&>(net).parameters()) {
    INFO(p.name);
    if (p.name.find("gamma") != std::string::npos) CHECK(p.value[0] == 1.0f);
    if (p.name.find("weight") != std::string::npos) CHECK(p.value[0] != 0.0f);
  }
}

TEST_CASE("densenet: the same seed gives the same initial weights", "[trainer][network]") {
  densenet a(tiny_config(), 2, 5), b(tiny_config(), 2, 5), c(tiny_config(), 2, 6);
  for (std::size_t i = 0; i < a.parameters().size(); ++i) CHECK(a.parameters()[i].value == b.parameters()[i].value);
  CHECK(a.parameters()[0].value != c.parameters()[0].value);
}

TEST_CASE("densenet: bad configurations are refused", "[trainer][network]") {
  model_config c = tiny_config();
  CHECK_THROWS_WITH(densenet(c, 1, 1), Catch::Contains("--batch must be >= 2"));
  c.blocks = {};
  CHECK_THROWS_WITH(densenet(c, 2, 1), Catch::Contains("at least one dense block"));
}

TEST_CASE("densenet: gradient of the whole network vs finite differences (reference engine)", "[trainer][network]") {
  const index_t batch = 3;
  densenet_model m(tiny_config(), batch, 7, std::make_unique<reference_engine>());
  const auto x = bnff::test::random_vector(std::size_t(m.input_shape().size()), 3);
  std::copy(x.begin(), x.end(), m.input());
  const std::vector<std::int32_t> labels{1, 7, 4};
  auto loss = [&] {
    const float* logits = m.forward(true);
    return softmax_cross_entropy<float>(batch, 10, logits, labels.data(), nullptr).loss;
  };
  std::vector<float> d_logits(std::size_t(batch * 10));
  softmax_cross_entropy<float>(batch, 10, m.forward(true), labels.data(), d_logits.data());
  m.backward(d_logits.data());

  // Directional derivative of each parameter tensor along a random unit direction: one
  // difference covers every element, and the step is small for each element (few ReLU kinks).
  const double h = 3e-4;
  int tag = 0;
  for (parameter* p : m.parameters()) {
    INFO(p->name);
    auto dir = bnff::test::random_vector(p->value.size(), std::uint64_t(100 + tag++));
    for (auto& d : dir) d = (d > 0 ? 1 : -1) / std::sqrt(double(dir.size()));  // unit length
    double analytic = 0;
    for (std::size_t i = 0; i < dir.size(); ++i) analytic += double(p->grad[i]) * dir[i];
    const std::vector<float> keep = p->value;
    for (std::size_t i = 0; i < dir.size(); ++i) p->value[i] = float(keep[i] + h * dir[i]);
    const double up = loss();
    for (std::size_t i = 0; i < dir.size(); ++i) p->value[i] = float(keep[i] - h * dir[i]);
    const double down = loss();
    p->value = keep;
    const double numeric = (up - down) / (2 * h);
    INFO("analytic " << analytic << ", numeric " << numeric);
    // Float activations put ~5e-8 of noise on the loss (/h: ~1e-4), and ReLU kinks crossed by the step add
    // O(h); measured errors stay below 1e-4 absolute, 2.5% relative. A wiring error (a lost, doubled or
    // misplaced gradient) changes derivatives by tens of percent.
    CHECK(std::abs(analytic - numeric) <= 0.05 * std::abs(numeric) + 2e-4);
  }
}
