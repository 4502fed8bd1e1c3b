#include "http/dispatcher.h"

namespace coil::http {

std::optional<RoutedRequest> RouteTableDispatcher::route(std::string_view, std::string_view decoded_path) {
  auto match = routes_.match(decoded_path);
  if (!match) return std::nullopt;
  return RoutedRequest{pools_[match->target], std::string(match->route), std::move(match->prefix),
                       std::move(match->path_info), std::move(match->captures)};
}

void RouteTableDispatcher::tick(std::chrono::steady_clock::time_point now) {
  for (auto& pool : pools_) pool->tick(now);
}

size_t RouteTableDispatcher::unanswered() const {
  size_t total = 0;
  for (const auto& pool : pools_) total += pool->unanswered();
  return total;
}

}  // namespace coil::http
