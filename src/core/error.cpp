// lathe::Error family: out-of-line pieces, the Doing activity record, and build-time checks on
// the fmt we compile against.
#include "lathe/core/error.h"

#include <exception>

#include "lathe/core/activity.h"

// torch's wheel ships fmt 12 headers; Debian's libfmt-dev is 9.1. We compile header-only against
// torch's copy (cmake/Dependencies.cmake). Fail the build loudly if another fmt sneaks in first.
static_assert(FMT_VERSION >= 120000,
              "lathe must see the fmt 12 headers shipped with torch before /usr/include's fmt 9");

namespace lathe {
namespace {
thread_local std::vector<std::string> failed_activities;
}  // namespace

Doing::Doing(std::string what) : what_(std::move(what)), uncaught_(std::uncaught_exceptions()) {}

Doing::~Doing() {
  if (std::uncaught_exceptions() > uncaught_) {
    try {
      failed_activities.push_back(std::move(what_));
    } catch (...) {  // out of memory while unwinding: the activity is lost, nothing else
    }
  }
}

std::vector<std::string> take_failed_activities() {
  std::vector<std::string> out;
  out.swap(failed_activities);
  return out;
}

}  // namespace lathe
