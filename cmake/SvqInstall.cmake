# Install rules: the headers, the svq::svq target (svqTargets export set) and a
# package config that finds the same dependencies svq was built against, so
# that `find_package(svq CONFIG REQUIRED)` + `target_link_libraries(app PRIVATE
# svq::svq)` is all a user writes. svq is header-only, so the config goes to
# the architecture-independent share/ tree and its version file ignores the
# pointer size of the machine that built it.
include(CMakePackageConfigHelpers)

set(SVQ_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/svq" CACHE STRING
    "Where svqConfig.cmake is installed, relative to the install prefix")
mark_as_advanced(SVQ_INSTALL_CMAKEDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/svq"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")

# The exported target keeps cxx_std_20 and the $<INSTALL_INTERFACE:include>
# directory from the build target; svq_project_options is deliberately absent.
install(TARGETS svq svq_io EXPORT svqTargets)
if(SVQ_XXHASH_FETCHED)
    install(FILES "${SVQ_XXHASH_INCLUDE_DIR}/xxhash.h" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# The command-line tool (tools/, SVQ_BUILD_TOOLS), as bin/svq.
if(TARGET svq_tool)
    install(TARGETS svq_tool RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()
install(EXPORT svqTargets
        NAMESPACE svq::
        DESTINATION "${SVQ_INSTALL_CMAKEDIR}")

configure_package_config_file(
    "${PROJECT_SOURCE_DIR}/cmake/svqConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/svqConfig.cmake"
    INSTALL_DESTINATION "${SVQ_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/svqConfigVersion.cmake"
    VERSION "${PROJECT_VERSION}"
    COMPATIBILITY SameMajorVersion
    ARCH_INDEPENDENT)

install(FILES
            "${PROJECT_BINARY_DIR}/svqConfig.cmake"
            "${PROJECT_BINARY_DIR}/svqConfigVersion.cmake"
            "${PROJECT_SOURCE_DIR}/cmake/SvqXsimdFixup.cmake"
        DESTINATION "${SVQ_INSTALL_CMAKEDIR}")
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" "${PROJECT_SOURCE_DIR}/README.md"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}")
