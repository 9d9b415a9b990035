# cmake -DSVQ_SOURCE_DIR=<source tree> -DSVQ_BUILD_DIR=<build tree> -DSVQ_PREFIX=<prefix>
#       -DSVQ_INCLUDEDIR=<include dir> -DSVQ_CMAKEDIR=<package config dir> [-DSVQ_CONFIG=<cfg>]
#       [-DSVQ_TOOL=<the svq binary, relative to the prefix, when the tool is built>]
#       -P install_fresh.cmake          (the two dirs relative to the prefix)
# Installs the build tree into an emptied prefix (so a header deleted from the
# sources cannot linger there and hide a packaging bug) and checks that the
# files a find_package user needs are present.
foreach(required SVQ_SOURCE_DIR SVQ_BUILD_DIR SVQ_PREFIX SVQ_INCLUDEDIR SVQ_CMAKEDIR)
    if(NOT ${required})
        message(FATAL_ERROR "install_fresh.cmake: -D${required}=... is required")
    endif()
endforeach()

file(REMOVE_RECURSE "${SVQ_PREFIX}")
set(config_args "")
if(SVQ_CONFIG)
    set(config_args --config "${SVQ_CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${SVQ_BUILD_DIR}" --prefix "${SVQ_PREFIX}" ${config_args}
                RESULT_VARIABLE install_result)
if(NOT install_result EQUAL 0)
    message(FATAL_ERROR "cmake --install ${SVQ_BUILD_DIR} --prefix ${SVQ_PREFIX} failed: ${install_result}")
endif()

foreach(installed
        ${SVQ_INCLUDEDIR}/svq/error.hpp
        ${SVQ_INCLUDEDIR}/svq/simd/compat.hpp
        ${SVQ_CMAKEDIR}/svqConfig.cmake
        ${SVQ_CMAKEDIR}/svqConfigVersion.cmake
        ${SVQ_CMAKEDIR}/svqTargets.cmake
        ${SVQ_CMAKEDIR}/SvqXsimdFixup.cmake)
    if(NOT EXISTS "${SVQ_PREFIX}/${installed}")
        message(FATAL_ERROR "cmake --install did not produce ${SVQ_PREFIX}/${installed}")
    endif()
endforeach()

# The command-line tool (tools/), installed with the library, runs from the prefix.
if(SVQ_TOOL)
    if(NOT EXISTS "${SVQ_PREFIX}/${SVQ_TOOL}")
        message(FATAL_ERROR "cmake --install did not produce the tool ${SVQ_PREFIX}/${SVQ_TOOL}")
    endif()
    execute_process(COMMAND "${SVQ_PREFIX}/${SVQ_TOOL}" --version RESULT_VARIABLE tool_result OUTPUT_VARIABLE tool_version)
    if(NOT tool_result EQUAL 0 OR NOT tool_version MATCHES "^svq ")
        message(FATAL_ERROR "${SVQ_PREFIX}/${SVQ_TOOL} --version: exit ${tool_result}, output '${tool_version}'")
    endif()
endif()

# Every header of the source tree must be installed, or a user's #include fails.
file(GLOB_RECURSE source_headers RELATIVE "${SVQ_SOURCE_DIR}/include" "${SVQ_SOURCE_DIR}/include/svq/*.hpp")
list(LENGTH source_headers header_count)
foreach(header IN LISTS source_headers)
    if(NOT EXISTS "${SVQ_PREFIX}/${SVQ_INCLUDEDIR}/${header}")
        message(FATAL_ERROR "header include/${header} was not installed into ${SVQ_PREFIX}/${SVQ_INCLUDEDIR}")
    endif()
endforeach()
message(STATUS "svq installed into ${SVQ_PREFIX}: ${header_count} headers, package config in ${SVQ_CMAKEDIR}")
