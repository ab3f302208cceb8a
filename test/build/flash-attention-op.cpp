// Holds ggml's CPU flash attention (GGML_OP_FLASH_ATTN_EXT) to a double-precision reference, one
// op at a time, over the shapes vendor/patches/0001 and 0003 change: short batches (the tiled
// kernel) and single tokens over 512 or more positions (the group kernel of the split-KV path),
// and one shape upstream's per-head kernel keeps (a token over fewer than 512 positions), whose
// f16 accumulation gets a looser tolerance. Each case runs with 1 to 4 threads, so the
// positions split into different chunks and their partials are merged. The model tests compare
// flash attention on with off; this compares it with the definition, so it also runs on builds
// (ARM, under qemu) where no model test runs. Built by test/build/flash-attention-op.test.ts.
// Prints a JSON line naming the architecture, then one per case and thread count.
#include "ggml.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

enum class Mask { None, Causal, Blocks, PerHead, Alibi };

struct Case {
    const char * name;
    int n_q;       // query rows (tokens)
    int n_kv;      // K/V positions
    int dk, dv;    // head sizes
    int n_head, n_head_kv;
    Mask mask;
    ggml_type kv_type;
    bool cache_layout; // K/V as llama.cpp's cache views: every K/V head of a position in one row
    float softcap;
    bool sinks;
    double tol;        // the largest error allowed: f32 paths, or upstream's f16 accumulation
};

static constexpr double F32 = 1e-4;
static constexpr double F16 = 1e-2;

static const Case CASES[] = {
    // single tokens at 512 positions or more: the group kernel (0003)
    {"token 1024 64x64 32/4 blocks",      1, 1024,  64,  64, 32, 4, Mask::Blocks,  GGML_TYPE_F16, true,  0, false, F32},
    {"token 700 64x64 32/4 causal",       1,  700,  64,  64, 32, 4, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F32},
    {"token 2063 128x128 32/8 blocks",    1, 2063, 128, 128, 32, 8, Mask::Blocks,  GGML_TYPE_F16, true,  0, false, F32},
    {"token 777 80x80 32/32 causal",      1,  777,  80,  80, 32, 32, Mask::Causal, GGML_TYPE_F16, true,  0, false, F32},
    {"token 900 96x96 12/4 per-head",     1,  900,  96,  96, 12, 4, Mask::PerHead, GGML_TYPE_F16, true,  0, false, F32},
    {"token 600 256x256 8/2 none",        1,  600, 256, 256,  8, 2, Mask::None,    GGML_TYPE_F16, false, 0, false, F32},
    {"token 1100 192x128 16/16 causal",   1, 1100, 192, 128, 16, 16, Mask::Causal, GGML_TYPE_F16, false, 0, false, F32},
    {"token 1024 64x64 8/8 alibi",        1, 1024,  64,  64,  8, 8, Mask::Alibi,   GGML_TYPE_F16, true,  0, false, F32},
    {"token 800 64x64 14/2 softcap sinks",1,  800,  64,  64, 14, 2, Mask::Blocks,  GGML_TYPE_F16, true, 30, true, F32},
    {"token 640 72x72 6/3 f32",           1,  640,  72,  72,  6, 3, Mask::Causal,  GGML_TYPE_F32, false, 0, false, F32},
    // single tokens under 512 positions: upstream's per-head path
    {"token 300 64x64 32/4 causal",       1,  300,  64,  64, 32, 4, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F16},
    // short batches: the tiled kernel, with the query heads of a K/V group in one tile (0001)
    {"batch 2 at 600 64x64 32/4",         2,  602,  64,  64, 32, 4, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F32},
    {"batch 7 at 300 128x128 32/8",       7,  307, 128, 128, 32, 8, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F32},
    {"batch 61 at 850 64x64 32/4",       61,  911,  64,  64, 32, 4, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F32},
    {"batch 61 at 400 80x80 32/32",      61,  461,  80,  80, 32, 32, Mask::Causal, GGML_TYPE_F16, true,  0, false, F32},
    {"batch 64 at 100 64x64 32/4",       64,  164,  64,  64, 32, 4, Mask::Causal,  GGML_TYPE_F16, true,  0, false, F32},
    {"batch 70 at 0 96x96 12/4 blocks",  70,   70,  96,  96, 12, 4, Mask::Blocks,  GGML_TYPE_F16, true,  0, false, F32},
    {"batch 9 at 500 64x64 32/4 per-head", 9,  509,  64,  64, 32, 4, Mask::PerHead, GGML_TYPE_F16, true,  0, false, F32},
    {"batch 12 at 300 64x64 8/4 alibi",   12,  312,  64,  64,  8, 4, Mask::Alibi,   GGML_TYPE_F16, true,  0, false, F32},
    {"batch 33 at 200 64x64 14/2 softcap sinks", 33,  233,  64,  64, 14, 2, Mask::Causal,  GGML_TYPE_F16, true, 30, true, F32},
};

static float round_f16(float x) { return ggml_fp16_to_fp32(ggml_fp32_to_fp16(x)); }

// The mask value of query row i, head h, position j (0 or -inf, or an ALiBi distance).
static float mask_value(const Case & c, int i, int h, int j) {
    const int pos = c.n_kv - c.n_q + i; // the query's own position
    switch (c.mask) {
        case Mask::None:   return 0.0f;
        case Mask::Causal: return j <= pos ? 0.0f : -INFINITY;
        case Mask::Alibi:  return j <= pos ? -(float) (pos - j) : -INFINITY;
        // another sequence's cells, 50 at a time, and a whole first stretch masked: tiles every
        // head skips, and tiles it reads in part. A token always sees itself.
        case Mask::Blocks: return j == pos || (j < pos && j >= c.n_kv / 6 && (j / 50) % 2 == 0) ? 0.0f : -INFINITY;
        // heads differ: each masks its own stretches, so a tile can be empty for some heads only
        case Mask::PerHead: return j == pos || (j < pos && ((j + 37*h) / 64) % 3 != 0) ? 0.0f : -INFINITY;
    }
    return 0.0f;
}

int main() {
    std::printf("{\"arch\":\"%s\"}\n",
#if defined(__aarch64__)
                "aarch64"
#elif defined(__x86_64__)
                "x86_64"
#else
                "other"
#endif
    );
    ggml_cpu_init();
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);

    for (const Case & c : CASES) {
        const int n_mask_heads = c.mask == Mask::PerHead ? c.n_head : 1;
        const float max_bias = c.mask == Mask::Alibi ? 8.0f : 0.0f;
        // a scale large enough that a few positions carry most of the weight, so a wrong or
        // missing position shows in the output
        const float scale = 8.0f / std::sqrt((float) c.dk);

        ggml_init_params ip = {};
        ip.mem_size = 256u << 20;
        ggml_context * ctx = ggml_init(ip);

        // Q as llama.cpp passes it: [DK, n_head, n_q] permuted to [DK, n_q, n_head]
        ggml_tensor * q_raw = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, c.dk, c.n_head, c.n_q);
        ggml_tensor * q = ggml_permute(ctx, q_raw, 0, 2, 1, 3);
        ggml_tensor * k;
        ggml_tensor * v;
        ggml_tensor * k_store;
        ggml_tensor * v_store;
        if (c.cache_layout) {
            k_store = ggml_new_tensor_2d(ctx, c.kv_type, (int64_t) c.dk * c.n_head_kv, c.n_kv);
            v_store = ggml_new_tensor_2d(ctx, c.kv_type, (int64_t) c.dv * c.n_head_kv, c.n_kv);
            k = ggml_view_3d(ctx, k_store, c.dk, c.n_kv, c.n_head_kv, k_store->nb[1], ggml_row_size(c.kv_type, c.dk), 0);
            v = ggml_view_3d(ctx, v_store, c.dv, c.n_kv, c.n_head_kv, v_store->nb[1], ggml_row_size(c.kv_type, c.dv), 0);
        } else {
            k = k_store = ggml_new_tensor_3d(ctx, c.kv_type, c.dk, c.n_kv, c.n_head_kv);
            v = v_store = ggml_new_tensor_3d(ctx, c.kv_type, c.dv, c.n_kv, c.n_head_kv);
        }
        ggml_tensor * mask = c.mask == Mask::None ? nullptr : ggml_new_tensor_3d(ctx, GGML_TYPE_F16, c.n_kv, c.n_q, n_mask_heads);
        ggml_tensor * sinks = c.sinks ? ggml_new_tensor_1d(ctx, GGML_TYPE_F32, c.n_head) : nullptr;

        // Inputs, kept as the values the kernel sees (K/V rounded to f16 where stored so)
        std::vector<float> Q((size_t) c.n_q * c.n_head * c.dk), K((size_t) c.n_head_kv * c.n_kv * c.dk),
            V((size_t) c.n_head_kv * c.n_kv * c.dv), S(c.n_head);
        for (float & x : Q) x = uni(rng);
        for (float & x : K) x = c.kv_type == GGML_TYPE_F16 ? round_f16(uni(rng)) : uni(rng);
        for (float & x : V) x = c.kv_type == GGML_TYPE_F16 ? round_f16(uni(rng)) : uni(rng);
        for (float & x : S) x = 2.0f * uni(rng);
        auto qv = [&](int i, int h, int d) -> float & { return Q[((size_t) i * c.n_head + h) * c.dk + d]; };
        auto kv = [&](int hk, int j, int d) -> float & { return K[((size_t) hk * c.n_kv + j) * c.dk + d]; };
        auto vv = [&](int hk, int j, int d) -> float & { return V[((size_t) hk * c.n_kv + j) * c.dv + d]; };

        std::memcpy(q_raw->data, Q.data(), Q.size() * sizeof(float));
        for (int hk = 0; hk < c.n_head_kv; ++hk) {
            for (int j = 0; j < c.n_kv; ++j) {
                char * kr = (char *) k->data + j * k->nb[1] + hk * k->nb[2];
                char * vr = (char *) v->data + j * v->nb[1] + hk * v->nb[2];
                for (int d = 0; d < c.dk; ++d) {
                    if (c.kv_type == GGML_TYPE_F16) ((ggml_fp16_t *) kr)[d] = ggml_fp32_to_fp16(kv(hk, j, d));
                    else ((float *) kr)[d] = kv(hk, j, d);
                }
                for (int d = 0; d < c.dv; ++d) {
                    if (c.kv_type == GGML_TYPE_F16) ((ggml_fp16_t *) vr)[d] = ggml_fp32_to_fp16(vv(hk, j, d));
                    else ((float *) vr)[d] = vv(hk, j, d);
                }
            }
        }
        if (mask) {
            for (int h = 0; h < n_mask_heads; ++h)
                for (int i = 0; i < c.n_q; ++i)
                    for (int j = 0; j < c.n_kv; ++j)
                        ((ggml_fp16_t *) mask->data)[((size_t) h * c.n_q + i) * c.n_kv + j] = ggml_fp32_to_fp16(mask_value(c, i, h, j));
        }
        if (sinks) std::memcpy(sinks->data, S.data(), S.size() * sizeof(float));

        ggml_tensor * out = ggml_flash_attn_ext(ctx, q, k, v, mask, scale, max_bias, c.softcap);
        if (sinks) ggml_flash_attn_ext_add_sinks(out, sinks);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, out);

        // The reference, and the control: the same with each head's heaviest position left out
        const int n_head_log2 = 1 << (int) std::floor(std::log2((double) c.n_head));
        const double m0 = std::pow(2.0, -max_bias / n_head_log2), m1 = std::pow(2.0, -(max_bias / 2.0) / n_head_log2);
        std::vector<double> ref((size_t) c.n_q * c.n_head * c.dv), control(ref.size());
        // rows whose control is defined: more than one visible position, or a sink
        std::vector<bool> has_control((size_t) c.n_q * c.n_head);
        int empty_rows = 0;
        for (int i = 0; i < c.n_q; ++i) {
            for (int h = 0; h < c.n_head; ++h) {
                const int hk = h / (c.n_head / c.n_head_kv);
                const double slope = max_bias > 0 ? (h < n_head_log2 ? std::pow(m0, h + 1) : std::pow(m1, 2 * (h - n_head_log2) + 1)) : 1.0;
                std::vector<double> s(c.n_kv);
                double mx = c.sinks ? (double) S[h] : -INFINITY;
                int heaviest = -1;
                for (int j = 0; j < c.n_kv; ++j) {
                    double dot = 0;
                    for (int d = 0; d < c.dk; ++d) dot += (double) qv(i, h, d) * kv(hk, j, d);
                    dot *= scale;
                    if (c.softcap != 0) dot = c.softcap * std::tanh(dot / c.softcap);
                    const float m = mask ? round_f16(mask_value(c, i, c.mask == Mask::PerHead ? h : 0, j)) : 0.0f;
                    s[j] = m == -INFINITY ? -INFINITY : dot + slope * m;
                    if (s[j] > mx) mx = s[j];
                    if (s[j] != -INFINITY && (heaviest < 0 || s[j] > s[heaviest])) heaviest = j;
                }
                const long visible = std::count_if(s.begin(), s.end(), [](double x) { return x != -INFINITY; });
                empty_rows += visible == 0;
                has_control[(size_t) i * c.n_head + h] = visible > 1 || c.sinks;
                for (int pass = 0; pass < 2; ++pass) {
                    double sum = c.sinks ? std::exp((double) S[h] - mx) : 0.0;
                    std::vector<double> acc(c.dv, 0.0);
                    for (int j = 0; j < c.n_kv; ++j) {
                        if (s[j] == -INFINITY || (pass == 1 && j == heaviest)) continue;
                        const double w = std::exp(s[j] - mx);
                        sum += w;
                        for (int d = 0; d < c.dv; ++d) acc[d] += w * vv(hk, j, d);
                    }
                    std::vector<double> & dst = pass == 0 ? ref : control;
                    for (int d = 0; d < c.dv; ++d) dst[((size_t) i * c.n_head + h) * c.dv + d] = acc[d] / sum;
                }
            }
        }

        for (int threads = 1; threads <= 4; ++threads) {
            std::memset(out->data, 0, ggml_nbytes(out));
            const ggml_status st = ggml_graph_compute_with_ctx(ctx, gf, threads);
            // out: [DV, n_head, n_q]
            double err = 0, ctl = INFINITY;
            bool finite = true;
            for (int i = 0; i < c.n_q; ++i) {
                for (int h = 0; h < c.n_head; ++h) {
                    double ctl_head = 0;
                    for (int d = 0; d < c.dv; ++d) {
                        const size_t at = ((size_t) i * c.n_head + h) * c.dv + d;
                        const double o = ((const float *) out->data)[at];
                        finite = finite && std::isfinite(o);
                        err = std::max(err, std::fabs(o - ref[at]));
                        ctl_head = std::max(ctl_head, std::fabs(o - control[at]));
                    }
                    if (has_control[(size_t) i * c.n_head + h]) ctl = std::min(ctl, ctl_head);
                }
            }
            std::printf("{\"case\":\"%s\",\"threads\":%d,\"status\":%d,\"emptyRows\":%d,\"finite\":%s,\"err\":%.3g,\"control\":%.3g,\"tol\":%g}\n",
                        c.name, threads, (int) st, empty_rows, finite ? "true" : "false", err, ctl, c.tol);
        }
        ggml_free(ctx);
    }
    return 0;
}
