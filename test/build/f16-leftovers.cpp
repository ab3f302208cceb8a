// Holds ggml's f16 dot, mad and scale (ggml-cpu/vec.cpp, vec.h) to a double-precision reference
// for every length from 1 to argv[1] (default 300), so every remainder of a SIMD step is
// exercised, including the leftover registers of vendor/patches/0002. Built by
// test/build/f16-leftovers.test.ts once per x86 mapping. Prints one JSON line.
#include "ggml.h"
#include "vec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

// Tables ggml-cpu.c defines; the routines under test read only the first (without F16C).
float ggml_table_f32_f16[1 << 16];
float ggml_table_f32_e8m0_half[1 << 8];
float ggml_table_f32_ue4m3[1 << 8];

static float f(ggml_fp16_t h) { return GGML_CPU_FP16_TO_FP32(h); }

int main(int argc, char ** argv) {
    const int maxN = argc > 1 ? std::atoi(argv[1]) : 300;
    for (int i = 0; i < (1 << 16); i++) ggml_table_f32_f16[i] = GGML_COMPUTE_FP16_TO_FP32((ggml_fp16_t) i);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> mag(0.5f, 1.0f);
    // Magnitudes of at least 0.5: a dropped element moves a dot by at least 0.25.
    auto value = [&] { return GGML_CPU_FP32_TO_FP16(rng() & 1 ? mag(rng) : -mag(rng)); };
    const float v = 0.37f;
    double dot = 0, dotDropped = 1e30, mad = 0, scale = 0;
    for (int n = 1; n <= maxN; n++) {
        std::vector<ggml_fp16_t> x(n), y(n), out(n);
        for (int i = 0; i < n; i++) { x[i] = value(); y[i] = value(); }
        float s = 0;
        ggml_vec_dot_f16(n, &s, 0, x.data(), 0, y.data(), 0, 1);
        double ref = 0;
        for (int i = 0; i < n; i++) ref += (double) f(x[i]) * f(y[i]);
        dot = std::max(dot, std::fabs(s - ref));
        // The control: the same comparison against a sum that misses its last element.
        dotDropped = std::min(dotDropped, std::fabs(s - (ref - (double) f(x[n - 1]) * f(y[n - 1]))));
        out = y;
        ggml_vec_mad_f16(n, out.data(), x.data(), v);
        for (int i = 0; i < n; i++) mad = std::max(mad, std::fabs(f(out[i]) - ((double) f(y[i]) + (double) f(x[i]) * v)));
        out = y;
        ggml_vec_scale_f16(n, out.data(), v);
        for (int i = 0; i < n; i++) scale = std::max(scale, std::fabs(f(out[i]) - (double) f(y[i]) * v));
    }
    std::printf("{\"step\":%d,\"epr\":%d,\"dot\":%g,\"dotDropped\":%g,\"mad\":%g,\"scale\":%g}\n",
                GGML_F16_STEP, GGML_F16_EPR, dot, dotDropped, mad, scale);
    return 0;
}
