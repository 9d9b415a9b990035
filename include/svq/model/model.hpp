// The model-level methods: choices and tuning across the matrices of a model,
// with the model itself behind small interfaces the caller implements.
//   allocate.hpp         bit allocation across matrices (allocate_bits)
//   mixed_precision.hpp  mixed-precision Hessian PVQ (hessian_mix)
//   finetune.hpp         fine-tuning stored matrices (tune_quantized)
#pragma once

#include <svq/model/allocate.hpp>
#include <svq/model/finetune.hpp>
#include <svq/model/mixed_precision.hpp>
#include <svq/model/parallel_for.hpp>
