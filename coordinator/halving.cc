#include "coordinator/halving.h"

#include <algorithm>
#include <cmath>

namespace dd2 {

std::vector<HalvingOutcome> DecideRungs(const HalvingPolicy& policy, const std::vector<HalvingPoint>& points,
                                        const std::map<int64_t, std::vector<HalvingOutcome>>& decided) {
  std::vector<const HalvingPoint*> alive;
  for (const auto& p : points) alive.push_back(&p);
  std::sort(alive.begin(), alive.end(), [](auto* a, auto* b) { return a->number < b->number; });
  std::vector<HalvingOutcome> out;
  for (int64_t rung : policy.rungs) {
    if (auto it = decided.find(rung); it != decided.end()) {
      std::map<std::string, bool> kept;
      for (const auto& o : it->second) kept[o.identity] = o.kept;
      std::erase_if(alive, [&](const HalvingPoint* p) {
        auto k = kept.find(p->identity);
        return k != kept.end() && !k->second;  // judged and stopped; unjudged points go on
      });
      continue;
    }
    for (const HalvingPoint* p : alive) {
      if (!p->values.count(rung) && !p->finished) return out;  // not decidable yet
    }
    std::vector<const HalvingPoint*> ranked;
    for (const HalvingPoint* p : alive) {
      if (p->values.count(rung)) ranked.push_back(p);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [&](const HalvingPoint* a, const HalvingPoint* b) {
      const double x = a->values.at(rung), y = b->values.at(rung);
      return policy.maximize ? x > y : x < y;
    });
    const size_t keep = ranked.empty() ? 0
                                       : std::max<size_t>(1, static_cast<size_t>(std::ceil(
                                                                 policy.keep * static_cast<double>(ranked.size()) - 1e-9)));
    std::set<std::string> kept;
    for (size_t i = 0; i < keep; ++i) kept.insert(ranked[i]->identity);
    std::vector<const HalvingPoint*> next;
    for (const HalvingPoint* p : alive) {
      HalvingOutcome o{rung, p->identity, std::nullopt, kept.count(p->identity) > 0};
      if (auto v = p->values.find(rung); v != p->values.end()) o.value = v->second;
      out.push_back(o);
      if (o.kept) next.push_back(p);
    }
    alive = std::move(next);
  }
  return out;
}

}  // namespace dd2
