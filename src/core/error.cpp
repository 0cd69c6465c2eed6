// lathe::Error family: out-of-line pieces and build-time checks on the fmt we compile against.
#include "lathe/core/error.h"

// torch's wheel ships fmt 12 headers; Debian's libfmt-dev is 9.1. We compile header-only against
// torch's copy (cmake/Dependencies.cmake). Fail the build loudly if another fmt sneaks in first.
static_assert(FMT_VERSION >= 120000,
              "lathe must see the fmt 12 headers shipped with torch before /usr/include's fmt 9");
