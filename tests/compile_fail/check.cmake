# Runs one "must not compile" case (svq_compile_fail_test in tests/CMakeLists.txt):
#   cmake -DCOMPILER=... -DSTD_FLAG=... -DINCLUDES=a|b|... -DSOURCE=... -DREGEX=... -P check.cmake
# 1. SOURCE with SVQ_COMPILE_FAIL_CONTROL defined must compile (-fsyntax-only):
#    the case is well-formed except for the one thing it leaves out;
# 2. SOURCE as is must fail, and the compiler's output must match REGEX
#    (the concept that rejects it).
foreach(var COMPILER STD_FLAG SOURCE REGEX)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "check.cmake: ${var} is not set")
    endif()
endforeach()
string(REPLACE "|" ";" include_dirs "${INCLUDES}")
list(REMOVE_DUPLICATES include_dirs)
set(flags ${STD_FLAG} -fsyntax-only)
foreach(dir IN LISTS include_dirs)
    if(NOT dir STREQUAL "")
        list(APPEND flags "-I${dir}")
    endif()
endforeach()

execute_process(COMMAND "${COMPILER}" ${flags} -DSVQ_COMPILE_FAIL_CONTROL "${SOURCE}"
                RESULT_VARIABLE control_rc OUTPUT_VARIABLE control_out ERROR_VARIABLE control_out)
if(NOT control_rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE}: the control build (-DSVQ_COMPILE_FAIL_CONTROL) must compile but failed "
                        "(${control_rc}):\n${control_out}")
endif()

execute_process(COMMAND "${COMPILER}" ${flags} "${SOURCE}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE}: compiled, but must be rejected (expected a diagnostic matching '${REGEX}')")
endif()
if(NOT out MATCHES "${REGEX}")
    message(FATAL_ERROR "${SOURCE}: rejected (${rc}), but no diagnostic matches '${REGEX}':\n${out}")
endif()
string(REGEX MATCH "[^\n]*(${REGEX})[^\n]*" line "${out}")
message(STATUS "${SOURCE}: rejected as expected; first line matching '${REGEX}':\n${line}")
