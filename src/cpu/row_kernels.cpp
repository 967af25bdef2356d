#include "cpu/row_kernels.h"

#include <cmath>

#include "cpu/vector_math.h"

namespace ll::cpu {

namespace {

constexpr int kLanes = 8;

// always_inline: a clone's loop must be compiled inside the clone, for its instruction set.
template <typename Term>
__attribute__((always_inline)) inline double lane_sum(int64_t n, Term term) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) acc[l] += term(i + l);
  for (int l = 0; i < n; ++i, ++l) acc[l] += term(i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
__attribute__((always_inline)) inline void lane_add(double* lane, const T* x, int64_t n, int64_t first) {
  int64_t i = 0;
  for (; i < n && (first + i) % kLanes != 0; ++i) lane[(first + i) % kLanes] += double(x[i]);
  for (; i + kLanes <= n; i += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) lane[l] += double(x[i + l]);
  for (int l = 0; i < n; ++i, ++l) lane[l] += double(x[i]);
}

// An unordered reduction: exact whatever the order, except that a row holding NaN or both ±0 may give either.
template <typename T>
__attribute__((always_inline)) inline T max_simd(const T* x, int64_t n) {
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace

LL_VECTOR_CLONES void exp_minus(float* x, int64_t n, float shift) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_f32(x[i] - shift);
}
void exp_minus(double* x, int64_t n, double shift) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - shift);
}

double LaneSums::total() const {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}
LL_VECTOR_CLONES void add_to_lanes(LaneSums& sums, const float* x, int64_t n, int64_t first) {
  lane_add(sums.lane, x, n, first);
}
void add_to_lanes(LaneSums& sums, const double* x, int64_t n, int64_t first) { lane_add(sums.lane, x, n, first); }

LL_VECTOR_CLONES double dot_in_double(const float* x, const float* y, int64_t n) {
  return lane_sum(n, [x, y](int64_t i) { return double(x[i]) * double(y[i]); });
}
double dot_in_double(const double* x, const double* y, int64_t n) {
  return lane_sum(n, [x, y](int64_t i) { return x[i] * y[i]; });
}

LL_VECTOR_CLONES double dot_in_double(const float* x, const float* y, const float* z, int64_t n) {
  return lane_sum(n, [x, y, z](int64_t i) { return double(x[i]) * double(y[i]) * double(z[i]); });
}
double dot_in_double(const double* x, const double* y, const double* z, int64_t n) {
  return lane_sum(n, [x, y, z](int64_t i) { return x[i] * y[i] * z[i]; });
}

LL_VECTOR_CLONES float max_of(const float* x, int64_t n) { return max_simd(x, n); }
double max_of(const double* x, int64_t n) { return max_simd(x, n); }

}  // namespace ll::cpu
