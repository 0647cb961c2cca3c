#include "eval/run_log.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quest {

namespace fs = std::filesystem;

RunSeries read_run_log(const std::string& path) {
  const fs::path file = fs::is_directory(path) ? fs::path(path) / "log.jsonl" : fs::path(path);
  QUEST_CHECK(fs::exists(file), "no run log '{}' (give a run directory holding log.jsonl)", file.string());
  std::ifstream in(file);
  QUEST_CHECK(in, "cannot open '{}'", file.string());
  RunSeries r;
  fs::path name_from = fs::is_directory(path) ? fs::path(path) : file.parent_path();
  r.name = fs::weakly_canonical(name_from).filename().string();
  if (r.name.empty()) r.name = file.string();

  std::map<int64_t, nlohmann::json> train, eval, masks;  // by step: the last record wins
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("type") || !j.contains("step") || !j["step"].is_number()) {
      ++r.bad_lines;
      continue;
    }
    const std::string type = j["type"].is_string() ? j["type"].get<std::string>() : "";
    const int64_t step = j["step"].get<int64_t>();
    if (type == "train") train[step] = std::move(j);
    else if (type == "eval") eval[step] = std::move(j);
    else if (type == "masks") masks[step] = std::move(j);
  }
  QUEST_CHECK(!train.empty(), "'{}' has no train records", file.string());
  auto num = [](const nlohmann::json& j, const char* key, double& out) {
    if (!j.contains(key) || !j[key].is_number()) return false;
    out = j[key].get<double>();
    return true;
  };
  double tokens_per_step = 0;
  for (const auto& [step, j] : train) {
    double tokens = 0, loss = 0, lr = 0;
    if (!num(j, "tokens", tokens) || !num(j, "loss", loss)) {
      ++r.bad_lines;
      continue;
    }
    if (step > 0) tokens_per_step = tokens / double(step);
    r.train_tokens.push_back(tokens);
    r.train_loss.push_back(loss);
    r.lr.push_back(num(j, "lr", lr) ? lr : 0.0);
  }
  for (const auto& [step, j] : eval) {
    double v = 0;
    if (!num(j, "val_loss", v)) continue;
    r.eval_tokens.push_back(double(step) * tokens_per_step);
    r.eval_loss.push_back(v);
  }
  for (const auto& [step, j] : masks) {
    double w = 0, x = 0;
    if (!num(j, "mean_w_masked", w)) continue;
    num(j, "mean_x_masked", x);
    r.mask_tokens.push_back(double(step) * tokens_per_step);
    r.w_masked.push_back(w);
    r.x_masked.push_back(x);
  }
  return r;
}

}  // namespace quest
