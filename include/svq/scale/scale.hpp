// Umbrella header for the gain (scale) quantizers: scalar_quantizer, the chi and Beta-norm gain
// densities, Lloyd-Max on a density, and the uniform / log / data-fitted comparison points.
#pragma once

#include <svq/scale/baselines.hpp>
#include <svq/scale/density.hpp>
#include <svq/scale/integrate.hpp>
#include <svq/scale/lloyd_max.hpp>
#include <svq/scale/scalar_quantizer.hpp>
