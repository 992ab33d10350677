// Scalar types shared by the CPU and CUDA kernels, with no TensorFlow dependency.
//
// float16 and bfloat16 are stored as 16-bit patterns (the layout of Eigen::half and
// Eigen::bfloat16, so TensorFlow buffers can be reinterpreted as these) and all arithmetic on
// them happens in float: AccumulateType<T> is the type the update formulas compute in.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// Stochastic rounding: `f` rounded to one of its two neighbours in the 16-bit format, the one of
// larger magnitude with probability (distance from the smaller) / (distance between them), from
// 32 random bits (StochasticBits). Integer arithmetic only, so the host and the device give the
// same bits; exact values, infinities and NaN store as round-to-nearest stores them. Values whose
// magnitude rounds up past the largest finite value become infinite, as they may to nearest.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint16_t FloatToBFloat16Stochastic(float f, uint32_t random) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) >= 0x7f800000u) return FloatToBFloat16(f);
  // The 16 bits dropped are the fraction of the way to the next value of larger magnitude (the
  // same layout holds for float subnormals, which bfloat16 shares).
  return static_cast<uint16_t>((u + (random >> 16)) >> 16);
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint16_t FloatToHalfStochastic(float f, uint32_t random) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs_bits = u & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u) return FloatToHalf(f);
  if (abs_bits >= 0x47800000u) return sign | 0x7c00u;  // >= 65536: beyond every finite half
  if (abs_bits >= 0x38800000u) {  // a normal half's range: 13 bits dropped
    return sign | static_cast<uint16_t>((abs_bits - (112u << 23) + (random >> 19)) >> 13);
  }
  // A half subnormal (units of 2^-24): the float's significand shifted right by `shift` bits,
  // rounded up with probability (the dropped bits) / 2^shift, the random addend spread over the
  // shift when it is wider than 32 bits.
  const uint32_t exponent = abs_bits >> 23;
  if (exponent == 0) return sign;  // below 2^-126: rounds up with probability < 2^-102
  const int shift = 126 - static_cast<int>(exponent);  // >= 14
  if (shift >= 64) return sign;
  const uint64_t significand = (abs_bits & 0x7fffffu) | 0x800000u;
  const uint64_t addend = shift <= 32 ? static_cast<uint64_t>(random >> (32 - shift))
                                      : static_cast<uint64_t>(random) << (shift - 32);
  return sign | static_cast<uint16_t>((significand + addend) >> shift);
}

// SplitMix64's finalizer: a bijection of 64 bits whose every output bit depends on every input
// bit.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The key of one update's stochastic rounding: from the seed and the step, so that a step's
// random bits never repeat another step's.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint64_t RoundingKey(int64_t seed, int64_t step) {
  return Mix64(Mix64(static_cast<uint64_t>(seed)) + static_cast<uint64_t>(step));
}

// The random bits that round element `position` of state array `array` (1 for the first array
// after var, ...): a function of the key, the array and the position alone, so they are the same
// whichever thread, loop or device stores the element. MurmurHash3's 32-bit finalizer of the
// position (its high half folded in) keyed by the key: 32-bit multiplies, which vectorise on
// every x86 vector unit (the CPU loops' stochastic stores cost a quarter more with a 64-bit mix).
// In parts, for loops over consecutive positions: StochasticKeyed, what the key, the array and
// the position's high 32 bits give (one value for up to 2^32 positions); xored with the low 32
// bits times kStochasticPositionFactor (a loop adds the factor per position), the finalizer
// StochasticBitsMixed gives the bits. StochasticBits is the parts in one.
constexpr uint32_t kStochasticPositionFactor = 0x9e3779b1u;

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint32_t StochasticKeyed(uint64_t key, int array,
                                                            uint32_t position_high) {
  return static_cast<uint32_t>(key) ^ (position_high * 0x85ebca77u) ^
         (static_cast<uint32_t>(key >> 32) + static_cast<uint32_t>(array) * 0xc2b2ae3du);
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint32_t StochasticBitsMixed(uint32_t mixed) {
  uint32_t h = mixed;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// What StochasticBitsMixed takes for `position`.
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint32_t StochasticMixed(uint64_t key, int array,
                                                            int64_t position) {
  const uint64_t p = static_cast<uint64_t>(position);
  return StochasticKeyed(key, array, static_cast<uint32_t>(p >> 32)) ^
         (static_cast<uint32_t>(p) * kStochasticPositionFactor);
}

TF_FTRL_HOST_DEVICE TF_FTRL_INLINE uint32_t StochasticBits(uint64_t key, int array,
                                                           int64_t position) {
  return StochasticBitsMixed(StochasticMixed(key, array, position));
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

// Stores of optimizer state narrower than its var (bfloat16 or float16 state of a float32 var):
// how they round. Stochastic rounding takes its bits from `key` (RoundingKey), the array and the
// element's position (the element's index in its array: a per-row array's row).
struct StateRounding {
  bool stochastic = false;
  uint64_t key = 0;
};

// Stores `x` into an array of type S whose var has type T: the state of var's own type stores as
// Store does; narrower state rounds to nearest, or stochastically with kStochastic, with the bits
// StochasticBitsMixed(mixed) (see StochasticBits).
template <typename T, typename S, bool kStochastic>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE S StoreStateMixed(uint32_t mixed, AccumulateType<T> x) {
  if constexpr (std::is_same_v<S, T>) {
    return Store<S>(x);
  } else if constexpr (std::is_same_v<S, bfloat16>) {
    return bfloat16{kStochastic ? FloatToBFloat16Stochastic(x, StochasticBitsMixed(mixed))
                                : FloatToBFloat16(x)};
  } else {
    static_assert(std::is_same_v<S, float16>, "state narrower than var is bfloat16 or float16");
    return float16{kStochastic ? FloatToHalfStochastic(x, StochasticBitsMixed(mixed))
                               : FloatToHalf(x)};
  }
}

// StoreStateMixed with the bits of `key`, the array and the position (StochasticBits).
template <typename T, typename S, bool kStochastic>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE S StoreStateAs(uint64_t key, AccumulateType<T> x, int array,
                                                  int64_t position) {
  return StoreStateMixed<T, S, kStochastic>(StochasticMixed(key, array, position), x);
}

// StoreStateAs as `rounding` says (a branch per store: the CUDA kernels', where every thread of
// a launch takes the same side; the CPU loops choose once per loop, so that they vectorise).
template <typename T, typename S>
TF_FTRL_HOST_DEVICE TF_FTRL_INLINE S StoreState(const StateRounding& rounding,
                                                AccumulateType<T> x, int array,
                                                int64_t position) {
  return rounding.stochastic ? StoreStateAs<T, S, true>(rounding.key, x, array, position)
                             : StoreStateAs<T, S, false>(rounding.key, x, array, position);
}

}  // namespace tf_ftrl
