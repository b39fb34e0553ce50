// kdc_model.hpp: what both example programs share: an exported kdc model read with OpenVINO (its kdc contract,
// image size and mask input), inference at the precision the contract validated, and writing raw float32 files
// without leaving half-written ones.
#pragma once

#include <openvino/openvino.hpp>

#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>

namespace kdc {

inline void write_floats(const std::string& path, const float* data, size_t count) {
    const std::string tmp = path + ".tmp";  // written to a temporary name, then renamed: never half-written
    {
        std::ofstream file(tmp, std::ios::binary);
        file.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
        if (!file) {
            std::remove(tmp.c_str());
            throw std::runtime_error(path + ": cannot write");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename");
}

// An exception's message on one line (OpenVINO's span several).
inline std::string one_line(std::string message) {
    while (!message.empty() && message.back() == '\n') message.pop_back();
    for (char& c : message)
        if (c == '\n') c = ' ';
    return message;
}

// The text after `"key":` in a JSON object (enough for the flat numbers, strings and arrays read here).
inline std::string json_value(const std::string& json, const std::string& key) {
    const size_t at = json.find("\"" + key + "\"");
    if (at == std::string::npos) throw std::runtime_error("kdc contract has no '" + key + "'");
    size_t start = json.find(':', at) + 1;
    while (json[start] == ' ') ++start;
    std::string value = json.substr(start, json.find_first_of(",}", json[start] == '[' ? json.find(']', start) : start) - start);
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    return value;
}

// An exported kdc reconstruction model: k-space (N, 2, H, W) [+ mask] -> image (N, 1 or 2, H, W).
class Model {
public:
    Model(ov::Core& core, const std::string& path) : graph_(read_graph(core, path)), contract_(read_contract()) {
        if (value("task").find("recon") == std::string::npos)
            throw std::runtime_error("not a reconstruction model (contract task " + value("task") + ")");
        const std::string size = value("image_size");  // "[H, W]"
        height_ = std::stoul(size.substr(1));
        width_ = std::stoul(size.substr(size.find(',') + 1));
        for (const auto& input : graph_->inputs())
            if (input.get_any_name() == "mask") mask_shape_ = input.get_shape();
    }

    std::string value(const std::string& key) const { return json_value(contract_, key); }
    size_t height() const { return height_; }
    size_t width() const { return width_; }
    bool takes_mask() const { return !mask_shape_.empty(); }
    // The mask input's shape: (1, 1, 1, W) sampled columns, (1, 1, H, 1) rows, (1, 1, H, W) a 2-D mask.
    const ov::Shape& mask_shape() const { return mask_shape_; }
    bool is_complex() const { return value("output_kind") == "complex"; }

    // The precision the export validated the file at (contract precision.inference_precision, written by
    // `kdc export --precision`): "bf16" or "f32" (files from before it was recorded: f32).
    std::string inference_precision() const {
        if (contract_.find("\"inference_precision\"") == std::string::npos) return "f32";
        return value("inference_precision") == "bf16" ? "bf16" : "f32";
    }

    std::string describe() const {
        return "kdc contract v" + value("contract_version") + ", image " + std::to_string(height_) + "x" +
               std::to_string(width_) + ", acceleration " + value("acceleration") + ", dc lowering " +
               value("dc_lowering") + ", precision " + inference_precision();
    }

    // CPU at the validated precision: bf16 only for a file gated at bf16 on PSNR; f32 otherwise (else OpenVINO runs
    // bf16 on CPUs that have it, with errors of 1e-3 to 1e-2 that nobody measured).
    ov::InferRequest compile(ov::Core& core, int threads) const {
        const ov::element::Type precision = inference_precision() == "bf16" ? ov::element::bf16 : ov::element::f32;
        ov::AnyMap config{ov::hint::inference_precision(precision)};
        if (threads > 0) config.emplace(ov::inference_num_threads(threads));
        return core.compile_model(graph_, "CPU", config).create_infer_request();
    }

    // One inference of `batch` slices; `mask` holds the mask input's values (ignored for a baked mask).
    ov::Tensor infer(ov::InferRequest& request, float* kspace, size_t batch, float* mask) const {
        request.set_tensor("kspace", ov::Tensor(ov::element::f32, {batch, 2, height_, width_}, kspace));
        if (takes_mask()) request.set_tensor("mask", ov::Tensor(ov::element::f32, mask_shape_, mask));
        request.infer();
        return request.get_tensor("image");
    }

private:
    static std::shared_ptr<ov::Model> read_graph(ov::Core& core, const std::string& path) {
        const std::string suffix = path.substr(path.find_last_of('.') + 1);
        if (suffix != "onnx" && suffix != "xml")
            throw std::runtime_error(path + ": expected an exported kdc model, .onnx or OpenVINO IR .xml");
        if (!std::ifstream(path)) throw std::runtime_error(path + ": cannot open the model");  // not OpenVINO's trace
        return core.read_model(path);
    }

    // ONNX metadata_props "kdc.contract" (OpenVINO exposes it under rt_info framework/kdc.contract) or IR kdc/contract.
    std::string read_contract() const {
        if (graph_->has_rt_info("kdc", "contract")) return graph_->get_rt_info<std::string>("kdc", "contract");
        if (graph_->has_rt_info("framework", "kdc.contract"))
            return graph_->get_rt_info<std::string>("framework", "kdc.contract");
        throw std::runtime_error("no kdc contract in the model's metadata: export it with `kdc export`");
    }

    std::shared_ptr<ov::Model> graph_;
    std::string contract_;
    size_t height_ = 0, width_ = 0;
    ov::Shape mask_shape_;
};

}  // namespace kdc
