# lathe_warnings(target): the warning set for lathe's own code (third-party headers are -isystem).
function(lathe_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wno-unused-parameter)
endfunction()
