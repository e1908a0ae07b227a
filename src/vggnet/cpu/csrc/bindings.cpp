// The Python module of the compiled kernels (see kernels.h), built once per ISA (simd.h).
#include <torch/extension.h>

#include "kernels.h"
#include "simd.h"

#if defined(__AVX512F__)
bool vggnet::cpu_has_vnni() { return __builtin_cpu_supports("avx512vnni"); }
#else
bool vggnet::cpu_has_vnni() { return __builtin_cpu_supports("avxvnni"); }  // the 256-bit vpdpbusd (simd.h)
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("isa") = vggnet::simd::kIsa;      // "avx512" or "avx2": the flags this build was compiled with
  m.attr("panel") = vggnet::simd::kPanel;  // output channels per packed panel of the Winograd kernels' weights
  m.def("conv3x3_f4", &vggnet::conv3x3_f4, "3x3 conv + bias (+ReLU) as Winograd F(4x4, 3x3), NHWC fp32");
  m.def("conv3x3_f2_int8", &vggnet::conv3x3_f2_int8,
        "3x3 conv + bias (+ReLU) (+2x2 max pool) as Winograd F(2x2, 3x3), int8 GEMMs (VNNI), NHWC fp32 in and out");
  m.def("conv3x3_small", &vggnet::conv3x3_small,
        "3x3 conv + bias (+ReLU), direct, for few input channels (VGG's conv1_1), NHWC fp32");
  m.def("linear_int8", &vggnet::linear_int8,
        "x W^T + bias (+ReLU): int8 weights, u8 rows (dynamic, per row), VNNI, fp32 in and out");
  m.def("linear_f32", &vggnet::linear_f32, "x W^T + bias (+ReLU) in fp32, on the kernels' workers");
  m.def("cpu_has_vnni", &vggnet::cpu_has_vnni, "whether the CPU has the VNNI of this build: AVX-512 VNNI or AVX-VNNI");
}
