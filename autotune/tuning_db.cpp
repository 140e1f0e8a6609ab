#include "autotune/tuning_db.hpp"

#include <dilatron/error.hpp>
#include <dilatron/version.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "autotune/candidates.hpp"
#include "codegen/compiler.hpp"
#include "codegen/templates.hpp"

namespace dilatron::autotune {
namespace {

using nlohmann::json;

json to_json(const TuningRecord& r) {
  json candidates = json::array();
  for (const CandidateTiming& c : r.candidates) {
    json j = {{"tiles", tiles_text(c.tiles)}, {"median_us", c.median_us ? json(*c.median_us) : json(nullptr)}};
    if (!c.error.empty()) j["error"] = c.error;
    candidates.push_back(std::move(j));
  }
  const TuningKey& k = r.key;
  return {{"device", k.device}, {"arch", k.arch},           {"driver", k.driver},
          {"nvrtc", k.nvrtc},   {"library", k.library},     {"templates", k.templates},
          {"spec", k.spec},     {"seq_len_bucket", k.seq_len_bucket}, {"winner", tiles_text(r.winner)},
          {"date", r.date},     {"candidates", std::move(candidates)}};
}

std::string quoted(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// An integer as written ("4294967297" is not format 1, "64.0" is not 64), within Int's range.
template <class Int>
Int integer(const json& object, const char* key) {
  const json& value = object.at(key);
  if (!value.is_number_integer()) throw Error(fmt::format("\"{}\": {} is not an integer", key, quoted(value)));
  const bool fits = value.is_number_unsigned()
                        ? value.get<std::uint64_t>() <= std::uint64_t(std::numeric_limits<Int>::max())
                        : value.get<std::int64_t>() >= std::int64_t(std::numeric_limits<Int>::min()) &&
                              value.get<std::int64_t>() <= std::int64_t(std::numeric_limits<Int>::max());
  if (!fits) throw Error(fmt::format("\"{}\": {} is out of range", key, quoted(value)));
  return Int(value.get<std::int64_t>());
}

std::optional<double> median(const json& candidate) {
  const json& value = candidate.at("median_us");
  if (value.is_null()) return std::nullopt;
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0) {
    throw Error(fmt::format("\"median_us\": {} is not a time in microseconds", quoted(value)));
  }
  return value.get<double>();
}

TuningRecord from_json(const json& j) {
  TuningRecord r;
  r.key = {j.at("device").get<std::string>(),    j.at("arch").get<std::string>(),   integer<int>(j, "driver"),
           j.at("nvrtc").get<std::string>(),     j.at("library").get<std::string>(), j.at("templates").get<std::string>(),
           j.at("spec").get<std::string>(),      integer<std::int64_t>(j, "seq_len_bucket")};
  r.winner = parse_tiles(j.at("winner").get<std::string>());
  r.date = j.at("date").get<std::string>();
  for (const json& c : j.at("candidates")) {
    r.candidates.push_back({parse_tiles(c.at("tiles").get<std::string>()), median(c), c.value("error", std::string())});
  }
  const auto winner = std::find_if(r.candidates.begin(), r.candidates.end(),
                                   [&](const CandidateTiming& c) { return c.tiles == r.winner && c.median_us; });
  if (winner == r.candidates.end()) {
    throw Error(fmt::format("the winner {} has no timing among the candidates", tiles_text(r.winner)));
  }
  return r;
}

}  // namespace

std::int64_t seq_len_bucket(std::int64_t seq_len) {
  std::int64_t bucket = 1;
  while (bucket < seq_len) bucket *= 2;
  return bucket;
}

std::string untiled_spec(codegen::KernelSpec spec) {
  spec.tiles = {0, 0, 0, 0};
  return spec.canonical();
}

TuningKey tuning_key(const codegen::KernelSpec& spec, const TuningTarget& target, std::int64_t seq_len) {
  return {target.device,  spec.arch,
          target.driver,  codegen::nvrtc_version(),
          kVersion,       codegen::template_bundle_hash(),
          untiled_spec(spec), seq_len_bucket(seq_len)};
}

std::string winner_spec(const TuningRecord& record) {
  // untiled_spec() zeroes the tiles in the canonical text (KernelSpec::canonical, whose spelling is
  // fixed); the winner's go back in their place.
  constexpr std::string_view kUntiled = " tiles=0x0 warps=0 stages=0 ";
  const codegen::Tiles& t = record.winner;
  std::string text = record.key.spec;
  if (const auto at = text.find(kUntiled); at != std::string::npos) {
    text.replace(at, kUntiled.size(),
                 fmt::format(" tiles={}x{} warps={} stages={} ", t.block_m, t.block_n, t.warps, t.stages));
  }
  return text;
}

std::optional<codegen::Tiles> fastest(const std::vector<CandidateTiming>& candidates) {
  const CandidateTiming* best = nullptr;
  for (const CandidateTiming& c : candidates) {
    if (c.median_us && (!best || *c.median_us < *best->median_us)) best = &c;
  }
  return best ? std::optional(best->tiles) : std::nullopt;
}

TuningDb TuningDb::parse(std::string_view text) {
  TuningDb db;
  try {
    const json j = json::parse(text);
    if (!j.is_object()) throw Error("expected a JSON object with \"format\" and \"records\"");
    if (const int format = integer<int>(j, "format"); format != kTuningFormat) {
      throw Error(fmt::format("format {}, but this build reads format {}", format, kTuningFormat));
    }
    const json& records = j.at("records");
    for (std::size_t i = 0; i < records.size(); ++i) {
      try {
        db.records_.push_back(from_json(records.at(i)));
      } catch (const std::exception& e) {
        throw Error(fmt::format("record {}: {}", i, e.what()));
      }
    }
  } catch (const json::exception& e) {
    throw Error(e.what());
  }
  return db;
}

std::string TuningDb::dump() const {
  json records = json::array();
  for (const TuningRecord& r : records_) records.push_back(to_json(r));
  return json{{"format", kTuningFormat}, {"records", std::move(records)}}.dump(2) + "\n";
}

const TuningRecord* TuningDb::find(const TuningKey& key) const {
  const auto it = std::find_if(records_.begin(), records_.end(), [&](const TuningRecord& r) { return r.key == key; });
  return it == records_.end() ? nullptr : &*it;
}

const TuningRecord& TuningDb::merge(const TuningRecord& record) {
  auto it = std::find_if(records_.begin(), records_.end(), [&](const TuningRecord& r) { return r.key == record.key; });
  if (it == records_.end()) {
    records_.push_back(record);
    return records_.back();
  }
  for (const CandidateTiming& timing : record.candidates) {
    auto same = std::find_if(it->candidates.begin(), it->candidates.end(),
                             [&](const CandidateTiming& c) { return c.tiles == timing.tiles; });
    if (same == it->candidates.end()) {
      it->candidates.push_back(timing);
    } else {
      *same = timing;
    }
  }
  if (const auto winner = fastest(it->candidates)) it->winner = *winner;
  it->date = record.date;
  return *it;
}

std::vector<codegen::Tiles> TuningDb::winners_for(const codegen::KernelSpec& spec) const {
  const TuningKey here = tuning_key(spec, {}, 1);
  std::vector<codegen::Tiles> out;
  for (const TuningRecord& r : records_) {
    const TuningKey& k = r.key;
    if (k.spec == here.spec && k.arch == here.arch && k.nvrtc == here.nvrtc && k.library == here.library &&
        k.templates == here.templates && std::find(out.begin(), out.end(), r.winner) == out.end()) {
      out.push_back(r.winner);
    }
  }
  return out;
}

std::vector<TuningRecord> TuningDb::won_by(const std::vector<std::string>& kernel_specs) const {
  std::vector<TuningRecord> out;
  for (const TuningRecord& r : records_) {
    if (std::find(kernel_specs.begin(), kernel_specs.end(), winner_spec(r)) != kernel_specs.end()) out.push_back(r);
  }
  return out;
}

}  // namespace dilatron::autotune
