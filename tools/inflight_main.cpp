// The `inflight` executable: a route table of subcommands.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "cli_commands.hpp"

namespace {

void print_usage() {
  std::fputs(
      "usage: inflight <command> [options]\n"
      "\n"
      "commands:\n"
      "  serve      serve the model over HTTP, OpenAI-compatible (inflight serve --help); with --node, a\n"
      "             gateway to engine nodes on other machines\n"
      "  node       run an engine node for gateways to route requests to (inflight node --help)\n"
      "  generate   run the model on a prompt and stream the answer (inflight generate --help)\n"
      "  inspect    print a GGUF file's metadata and tensor table (inflight inspect MODEL)\n"
      "  devices    list the accelerators this build can use\n",
      stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string_view command = argv[1];
  if (command == "serve") return inflight::cli::run_serve(argc - 1, argv + 1);
  if (command == "node") return inflight::cli::run_node(argc - 1, argv + 1);
  if (command == "generate") return inflight::cli::run_generate(argc - 1, argv + 1);
  if (command == "inspect") return inflight::cli::run_inspect(argc - 1, argv + 1);
  if (command == "devices") return inflight::cli::run_devices(argc - 1, argv + 1);
  std::fprintf(stderr, "inflight: unknown command '%s'\n", argv[1]);
  print_usage();
  return 2;
}
