// bnff: fused batch-normalization kernels for CNN training on CPUs.
// The umbrella header: everything public, layer by layer.
#pragma once

#include "bnff/config.hpp"
#include "bnff/conv/conv2d_problem.hpp"
#include "bnff/error.hpp"
#include "bnff/parallel/parallel.hpp"
#include "bnff/tensor/tensor_view.hpp"
#include "bnff/conv/layer_catalog.hpp"
#include "bnff/simd/load_partial.hpp"
#include "bnff/simd/store_partial.hpp"
#include "bnff/simd/lanes.hpp"
#include "bnff/simd/for_each_lanes.hpp"
#include "bnff/simd/reduce_add.hpp"
#include "bnff/stats/moments.hpp"
#include "bnff/stats/stats_partition.hpp"
#include "bnff/stats/block_moments.hpp"
