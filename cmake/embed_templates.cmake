# Turns every file under templates/ into a named byte array in one generated C++ file, so the library
# carries its device code and NVRTC never reads the filesystem. Run as:
#   cmake -DROOT=<templates dir> -DOUTPUT=<file.cpp> -P embed_templates.cmake
file(GLOB_RECURSE files RELATIVE "${ROOT}" "${ROOT}/*.cuh")
list(SORT files)
set(arrays "")
set(entries "")
set(index 0)
foreach(name IN LISTS files)
  file(READ "${ROOT}/${name}" hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND arrays "const unsigned char k${index}[] = {${bytes}0};\n")
  string(APPEND entries "      {\"${name}\", {reinterpret_cast<const char*>(k${index}), ${size}}},\n")
  math(EXPR index "${index} + 1")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from templates/ by cmake/embed_templates.cmake; do not edit.
#include \"codegen/templates.hpp\"

namespace dilatron::codegen {
namespace {
${arrays}}  // namespace

const std::vector<TemplateFile>& embedded_template_files() {
  static const std::vector<TemplateFile> files = {
${entries}  };
  return files;
}

}  // namespace dilatron::codegen
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
