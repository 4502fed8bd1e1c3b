// Dispatcher: the front's seam to what it serves. For each request head the
// front asks route() where it goes; periodically it lets the dispatcher do
// its housekeeping; when draining, it asks how much is still unanswered.
//
//   RouteTableDispatcher  `coil up`: the manifest's routes, fixed at start.
//   platform::Platform    `coil server`: deployed functions by name, version
//                         and host, their manifest routes, and the control API.
//
// Single-threaded: called on the host's event loop.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "router/route_table.h"
#include "runtime/function_pool.h"
#include "runtime/invocation_target.h"

namespace coil::http {

struct RoutedRequest {
  std::shared_ptr<runtime::InvocationTarget> target;
  std::string route;      // the route that matched, as written ("/api/...")
  std::string prefix;     // the part of the decoded path the route matched (router::Match)
  std::string path_info;  // the decoded path after the route's prefix ("" for an exact route)
  std::vector<std::pair<std::string, std::string>> captures = {};  // (name, segment) per ":name"
};

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // `host`: the Host header (may be empty); `decoded_path`: the request's
  // percent-decoded path. nullopt: 404.
  virtual std::optional<RoutedRequest> route(std::string_view host, std::string_view decoded_path) = 0;
  // Periodic housekeeping of every pool (idle instances, min_instances).
  virtual void tick(std::chrono::steady_clock::time_point now) = 0;
  // Requests taken and not yet completely answered, across every target.
  virtual size_t unanswered() const = 0;
};

// `coil up`: a route table over a fixed set of pools (both outlive it).
class RouteTableDispatcher : public Dispatcher {
 public:
  RouteTableDispatcher(const router::RouteTable& routes, std::vector<std::shared_ptr<runtime::FunctionPool>>& pools)
      : routes_(routes), pools_(pools) {}
  std::optional<RoutedRequest> route(std::string_view host, std::string_view decoded_path) override;
  void tick(std::chrono::steady_clock::time_point now) override;
  size_t unanswered() const override;

 private:
  const router::RouteTable& routes_;
  std::vector<std::shared_ptr<runtime::FunctionPool>>& pools_;
};

}  // namespace coil::http
