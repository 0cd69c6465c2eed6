# Compile through ccache, with settings that make a fresh clone in another folder hit the cache:
# paths are hashed relative to the source tree (base_dir), the working directory is not hashed,
# and precompiled headers are accepted (pch_defines, time_macros, include_file_*time).
if(LATHE_USE_CCACHE)
  find_program(LATHE_CCACHE ccache)
  if(LATHE_CCACHE)
    set(_lathe_ccache_env
      CCACHE_BASEDIR=${PROJECT_SOURCE_DIR}
      CCACHE_NOHASHDIR=true
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_MAXSIZE=8G)
    set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env ${_lathe_ccache_env} ${LATHE_CCACHE})
    message(STATUS "lathe: compiling through ${LATHE_CCACHE} (base_dir ${PROJECT_SOURCE_DIR})")
  else()
    message(STATUS "lathe: ccache not found, compiling without it")
  endif()
endif()
