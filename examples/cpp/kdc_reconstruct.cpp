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
#include <openvino/openvino.hpp>

#include <chrono>
#include <cstdio>
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

void write_floats(const std::string& path, const float* data, size_t count) {
    const std::string tmp = path + ".tmp";  // written to a temporary name, then renamed: never half-written
    {
        std::ofstream file(tmp, std::ios::binary);
        file.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
        if (!file) throw std::runtime_error(path + ": cannot write");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename");
}

std::string contract_of(const std::shared_ptr<ov::Model>& model) {
    if (model->has_rt_info("kdc", "contract")) return model->get_rt_info<std::string>("kdc", "contract");
    if (model->has_rt_info("framework", "kdc.contract")) return model->get_rt_info<std::string>("framework", "kdc.contract");
    throw std::runtime_error("no kdc contract in the model's metadata: export it with `kdc export`");
}

// The text after `"key":` in a JSON object (enough for the flat numbers and arrays read here).
std::string json_value(const std::string& json, const std::string& key) {
    const size_t at = json.find("\"" + key + "\"");
    if (at == std::string::npos) throw std::runtime_error("kdc contract has no '" + key + "'");
    size_t start = json.find(':', at) + 1;
    while (json[start] == ' ') ++start;
    std::string value = json.substr(start, json.find_first_of(",}", json[start] == '[' ? json.find(']', start) : start) - start);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    return value;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 5 || argc > 6) {
        std::cerr << "usage: " << argv[0] << " MODEL KSPACE.f32 MASK.f32|- IMAGE.f32 [THREADS]\n";
        return 2;
    }
    try {
        ov::Core core;
        std::shared_ptr<ov::Model> model = core.read_model(argv[1]);
        const std::string contract = contract_of(model);
        if (json_value(contract, "task").find("recon") == std::string::npos)
            throw std::runtime_error("not a reconstruction model (contract task " + json_value(contract, "task") + ")");
        const std::string size = json_value(contract, "image_size");  // "[H, W]"
        const size_t height = std::stoul(size.substr(1)), width = std::stoul(size.substr(size.find(',') + 1));
        std::cerr << "kdc contract v" << json_value(contract, "contract_version") << ", image " << height << "x"
                  << width << ", acceleration " << json_value(contract, "acceleration") << ", dc lowering "
                  << json_value(contract, "dc_lowering") << "\n";

        std::vector<float> kspace = read_floats(argv[2]);
        const size_t slice = 2 * height * width;
        if (kspace.empty() || kspace.size() % slice != 0)
            throw std::runtime_error(std::string(argv[2]) + ": expected (N, 2, " + std::to_string(height) + ", " +
                                     std::to_string(width) + ") float32 values");
        const size_t batch = kspace.size() / slice;

        bool has_mask_input = false;
        for (const auto& input : model->inputs()) has_mask_input |= input.get_any_name() == "mask";
        std::vector<float> mask;
        if (std::string(argv[3]) != "-") {
            mask = read_floats(argv[3]);
            if (mask.size() != width) throw std::runtime_error(std::string(argv[3]) + ": expected W float32 values");
            for (size_t i = 0; i < kspace.size(); ++i) kspace[i] *= mask[i % width];  // zero outside the samples
        } else if (has_mask_input) {
            throw std::runtime_error("this model takes a mask: pass MASK.f32");
        }

        ov::AnyMap config{ov::hint::inference_precision(ov::element::f32)};  // else bf16 on CPUs that have it
        if (argc == 6) config.emplace(ov::inference_num_threads(std::stoi(argv[5])));
        ov::CompiledModel compiled = core.compile_model(model, "CPU", config);
        ov::InferRequest request = compiled.create_infer_request();
        request.set_tensor("kspace", ov::Tensor(ov::element::f32, {batch, 2, height, width}, kspace.data()));
        if (has_mask_input) request.set_tensor("mask", ov::Tensor(ov::element::f32, {1, 1, 1, width}, mask.data()));
        const auto started = std::chrono::steady_clock::now();
        request.infer();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        const ov::Tensor image = request.get_tensor("image");
        write_floats(argv[4], image.data<const float>(), image.get_size());
        std::cerr << "reconstructed " << batch << " slice(s) in " << ms << " ms -> " << argv[4] << "\n";
    } catch (const std::exception& err) {
        std::cerr << "error: " << err.what() << "\n";
        return 1;
    }
    return 0;
}
