// Writes docs/configuration-reference.md from the config schema (lathe::config::reference_markdown):
//   config_reference include/lathe/config/config.h docs/configuration-reference.md
// Run through `cmake --build <build folder> --target config-reference`.
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>

#include "lathe/config/reference.h"
#include "lathe/core/fs.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: config_reference CONFIG_HEADER OUTPUT.md\n");
    return 2;
  }
  try {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "config_reference: cannot read %s\n", argv[1]);
      return 1;
    }
    std::stringstream header;
    header << in.rdbuf();
    lathe::write_file_atomic(argv[2], lathe::config::reference_markdown(header.str()));
    std::printf("config_reference: wrote %s\n", argv[2]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "config_reference: %s\n", e.what());
    return 1;
  }
}
