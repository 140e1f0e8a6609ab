# Installs the build in BUILD_DIR into a fresh prefix under WORK, then configures, builds and runs the
# consumer project in CONSUMER against it. Fails naming the step that broke.
function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message(STATUS "${what}:\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc})")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
set(prefix ${WORK}/prefix)
step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# The package must stand on its own: nothing in it may point back into the source or build tree.
file(GLOB_RECURSE package_files ${prefix}/*.cmake)
get_filename_component(source_root ${CONSUMER}/../.. ABSOLUTE)
foreach(f IN LISTS package_files)
  file(READ ${f} text)
  foreach(tree IN ITEMS ${source_root} ${BUILD_DIR})
    string(FIND "${text}" "${tree}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${f} refers to ${tree}")
    endif()
  endforeach()
endforeach()

# A sanitized build's static library needs the sanitizer runtimes at the consumer's link.
set(sanitize_flags "")
if(SANITIZE)
  set(flags "-fsanitize=${SANITIZE}")
  set(sanitize_flags -DCMAKE_CXX_FLAGS=${flags} -DCMAKE_C_FLAGS=${flags} -DCMAKE_EXE_LINKER_FLAGS=${flags})
endif()
step("configure the consumer" ${CMAKE_COMMAND} -S ${CONSUMER} -B ${WORK}/build -G ${GENERATOR}
     -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_C_COMPILER=${CC} ${sanitize_flags})
step("build the consumer" ${CMAKE_COMMAND} --build ${WORK}/build)
step("run the C++ consumer" ${WORK}/build/consumer_cpp)
step("run the C consumer" ${WORK}/build/consumer_c)
file(REMOVE_RECURSE ${WORK})
