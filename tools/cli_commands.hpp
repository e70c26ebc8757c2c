// Subcommands of the `inflight` executable; each returns the process exit code.
#pragma once

namespace inflight::cli {

int run_generate(int argc, char** argv);  // argv[0] is "generate"
int run_inspect(int argc, char** argv);   // argv[0] is "inspect"
int run_devices(int argc, char** argv);   // argv[0] is "devices"
int run_serve(int argc, char** argv);     // argv[0] is "serve"
int run_node(int argc, char** argv);      // argv[0] is "node"

}  // namespace inflight::cli
