// Vectorised loops over one row, shared by the CPU kernels (attention's softmax, the norms). The float versions are
// compiled per instruction set (vector_math.h) and give the same bits on every one; sums run in eight fixed lanes
// combined in a fixed order, so they do not depend on the vector width or on the OpenMP thread count either.
#pragma once
#include <cstdint>

namespace ll::cpu {

// x[i] = e^(x[i] − shift); float uses vector_math.h's exp_f32, double the C library's exp.
void exp_minus(float* x, int64_t n, float shift);
void exp_minus(double* x, int64_t n, double shift);

// Σ x[i] in double (each term converted exactly) over pieces of a longer index range, in eight partial sums then a
// fixed tree: element i of a piece starting at index `first` goes to lane (first + i) mod 8. Attention keys its lanes by key position, so a query's sum does not depend on how its keys
// were split into blocks (masked keys add exact zeros): prefilled, decoded and reused prefixes give the same bits.
struct LaneSums {
  double lane[8] = {};
  double total() const;
};
void add_to_lanes(LaneSums& sums, const float* x, int64_t n, int64_t first);
void add_to_lanes(LaneSums& sums, const double* x, int64_t n, int64_t first);

// Σ x[i]·y[i] in double, the same way (lane i mod 8).
double dot_in_double(const float* x, const float* y, int64_t n);
double dot_in_double(const double* x, const double* y, int64_t n);

// Σ x[i]·y[i]·z[i] in double, the same way.
double dot_in_double(const float* x, const float* y, const float* z, int64_t n);
double dot_in_double(const double* x, const double* y, const double* z, int64_t n);

// The largest element (n ≥ 1); −inf entries are ordinary values; with NaN or both ±0 in x, either may come out.
float max_of(const float* x, int64_t n);
double max_of(const double* x, int64_t n);

}  // namespace ll::cpu
