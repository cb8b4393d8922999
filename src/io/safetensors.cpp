#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "core/error.h"
#include "io/json_read.h"

namespace bf {

namespace {

using nlohmann::json;

// Element counts and byte sizes stay below this so numel * dtype_size (<= 8) and
// pointer arithmetic cannot overflow int64/size_t.
constexpr uint64_t kMaxTensorBytes = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / 8;

std::optional<DType> dtype_from_name(const std::string& name) {
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F32") return DType::kF32;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return std::nullopt;
}

// Dtypes the safetensors format defines but blockflash does not load.
bool is_known_unsupported_dtype(const std::string& name) {
  static const char* const kNames[] = {"BOOL", "U8",     "I8",      "I16",     "U16",
                                       "U32",  "U64",    "F64",     "F8_E5M2", "F8_E4M3",
                                       "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  for (const char* known : kNames) {
    if (name == known) return true;
  }
  return false;
}

// Reads a non-negative JSON integer; `what` names it in the error.
uint64_t read_count(const json& value, const std::string& prefix, const char* what) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  BF_CHECK(!value.is_number_integer(), prefix, what, " is negative (", value.get<int64_t>(), ")");
  fail(prefix, what, " must be a non-negative integer, found ", json_type_name(value));
}

const json& member(const json& entry, const char* key, const std::string& prefix) {
  auto found = entry.find(key);
  BF_CHECK(found != entry.end(), prefix, "missing \"", key, "\"");
  return *found;
}

struct ParsedEntry {
  TensorInfo info;
  uint64_t begin = 0;
  uint64_t end = 0;
};

ParsedEntry parse_entry(const std::string& name, const json& entry, const std::string& file_prefix,
                        uint64_t data_size) {
  std::string prefix = str_cat(file_prefix, "tensor \"", name, "\": ");
  BF_CHECK(!name.empty(), file_prefix, "a tensor has an empty name");
  BF_CHECK(entry.is_object(), prefix, "entry must be an object, found ", json_type_name(entry));

  ParsedEntry parsed;
  parsed.info.name = name;

  const json& dtype_value = member(entry, "dtype", prefix);
  BF_CHECK(dtype_value.is_string(), prefix, "\"dtype\" must be a string, found ",
           json_type_name(dtype_value));
  std::string dtype_name = dtype_value.get<std::string>();
  std::optional<DType> dtype = dtype_from_name(dtype_name);
  BF_CHECK(dtype || !is_known_unsupported_dtype(dtype_name), prefix, "unsupported dtype ",
           dtype_name, " (blockflash loads BF16, F16, F32, I32, I64)");
  BF_CHECK(dtype.has_value(), prefix, "unknown dtype \"", dtype_name, "\"");
  parsed.info.dtype = *dtype;

  const json& shape_value = member(entry, "shape", prefix);
  BF_CHECK(shape_value.is_array(), prefix, "\"shape\" must be an array, found ",
           json_type_name(shape_value));
  uint64_t numel = 1;
  for (const json& extent_value : shape_value) {
    uint64_t extent = read_count(extent_value, prefix, "a \"shape\" extent");
    BF_CHECK(extent <= kMaxTensorBytes && (extent == 0 || numel <= kMaxTensorBytes / extent),
             prefix, "\"shape\" has too many elements (the byte size overflows)");
    numel *= extent;
    parsed.info.shape.push_back(static_cast<int64_t>(extent));
  }

  const json& offsets = member(entry, "data_offsets", prefix);
  BF_CHECK(offsets.is_array() && offsets.size() == 2, prefix,
           "\"data_offsets\" must be an array of two integers [begin, end]");
  parsed.begin = read_count(offsets[0], prefix, "data_offsets begin");
  parsed.end = read_count(offsets[1], prefix, "data_offsets end");
  BF_CHECK(parsed.begin <= parsed.end, prefix, "data_offsets begin ", parsed.begin,
           " is after end ", parsed.end);
  BF_CHECK(parsed.end <= data_size, prefix, "data_offsets end ", parsed.end,
           " is beyond the data section (", data_size, " bytes)");
  uint64_t expected_bytes = numel * dtype_size(parsed.info.dtype);
  BF_CHECK(parsed.end - parsed.begin == expected_bytes, prefix, "data_offsets [", parsed.begin,
           ", ", parsed.end, "] hold ", parsed.end - parsed.begin, " bytes, but shape ",
           shape_string(parsed.info.shape), " of ", dtype_name, " needs ", expected_bytes);
  parsed.info.size_bytes = static_cast<size_t>(expected_bytes);
  return parsed;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& prefix) {
  BF_CHECK(value.is_object(), prefix, "\"__metadata__\" must be an object, found ",
           json_type_name(value));
  std::map<std::string, std::string> metadata;
  for (auto item = value.begin(); item != value.end(); ++item) {
    BF_CHECK(item.value().is_string(), prefix, "\"__metadata__\" value of \"", item.key(),
             "\" must be a string, found ", json_type_name(item.value()));
    metadata[item.key()] = item.value().get<std::string>();
  }
  return metadata;
}

}  // namespace

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  SafetensorsFile file;
  file.mapping = MappedFile::open(path);
  const uint8_t* bytes = file.mapping->data();
  const uint64_t file_size = file.mapping->size_bytes();
  const std::string prefix = str_cat("safetensors file ", path.string(), ": ");

  BF_CHECK(file_size >= 8, prefix, "only ", file_size, " bytes, shorter than the 8-byte header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // little-endian
  BF_CHECK(header_size <= kMaxSafetensorsHeaderBytes, prefix, "header length ", header_size,
           " is absurd (limit ", kMaxSafetensorsHeaderBytes, " bytes)");
  BF_CHECK(header_size <= file_size - 8, prefix, "header length ", header_size,
           " runs past the end of the file (", file_size, " bytes)");

  std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  json header = parse_json_object(header_text, str_cat("safetensors file ", path.string(), " header"));

  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = file_size - data_start;
  std::vector<ParsedEntry> entries;
  entries.reserve(header.size());
  for (auto item = header.begin(); item != header.end(); ++item) {
    if (item.key() == "__metadata__") {
      file.metadata = parse_metadata(item.value(), prefix);
      continue;
    }
    entries.push_back(parse_entry(item.key(), item.value(), prefix, data_size));
  }

  std::sort(entries.begin(), entries.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Sorted by begin, a non-empty tensor overlaps an earlier one iff it starts before the
  // furthest end seen so far. Empty tensors own no bytes and cannot overlap.
  const ParsedEntry* furthest = nullptr;
  for (const ParsedEntry& entry : entries) {
    if (entry.begin == entry.end) continue;
    BF_CHECK(furthest == nullptr || entry.begin >= furthest->end, prefix, "tensor \"",
             entry.info.name, "\" data_offsets [", entry.begin, ", ", entry.end,
             "] overlap tensor \"", furthest->info.name, "\" [", furthest->begin, ", ",
             furthest->end, "]");
    furthest = &entry;
  }

  file.tensors.reserve(entries.size());
  for (ParsedEntry& entry : entries) {
    entry.info.data = bytes + data_start + entry.begin;
    entry.info.file = path;
    file.tensors.push_back(std::move(entry.info));
  }
  return file;
}

void convert_to_f32(const TensorInfo& info, float* out) {
  const size_t numel = static_cast<size_t>(shape_numel(info.shape));
  const uint8_t* src = info.data;  // possibly unaligned: copy element by element
  switch (info.dtype) {
    case DType::kF32:
      std::memcpy(out, src, numel * sizeof(float));
      return;
    case DType::kBF16:
    case DType::kF16: {
      const bool is_bf16 = info.dtype == DType::kBF16;
      for (size_t i = 0; i < numel; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, sizeof(bits));
        out[i] = is_bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
      }
      return;
    }
    default:
      fail("tensor \"", info.name, "\" in ", info.file.string(), " has dtype ", dtype_name(info.dtype),
           ", which cannot be read as f32 (BF16, F16 or F32 only)");
  }
}

}  // namespace bf
