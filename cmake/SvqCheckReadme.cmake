# cmake -DSVQ_SOURCE_DIR=<svq source tree> -P SvqCheckReadme.cmake   (ctest: readme_in_sync)
# Keeps README.md honest:
#  1. the first ```cpp block after the "## Usage" heading must equal
#     examples/readme_usage.cpp byte for byte: that file is built with the
#     examples, so the snippet users copy is code that compiles;
#  2. .ci/run must contain the README's test command (the line that starts
#     with ./scripts/install-deps.sh and runs ctest) verbatim, so CI runs what
#     the README tells people to run.
if(NOT SVQ_SOURCE_DIR)
    message(FATAL_ERROR "SvqCheckReadme.cmake: -DSVQ_SOURCE_DIR=... is required")
endif()
set(readme_path "${SVQ_SOURCE_DIR}/README.md")
set(example_path "${SVQ_SOURCE_DIR}/examples/readme_usage.cpp")
set(ci_path "${SVQ_SOURCE_DIR}/.ci/run")
file(READ "${readme_path}" readme)
file(READ "${example_path}" example)
file(READ "${ci_path}" ci_script)

# 1. Usage snippet.
string(FIND "${readme}" "\n## Usage" usage_at)
if(usage_at EQUAL -1)
    message(FATAL_ERROR "${readme_path} has no '## Usage' section")
endif()
string(SUBSTRING "${readme}" ${usage_at} -1 usage_section)
string(FIND "${usage_section}" "\n```cpp\n" fence_at)
if(fence_at EQUAL -1)
    message(FATAL_ERROR "${readme_path}: no ```cpp block after '## Usage'")
endif()
math(EXPR code_at "${fence_at} + 8")  # skip "\n```cpp\n"
string(SUBSTRING "${usage_section}" ${code_at} -1 usage_code)
string(FIND "${usage_code}" "\n```" fence_end)
if(fence_end EQUAL -1)
    message(FATAL_ERROR "${readme_path}: the ```cpp block after '## Usage' is not closed")
endif()
math(EXPR code_length "${fence_end} + 1")  # keep the last line's newline
string(SUBSTRING "${usage_code}" 0 ${code_length} usage_code)

if(NOT usage_code STREQUAL example)
    set(snippet_copy "${CMAKE_CURRENT_BINARY_DIR}/readme_usage_snippet.cpp")
    file(WRITE "${snippet_copy}" "${usage_code}")
    find_program(diff_program diff)
    if(diff_program)
        execute_process(COMMAND "${diff_program}" -u "${example_path}" "${snippet_copy}")
    endif()
    message(FATAL_ERROR "README.md's Usage snippet (written to ${snippet_copy}) differs from "
                        "examples/readme_usage.cpp: copy the file into the README (or the other way round)")
endif()

# 2. Test command.
string(REGEX MATCH "\n(\\./scripts/install-deps\\.sh[^\n]*ctest --preset[^\n]*)\n" test_command_line "${readme}")
if(NOT test_command_line)
    message(FATAL_ERROR "${readme_path}: no test command line (./scripts/install-deps.sh && ... ctest --preset ...)")
endif()
set(test_command "${CMAKE_MATCH_1}")
string(FIND "${ci_script}" "${test_command}" ci_at)
if(ci_at EQUAL -1)
    message(FATAL_ERROR ".ci/run does not run README.md's test command verbatim:\n  ${test_command}")
endif()
message(STATUS "README.md usage snippet == examples/readme_usage.cpp; .ci/run runs: ${test_command}")
