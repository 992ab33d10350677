// Scalar types shared by the CPU and CUDA kernels, with no TensorFlow dependency.
//
// float16 and bfloat16 are stored as 16-bit patterns (the layout of Eigen::half and
// Eigen::bfloat16, so TensorFlow buffers can be reinterpreted as these) and all arithmetic on
// them happens in float: AccumulateType<T> is the type the update formulas compute in.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TF_FTRL_HOST_DEVICE __host__ __device__
#define TF_FTRL_INLINE __forceinline__
#else
#define TF_FTRL_HOST_DEVICE
#define TF_FTRL_INLINE inline __attribute__((always_inline))
#endif

namespace tf_ftrl {

struct float16 {
  uint16_t bits;
};
struct bfloat16 {
  uint16_t bits;
};

template <typename T>
struct AccumulateTypeOf {
  using type = T;
};
template <>
struct AccumulateTypeOf<float16> {
  using type = float;
};
template <>
struct AccumulateTypeOf<bfloat16> {
  using type = float;
};
template <typename T>
using AccumulateType = typename AccumulateTypeOf<T>::type;

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float BitsToFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// IEEE binary16 <-> binary32, round to nearest even, subnormals, infinities and NaN preserved.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // inf or NaN
    return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs_bits = u & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u) {  // inf or NaN (NaN stays a quiet NaN)
    return sign | (abs_bits > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (abs_bits >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
    return sign | 0x7c00u;
  }
  if (abs_bits < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    // Adding 0.5 shifts the value so that the float's own rounding does the half's RNE.
    const float shifted = BitsToFloat(abs_bits) + 0.5f;
    return sign | static_cast<uint16_t>(FloatBits(shifted) - FloatBits(0.5f));
  }
  const uint32_t odd = (abs_bits >> 13) & 1u;
  const uint32_t rounded = abs_bits + 0xfffu + odd - (112u << 23);
  return sign | static_cast<uint16_t>(rounded >> 13);
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float BFloat16ToFloat(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint16_t FloatToBFloat16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a quiet NaN of the same sign
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  }
  const uint32_t odd = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7fffu + odd) >> 16);
}

// Math in the accumulate type, the same overloads on host and device.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Sqrt(float x) { return sqrtf(x); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE double Sqrt(double x) { return sqrt(x); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Pow(float x, float y) { return powf(x, y); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE double Pow(double x, double y) { return pow(x, y); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Abs(float x) { return fabsf(x); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE double Abs(double x) { return fabs(x); }

// Load a storage value as its accumulate type, and store back.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Load(float16 x) { return HalfToFloat(x.bits); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Load(bfloat16 x) { return BFloat16ToFloat(x.bits); }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Load(float x) { return x; }
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE double Load(double x) { return x; }

template <typename T>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE T Store(AccumulateType<T> x);
template <>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float16 Store<float16>(float x) {
  return float16{FloatToHalf(x)};
}
template <>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE bfloat16 Store<bfloat16>(float x) {
  return bfloat16{FloatToBFloat16(x)};
}
template <>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE float Store<float>(float x) {
  return x;
}
template <>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE double Store<double>(double x) {
  return x;
}

}  // namespace tf_ftrl
