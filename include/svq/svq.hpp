// Everything in svq, for users who do not want to pick headers.
#pragma once

#include <svq/version.hpp>
#include <svq/error.hpp>
#include <svq/concepts.hpp>

#include <svq/core/bitstream.hpp>
#include <svq/core/half.hpp>
#include <svq/core/limbs.hpp>
#include <svq/core/wide_uint.hpp>

#include <svq/pvq/codec.hpp>
#include <svq/pvq/pulses.hpp>
#include <svq/pvq/count.hpp>
#include <svq/pvq/search.hpp>
#include <svq/pvq/shape_quantizer.hpp>

#include <svq/scale/scale.hpp>

#include <svq/rotate/fwht.hpp>
#include <svq/rotate/hadamard_rotation.hpp>

#include <svq/format/layout.hpp>
#include <svq/format/split_index.hpp>
#include <svq/format/row_format.hpp>
#include <svq/format/split_lattice.hpp>

#include <svq/hessian/calibration.hpp>
#include <svq/hessian/gptq.hpp>
#include <svq/crvq/codebook.hpp>
#include <svq/crvq/crvq.hpp>

#include <svq/matrix/auto_config.hpp>
#include <svq/matrix/metrics.hpp>
#include <svq/matrix/quantized_matrix.hpp>
#include <svq/matrix/rtn.hpp>
#include <svq/quantize.hpp>
#include <svq/kernels/gemv.hpp>
#include <svq/trellis/trellis.hpp>
#include <svq/model/model.hpp>
