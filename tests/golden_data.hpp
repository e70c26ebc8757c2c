// Reads tests/data/generation_goldens.txt (written by tools/make_generation_goldens.py from llama.cpp).
#pragma once

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace inflight::test {

struct generation_golden {
  std::string name;
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;
  int32_t logits_stride = 0;
  std::vector<float> strided_logits;                 // first-step logits at ids 0, stride, 2*stride, ...
  std::vector<std::pair<int32_t, float>> top_logits;  // the 20 largest
  struct step_top { int32_t first_id; float first; int32_t second_id; float second; };
  std::vector<step_top> steps;                       // llama.cpp's two best logits at each greedy step
};

inline std::vector<generation_golden> load_generation_goldens(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<generation_golden> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "case") {
      cases.emplace_back();
      fields >> cases.back().name;
      continue;
    }
    if (cases.empty()) throw std::runtime_error(path + ": record before the first case");
    auto& current = cases.back();
    if (tag == "prompt" || tag == "greedy") {
      auto& ids = tag == "prompt" ? current.prompt : current.greedy;
      for (int32_t id; fields >> id;) ids.push_back(id);
    } else if (tag == "logits_stride") {
      fields >> current.logits_stride;
    } else if (tag == "logits") {
      for (float value; fields >> value;) current.strided_logits.push_back(value);
    } else if (tag == "steps") {
      for (std::string entry; fields >> entry;) {
        generation_golden::step_top top{};
        if (std::sscanf(entry.c_str(), "%d:%f,%d:%f", &top.first_id, &top.first, &top.second_id, &top.second) != 4) {
          throw std::runtime_error(path + ": bad steps entry '" + entry + "'");
        }
        current.steps.push_back(top);
      }
    } else if (tag == "top") {
      for (std::string pair; fields >> pair;) {
        const auto colon = pair.find(':');
        current.top_logits.emplace_back(std::stoi(pair.substr(0, colon)), std::stof(pair.substr(colon + 1)));
      }
    }
  }
  return cases;
}

}  // namespace inflight::test
