// Files the tools write (benchmark JSON) appear whole or not at all: the text goes to a temporary file
// beside the target, is flushed to disk, and is renamed over it. A process killed mid-write leaves the
// old file (or none) and at most a stray PATH.tmp-PID, never a truncated PATH that a plot would read.
#pragma once

#include <string>

namespace inflight::cli {

// Throws std::runtime_error naming the path when the file cannot be written (the target is left as it was).
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace inflight::cli
