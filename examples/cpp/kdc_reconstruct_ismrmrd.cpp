// kdc_reconstruct_ismrmrd: a scanner file in, magnitude images out: what `kdc reconstruct MODEL SCAN.h5 --format h5`
// writes, without Python.
//
//   kdc_reconstruct_ismrmrd MODEL SCAN.h5 IMAGE.f32 [THREADS]
//
// SCAN.h5:   ISMRMRD (read with libismrmrd's C++ API), a Cartesian 2-D encoding, one or more coils, undersampled.
// IMAGE.f32: written as raw float32 (S, H, W): S slices of H phase-encode rows by W readout columns (reconSpace x).
// Per volume, as kdc.runtime.reconstruct and kdc.data.formats.ismrmrd do: each readout placed at its slice and
// kspace_encode_step_1 counters (repeats averaged), readout oversampling removed, the coils compressed to one
// virtual coil (leading eigenvector of the calibration region's covariance, kdc.mri.coils), centred -> uncentred,
// turned so that the sampled lines run as the model's mask, scaled so that the zero-filled image peaks at 1, the
// model run in batches of 8 slices, the magnitude scaled back and turned back.
#include "kdc_model.hpp"

#include <ismrmrd/dataset.h>
#include <ismrmrd/ismrmrd.h>
#include <ismrmrd/xml.h>

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using complex = std::complex<double>;
constexpr double PI = 3.14159265358979323846;
constexpr size_t BATCH = 8;  // kdc reconstruct's default --batch

// ---- 1-D orthonormal FFT: radix 2 where the length is a power of two, else a plain DFT ----

void fft(std::vector<complex>& line, bool inverse) {
    const size_t n = line.size();
    const double sign = inverse ? 1.0 : -1.0;
    if (n & (n - 1)) {
        std::vector<complex> out(n);
        for (size_t k = 0; k < n; ++k)
            for (size_t j = 0; j < n; ++j) out[k] += line[j] * std::polar(1.0, sign * 2 * PI * double(j * k % n) / n);
        line = out;
    } else {
        for (size_t i = 1, j = 0; i < n; ++i) {  // bit-reversal permutation, then butterflies
            size_t bit = n >> 1;
            for (; j & bit; bit >>= 1) j ^= bit;
            j ^= bit;
            if (i < j) std::swap(line[i], line[j]);
        }
        for (size_t half = 1; half < n; half <<= 1)
            for (size_t start = 0; start < n; start += 2 * half)
                for (size_t k = 0; k < half; ++k) {
                    const complex twiddle = std::polar(1.0, sign * PI * double(k) / double(half));
                    const complex a = line[start + k], b = line[start + k + half] * twiddle;
                    line[start + k] = a + b;
                    line[start + k + half] = a - b;
                }
    }
    for (complex& value : line) value /= std::sqrt(double(n));
}

// numpy's fftshift (shift = n / 2) and ifftshift (shift = n - n / 2) of one line: out[(i + shift) % n] = in[i].
std::vector<complex> rolled(const std::vector<complex>& line, size_t shift) {
    std::vector<complex> out(line.size());
    for (size_t i = 0; i < line.size(); ++i) out[(i + shift) % line.size()] = line[i];
    return out;
}

// Centred k-space of one readout (X samples) -> the k-space of its image's central `width` columns.
std::vector<complex> remove_oversampling(const std::vector<complex>& readout, size_t width) {
    const size_t n = readout.size();
    std::vector<complex> image = rolled(readout, n - n / 2);
    fft(image, true);
    image = rolled(image, n / 2);
    const size_t start = (n - width) / 2;
    std::vector<complex> cropped(image.begin() + long(start), image.begin() + long(start + width));
    cropped = rolled(cropped, width - width / 2);
    fft(cropped, false);
    return rolled(cropped, width / 2);
}

// ---- an ISMRMRD scan: centred k-space (S, C, H, W) and the phase-encode rows acquired ----

struct Scan {
    size_t slices = 0, coils = 0, height = 0, width = 0;
    std::vector<complex> kspace;  // (S, C, H, W), centred
    std::vector<bool> acquired;   // (H), centred: rows that hold readouts

    complex& at(size_t slice, size_t coil, size_t row, size_t column) {
        return kspace[((slice * coils + coil) * height + row) * width + column];
    }
};

// Readouts without image data (ISMRMRD flags); calibration lines are kept, as kdc keeps them.
// (Not const: libismrmrd's getters are not const member functions.)
bool is_image_readout(ISMRMRD::Acquisition& readout) {
    for (const auto flag : {ISMRMRD::ISMRMRD_ACQ_IS_NOISE_MEASUREMENT, ISMRMRD::ISMRMRD_ACQ_IS_NAVIGATION_DATA,
                            ISMRMRD::ISMRMRD_ACQ_IS_PHASECORR_DATA, ISMRMRD::ISMRMRD_ACQ_IS_HPFEEDBACK_DATA,
                            ISMRMRD::ISMRMRD_ACQ_IS_DUMMYSCAN_DATA, ISMRMRD::ISMRMRD_ACQ_IS_RTFEEDBACK_DATA,
                            ISMRMRD::ISMRMRD_ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
                            ISMRMRD::ISMRMRD_ACQ_IS_PHASE_STABILIZATION_REFERENCE,
                            ISMRMRD::ISMRMRD_ACQ_IS_PHASE_STABILIZATION})
        if (readout.isFlagSet(flag)) return false;
    const auto& idx = readout.idx();  // the first repetition, contrast, phase and set only
    return readout.encoding_space_ref() == 0 && idx.repetition == 0 && idx.contrast == 0 && idx.phase == 0 &&
           idx.set == 0;
}

// libismrmrd opens a file read-write and creates a missing 'dataset' group in it: look first, read-only.
void check_ismrmrd_file(const std::string& path) {
    if (!std::ifstream(path)) throw std::runtime_error(path + ": cannot read the file");
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors arrive as return values, not as HDF5's printed trace
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) throw std::runtime_error(path + ": not an HDF5 file");
    const bool found = H5Lexists(file, "dataset", H5P_DEFAULT) > 0 && H5Lexists(file, "dataset/xml", H5P_DEFAULT) > 0 &&
                       H5Lexists(file, "dataset/data", H5P_DEFAULT) > 0;
    H5Fclose(file);
    if (!found) throw std::runtime_error(path + ": not an ISMRMRD file: expected 'dataset/xml' and 'dataset/data'");
}

Scan read_scan(const std::string& path) {
    check_ismrmrd_file(path);
    ISMRMRD::Dataset dataset(path.c_str(), "dataset", false);
    ISMRMRD::IsmrmrdHeader header;
    try {
        std::string xml;
        dataset.readHeader(xml);
        ISMRMRD::deserialize(xml.c_str(), header);
    } catch (const std::exception& err) {
        throw std::runtime_error(path + ": 'dataset/xml' is not an ISMRMRD header (" + err.what() + ")");
    }
    if (header.encoding.empty()) throw std::runtime_error(path + ": 'dataset/xml' has no encoding");
    const ISMRMRD::Encoding& encoding = header.encoding[0];
    if (encoding.trajectory != ISMRMRD::TrajectoryType::CARTESIAN)
        throw std::runtime_error(path + ": 'dataset/xml' encoding trajectory is not cartesian");
    const ISMRMRD::MatrixSize encoded = encoding.encodedSpace.matrixSize, recon = encoding.reconSpace.matrixSize;
    if (encoded.z != 1)
        throw std::runtime_error(path + ": 'dataset/xml' encodedSpace matrixSize z=" + std::to_string(encoded.z) +
                                 ": a 3-D encoding, expected 2-D (z=1)");
    if (recon.x > encoded.x) throw std::runtime_error(path + ": 'dataset/xml' reconSpace x exceeds encodedSpace x");
    const auto& limits = encoding.encodingLimits.kspace_encoding_step_1;
    const long centre = limits.is_present() ? limits.get().center : encoded.y / 2;

    std::vector<ISMRMRD::Acquisition> readouts;
    std::map<uint16_t, size_t> slice_numbers;  // slice counters renumbered 0..S-1 in order
    for (uint32_t i = 0, count = dataset.getNumberOfAcquisitions(); i < count; ++i) {
        ISMRMRD::Acquisition readout;
        dataset.readAcquisition(i, readout);
        if (!is_image_readout(readout)) continue;
        slice_numbers[readout.idx().slice] = 0;
        readouts.push_back(std::move(readout));
    }
    if (readouts.empty()) throw std::runtime_error(path + ": 'dataset/data' holds no image readouts");
    size_t number = 0;
    for (auto& entry : slice_numbers) entry.second = number++;

    Scan scan;
    scan.slices = slice_numbers.size();
    scan.coils = readouts[0].active_channels();
    scan.height = encoded.y;
    scan.width = encoded.x;
    scan.kspace.assign(scan.slices * scan.coils * scan.height * scan.width, 0.0);
    scan.acquired.assign(scan.height, false);
    std::vector<int> repeats(scan.slices * scan.height, 0);
    const size_t samples = readouts[0].number_of_samples();
    for (ISMRMRD::Acquisition& readout : readouts) {
        if (scan.coils == 0 || readout.active_channels() != scan.coils || readout.number_of_samples() != samples ||
            samples > encoded.x)
            throw std::runtime_error(path + ": 'dataset/data' readouts differ in active_channels or "
                                     "number_of_samples, have no coils, or exceed the encoded matrix x=" + std::to_string(encoded.x));
        const long row = long(readout.idx().kspace_encode_step_1) - centre + encoded.y / 2;
        const long offset = long(encoded.x / 2) - long(readout.center_sample());
        if (row < 0 || row >= long(encoded.y) || offset < 0 || offset + long(samples) > long(encoded.x))
            throw std::runtime_error(path + ": 'dataset/data' kspace_encode_step_1 or center_sample place a readout "
                                     "outside the encoded matrix (inconsistent matrix sizes)");
        const size_t slice = slice_numbers[readout.idx().slice];
        for (size_t coil = 0; coil < scan.coils; ++coil)
            for (size_t sample = 0; sample < samples; ++sample)
                scan.at(slice, coil, size_t(row), size_t(offset) + sample) +=
                    complex(readout.getDataPtr()[coil * samples + sample]);
        ++repeats[slice * scan.height + size_t(row)];
        scan.acquired[size_t(row)] = true;
    }
    std::vector<complex> kept(scan.slices * scan.coils * scan.height * recon.x), readout(scan.width);
    for (size_t line = 0; line < scan.slices * scan.coils * scan.height; ++line) {  // (slice, coil, row)
        const double count = std::max(repeats[line / (scan.coils * scan.height) * scan.height + line % scan.height], 1);
        for (size_t column = 0; column < scan.width; ++column) readout[column] = scan.kspace[line * scan.width + column] / count;
        const std::vector<complex> cropped = recon.x == encoded.x ? readout : remove_oversampling(readout, recon.x);
        std::copy(cropped.begin(), cropped.end(), kept.begin() + long(line * recon.x));
    }
    scan.kspace = std::move(kept);
    scan.width = recon.x;
    return scan;
}

// ---- coil compression to one virtual coil (kdc.mri.coils) ----

// The calibration rows: the contiguous run of acquired rows around the centre row H/2 (wrapping at the ends).
std::vector<bool> calibration_rows(const std::vector<bool>& acquired) {
    const size_t n = acquired.size();
    std::vector<bool> run(n, false);
    for (size_t step : {size_t(1), n - 1})
        for (size_t count = 0, row = n / 2; count < n && acquired[row]; ++count, row = (row + step) % n) run[row] = true;
    return run;
}

// The leading eigenvector of a Hermitian positive semi-definite (C, C) matrix: squaring it again and again leaves
// lambda_1^(2^k) v v^H; its strongest column is v up to a phase.
std::vector<complex> leading_eigenvector(std::vector<complex> matrix, size_t size) {
    for (int squaring = 0; squaring < 64; ++squaring) {
        std::vector<complex> product(size * size);
        double norm = 0;
        for (size_t i = 0; i < size; ++i)
            for (size_t j = 0; j < size; ++j) {
                for (size_t k = 0; k < size; ++k) product[i * size + j] += matrix[i * size + k] * matrix[k * size + j];
                norm += std::norm(product[i * size + j]);
            }
        if (norm == 0) throw std::runtime_error("the calibration region holds no signal: cannot compress the coils");
        for (complex& value : product) value /= std::sqrt(norm);
        matrix = product;
    }
    size_t best = 0;
    double best_norm = -1;
    for (size_t j = 0; j < size; ++j) {
        double norm = 0;
        for (size_t i = 0; i < size; ++i) norm += std::norm(matrix[i * size + j]);
        if (norm > best_norm) best = j, best_norm = norm;
    }
    std::vector<complex> vector(size);
    for (size_t i = 0; i < size; ++i) vector[i] = matrix[i * size + best] / std::sqrt(best_norm);
    return vector;
}

// (S, C, H, W) -> (S, H, W): the weights of the covariance's leading eigenvector, phased so that the strongest
// coil's weight is real and positive (the virtual coil's phase follows that coil's).
std::vector<complex> compress_coils(const Scan& scan) {
    const size_t coils = scan.coils, plane = scan.height * scan.width;
    const std::vector<bool> rows = calibration_rows(scan.acquired);
    std::vector<complex> covariance(coils * coils);
    for (size_t slice = 0; slice < scan.slices; ++slice)
        for (size_t row = 0; row < scan.height; ++row) {
            if (!rows[row]) continue;
            for (size_t column = 0; column < scan.width; ++column) {
                const size_t at = slice * coils * plane + row * scan.width + column;
                for (size_t a = 0; a < coils; ++a)
                    for (size_t b = 0; b < coils; ++b)
                        covariance[a * coils + b] += scan.kspace[at + a * plane] * std::conj(scan.kspace[at + b * plane]);
            }
        }
    std::vector<complex> weights = leading_eigenvector(covariance, coils);
    const auto strongest = std::max_element(weights.begin(), weights.end(),
                                            [](complex a, complex b) { return std::abs(a) < std::abs(b); });
    const complex phase = std::abs(*strongest) / *strongest;
    std::vector<complex> virtual_coil(scan.slices * plane);
    for (size_t slice = 0; slice < scan.slices; ++slice)
        for (size_t coil = 0; coil < coils; ++coil) {
            const complex weight = std::conj(weights[coil] * phase);
            for (size_t i = 0; i < plane; ++i)
                virtual_coil[slice * plane + i] += weight * scan.kspace[(slice * coils + coil) * plane + i];
        }
    return virtual_coil;
}

// ---- from the scan's centred k-space to the model's input ----

// Centred k-space of an image (fft2c) -> kdc's uncentred k-space of the same image (fft2), per (H, W) plane:
// ifftshift, then the phase ramp that moves the image's origin from its centre to index 0 (kdc.mri.fft).
std::vector<complex> centred_to_uncentred(const std::vector<complex>& kspace, size_t height, size_t width) {
    std::vector<complex> out(kspace.size());
    for (size_t plane = 0; plane < kspace.size(); plane += height * width)
        for (size_t row = 0; row < height; ++row)
            for (size_t column = 0; column < width; ++column) {
                const double turns = double(row * (height / 2)) / height + double(column * (width / 2)) / width;
                out[plane + row * width + column] =
                    kspace[plane + (row + height / 2) % height * width + (column + width / 2) % width] *
                    std::polar(1.0, -2 * PI * turns);
            }
    return out;
}

// Largest magnitude of the zero-filled images (orthonormal inverse 2-D FFT) of (S, H, W) uncentred k-space.
double zero_filled_peak(const std::vector<complex>& kspace, size_t height, size_t width) {
    double peak = 0;
    std::vector<complex> image(height * width), line;
    for (size_t plane = 0; plane < kspace.size(); plane += height * width) {
        std::copy(kspace.begin() + long(plane), kspace.begin() + long(plane + height * width), image.begin());
        for (size_t row = 0; row < height; ++row) {
            line.assign(image.begin() + long(row * width), image.begin() + long((row + 1) * width));
            fft(line, true);
            std::copy(line.begin(), line.end(), image.begin() + long(row * width));
        }
        for (size_t column = 0; column < width; ++column) {
            line.resize(height);
            for (size_t row = 0; row < height; ++row) line[row] = image[row * width + column];
            fft(line, true);
            for (const complex& value : line) peak = std::max(peak, std::abs(value));
        }
    }
    return peak;
}

// (S, H, W) -> (S, W, H).
template <typename T>
std::vector<T> transposed(const std::vector<T>& planes, size_t height, size_t width) {
    std::vector<T> out(planes.size());
    for (size_t plane = 0; plane < planes.size(); plane += height * width)
        for (size_t row = 0; row < height; ++row)
            for (size_t column = 0; column < width; ++column)
                out[plane + column * height + row] = planes[plane + row * width + column];
    return out;
}

std::vector<float> reconstruct(ov::Core& core, const kdc::Model& model, const std::string& path, int threads) {
    Scan scan = read_scan(path);
    if (scan.coils > 1 && !model.is_complex())
        throw std::runtime_error(path + ": multi-coil k-space (" + std::to_string(scan.coils) + " coils) needs a "
                                 "complex model (contract output_kind 'complex')");
    if (!model.takes_mask())
        throw std::runtime_error("the model has its mask baked in: export it with a mask input for acquired lines");
    if (std::all_of(scan.acquired.begin(), scan.acquired.end(), [](bool row) { return row; }))
        throw std::runtime_error(path + ": k-space is fully sampled: undersample it with kdc reconstruct --acc N");
    std::vector<complex> kspace = scan.coils > 1 ? compress_coils(scan) : scan.kspace;
    kspace = centred_to_uncentred(kspace, scan.height, scan.width);
    std::vector<float> rows(scan.height);  // the acquired rows, uncentred (ifftshift)
    for (size_t row = 0; row < scan.height; ++row) rows[row] = scan.acquired[(row + scan.height / 2) % scan.height];

    // The scan samples rows; a model whose mask samples columns, (1, 1, 1, W), takes it turned.
    const ov::Shape& mask_shape = model.mask_shape();
    const bool turn = mask_shape[2] == 1 && mask_shape[3] > 1;
    const size_t height = turn ? scan.width : scan.height, width = turn ? scan.height : scan.width;
    if (turn) kspace = transposed(kspace, scan.height, scan.width);
    if (height != model.height() || width != model.width())
        throw std::runtime_error(path + ": k-space matrix " + std::to_string(height) + "x" + std::to_string(width) +
                                 " does not fit the model, exported for " + std::to_string(model.height()) + "x" +
                                 std::to_string(model.width()) + "; export it with kdc export RUN --size " +
                                 std::to_string(height) + " " + std::to_string(width));
    auto sampled = [&](size_t row, size_t column) { return rows[turn ? column : row]; };
    std::vector<float> mask(mask_shape[2] * mask_shape[3]);
    for (size_t row = 0; row < mask_shape[2]; ++row)
        for (size_t column = 0; column < mask_shape[3]; ++column)
            mask[row * mask_shape[3] + column] = sampled(row, column);

    const size_t plane = height * width;
    for (size_t i = 0; i < kspace.size(); ++i) kspace[i] *= sampled(i % plane / width, i % width);
    const double peak = zero_filled_peak(kspace, height, width);
    const float scale = peak > 0 ? float(peak) : 1.0f;
    std::vector<float> channels(2 * kspace.size());  // (S, 2, H, W), scaled so that the zero-filled image peaks at 1
    for (size_t i = 0; i < kspace.size(); ++i) {
        channels[(i / plane * 2) * plane + i % plane] = float(kspace[i].real()) / scale;
        channels[(i / plane * 2 + 1) * plane + i % plane] = float(kspace[i].imag()) / scale;
    }

    ov::InferRequest request = model.compile(core, threads);
    std::vector<float> images(scan.slices * plane);
    for (size_t start = 0; start < scan.slices; start += BATCH) {
        const size_t batch = std::min(BATCH, scan.slices - start);
        const ov::Tensor output = model.infer(request, channels.data() + start * 2 * plane, batch, mask.data());
        const size_t outputs = output.get_shape()[1];  // 1: a real image, 2: real and imaginary parts
        const float* values = output.data<const float>();
        for (size_t slice = 0; slice < batch; ++slice)
            for (size_t i = 0; i < plane; ++i) {
                const float* pixel = values + slice * outputs * plane + i;
                images[(start + slice) * plane + i] =
                    (outputs == 2 ? std::hypot(pixel[0], pixel[plane]) : std::abs(pixel[0])) * scale;
            }
    }
    std::cerr << path << ": " << scan.slices << " slice(s) " << scan.height << "x" << scan.width << ", "
              << scan.coils << " coil(s), zero-filled peak " << peak << "\n";
    return turn ? transposed(images, height, width) : images;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 5) {
        std::cerr << "usage: " << argv[0] << " MODEL SCAN.h5 IMAGE.f32 [THREADS]\n";
        return 2;
    }
    ISMRMRD::ismrmrd_set_error_handler([](const char*, int, const char*, int, const char*) {});  // errors arrive as exceptions
    try {
        ov::Core core;
        const kdc::Model model(core, argv[1]);
        std::cerr << model.describe() << "\n";
        const std::vector<float> images = reconstruct(core, model, argv[2], argc == 5 ? std::stoi(argv[4]) : 0);
        kdc::write_floats(argv[3], images.data(), images.size());
    } catch (const std::exception& err) {
        std::cerr << "error: " << kdc::one_line(err.what()) << "\n";
        return 1;
    }
    return 0;
}
