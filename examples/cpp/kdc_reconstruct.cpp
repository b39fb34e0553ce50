// kdc_reconstruct: run an exported kdc reconstruction model (ONNX or OpenVINO IR) on a batch of k-space slices.
//
//   kdc_reconstruct MODEL KSPACE.f32 MASK.f32|- IMAGE.f32 [THREADS]
//
// KSPACE.f32: raw float32, row-major (N, 2, H, W): real and imaginary parts, uncentred, orthonormal FFT scale,
//             scaled as the contract's "normalisation" says (N is read from the file size).
// MASK.f32:   raw float32 (W): 1 = sampled phase-encode column, uncentred; "-" for a model with its mask baked in.
// IMAGE.f32:  written as raw float32 (N, 1, H, W).
// The kdc contract (JSON) is read from the model's metadata: ONNX metadata_props "kdc.contract", which OpenVINO
// exposes under rt_info framework/kdc.contract, or IR rt_info kdc/contract.
#include "kdc_model.hpp"

#include <chrono>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<float> read_floats(const std::string& path) {
    std::ifstream file(path, std::ios::binary | std::ios::ate);
    if (!file) throw std::runtime_error(path + ": cannot open");
    const std::streamsize bytes = file.tellg();
    if (bytes % static_cast<std::streamsize>(sizeof(float)) != 0)
        throw std::runtime_error(path + ": size is not a whole number of float32 values");
    std::vector<float> values(static_cast<size_t>(bytes) / sizeof(float));
    file.seekg(0);
    file.read(reinterpret_cast<char*>(values.data()), bytes);
    return values;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5 || argc > 6) {
        std::cerr << "usage: " << argv[0] << " MODEL KSPACE.f32 MASK.f32|- IMAGE.f32 [THREADS]\n";
        return 2;
    }
    try {
        ov::Core core;
        const kdc::Model model(core, argv[1]);
        const size_t height = model.height(), width = model.width();
        std::cerr << model.describe() << "\n";

        std::vector<float> kspace = read_floats(argv[2]);
        const size_t slice = 2 * height * width;
        if (kspace.empty() || kspace.size() % slice != 0)
            throw std::runtime_error(std::string(argv[2]) + ": expected (N, 2, " + std::to_string(height) + ", " +
                                     std::to_string(width) + ") float32 values");
        const size_t batch = kspace.size() / slice;

        std::vector<float> mask;
        if (std::string(argv[3]) != "-") {
            mask = read_floats(argv[3]);
            if (mask.size() != width) throw std::runtime_error(std::string(argv[3]) + ": expected W float32 values");
            for (size_t i = 0; i < kspace.size(); ++i) kspace[i] *= mask[i % width];  // zero outside the samples
        } else if (model.takes_mask()) {
            throw std::runtime_error("this model takes a mask: pass MASK.f32");
        }

        ov::InferRequest request = model.compile(core, argc == 6 ? std::stoi(argv[5]) : 0);
        const auto started = std::chrono::steady_clock::now();
        const ov::Tensor image = model.infer(request, kspace.data(), batch, mask.data());
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        kdc::write_floats(argv[4], image.data<const float>(), image.get_size());
        std::cerr << "reconstructed " << batch << " slice(s) in " << ms << " ms -> " << argv[4] << "\n";
    } catch (const std::exception& err) {
        std::cerr << "error: " << kdc::one_line(err.what()) << "\n";
        return 1;
    }
    return 0;
}
