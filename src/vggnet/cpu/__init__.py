"""CPU inference: VGG's layers on compiled kernels (AVX-512 or AVX2), each with a Python path where they cannot run.

`vggnet.optimize` is the entry point; these modules hold the pieces it puts together:

    compiled.py    builds, caches and loads the C++ kernels of csrc/ (or says why it cannot)
    winograd.py    fp32 3x3 convs as Winograd F(4x4, 3x3) (csrc/winograd_f32.cpp)
    first_conv.py  conv1_1, the conv that reads the RGB image, as a direct conv (csrc/conv_small.cpp)
    int8_conv.py   int8 3x3 convs as Winograd F(2x2, 3x3) with int8 GEMMs (csrc/winograd_int8.cpp)
    fc_layers.py   FC6-FC8 on the kernels (csrc/linear.cpp) and the whole int8 net
"""
