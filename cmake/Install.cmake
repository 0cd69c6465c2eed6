# Install rules and the CMake package: `cmake --install build/<preset> --prefix P` gives
#   P/bin/lathe                         the command (RPATH to the LibTorch it was built with)
#   P/include/lathe/<area>/*.h          the public API
#   P/include/lathe/zoo/models/...      the model zoo and its registry ("models/registry.h")
#   P/lib/liblathe.a                    the library, one archive
#   P/lib/cmake/lathe/                  latheConfig.cmake, latheConfigVersion.cmake, the exported
#                                       targets and latheDependencies.cmake
# so that a project outside the tree needs only
#   find_package(lathe 0.1 CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE lathe::lathe)
# (examples/ holds three such projects; scripts/examples.sh builds them against an install).
include(CMakePackageConfigHelpers)

# Every imported target the library links must be one latheDependencies.cmake defines, or the
# installed package could not define it again for a user's project: say so now, not there.
get_target_property(_lathe_links lathe LINK_LIBRARIES)
foreach(_lathe_link IN LISTS _lathe_links)
  string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" _lathe_link "${_lathe_link}")
  if(TARGET "${_lathe_link}")
    get_target_property(_lathe_imported "${_lathe_link}" IMPORTED)
    if(_lathe_imported AND NOT _lathe_link IN_LIST LATHE_PACKAGE_TARGETS)
      message(FATAL_ERROR "lathe links ${_lathe_link}, which cmake/latheDependencies.cmake does "
        "not define: move its find_package there (one line, lathe_find(<Package>)) so that "
        "find_package(lathe) finds it again in a user's project")
    endif()
  endif()
endforeach()

set(LATHE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/lathe)

install(TARGETS lathe EXPORT latheTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
set_target_properties(lathe_cli PROPERTIES EXPORT_NAME cli)
install(TARGETS lathe_cli EXPORT latheTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(DIRECTORY include/lathe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(DIRECTORY models DESTINATION ${LATHE_INSTALL_ZOO_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")

install(EXPORT latheTargets NAMESPACE lathe:: DESTINATION ${LATHE_INSTALL_CMAKEDIR})

# The Torch this lathe was built with (symlinks resolved: a worktree's .venv may be a link), the
# default where the package config looks for Torch when the user names none.
file(REAL_PATH "${Torch_DIR}" LATHE_TORCH_DIR_BUILT)
configure_package_config_file(cmake/latheConfig.cmake.in
  ${PROJECT_BINARY_DIR}/latheConfig.cmake INSTALL_DESTINATION ${LATHE_INSTALL_CMAKEDIR})
# 0.1.x: the same minor version (the API may still change between minor versions before 1.0).
write_basic_package_version_file(${PROJECT_BINARY_DIR}/latheConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/latheConfig.cmake ${PROJECT_BINARY_DIR}/latheConfigVersion.cmake
  cmake/latheDependencies.cmake DESTINATION ${LATHE_INSTALL_CMAKEDIR})

# `cpack -G DEB` (in the build folder): this install as a Debian package, prefix /usr. It needs
# the Debian -dev packages of what the package config finds again (cmake/latheDependencies.cmake)
# and the LibTorch lathe was built with, at the path recorded in latheConfig.cmake and in the
# lathe binary's RPATH: torch is not a Debian package.
set(CPACK_PACKAGE_NAME lathe)
set(CPACK_PACKAGE_VENDOR "lathe")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "lathe developers")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "cmake (>= 3.25), pkg-config, libprotobuf-dev, libonnx-dev, \
libyaml-cpp-dev, nlohmann-json3-dev, libturbojpeg0-dev, libjpeg62-turbo-dev, libpng-dev, libicu-dev, zlib1g-dev")
include(CPack)
