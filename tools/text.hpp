// Text that came from files (kernel names, tuning records, parser messages quoting bytes) on its way to
// a terminal or a JSON document: control characters could drive the terminal, and invalid UTF-8 would
// make the JSON writer throw.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace dilatron::cli {

// Control characters (and DEL) as \xNN, so an escape sequence prints as text; other bytes unchanged.
// `keep_newlines` leaves line breaks of a message that lists several problems.
std::string printable(std::string_view text, bool keep_newlines = false);

// json.dump(indent) with any invalid UTF-8 replaced by U+FFFD instead of an exception.
std::string json_text(const nlohmann::json& json, int indent = 2);

// Bytes in binary units: "512 B", "1.5 KiB", "90.7 MiB".
std::string size_text(double bytes);

}  // namespace dilatron::cli
