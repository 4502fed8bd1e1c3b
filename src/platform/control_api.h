// ControlApi: coil server's HTTP API under /v1/ (and /healthz), as described
// in docs/control-api.md. It is an InvocationTarget like a function's pool:
// the front routes requests to it (platform.h) and it answers through their
// sinks, possibly streaming (deploy progress, `logs?follow=1`).
//
// Every /v1/ request must carry `Authorization: Bearer <key>`; the key is
// compared in constant time, and a missing or wrong one gets 401 with a
// fixed body, whatever the path. The key is never logged, and the
// Authorization header is removed from requests forwarded to functions.
//
// Single-threaded: the server's event loop.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "runtime/invocation_target.h"

namespace coil::platform {

class Platform;

class ControlApi : public runtime::InvocationTarget {
 public:
  explicit ControlApi(Platform& platform);

  const std::string& name() const override { return name_; }
  uint64_t max_body_bytes() const override;
  bool streams_request_body() const override { return false; }
  void submit(std::shared_ptr<runtime::Invocation> invocation) override;
  void send_body(const std::shared_ptr<runtime::Invocation>&, std::string_view, bool) override {}
  void abandon(const std::shared_ptr<runtime::Invocation>& invocation) override;
  // The key is checked from the head: a request without it is refused before
  // its body is read (no 100-continue, no buffering of an upload).
  std::optional<Refusal> screen(std::string_view target, const std::vector<frame::Header>& headers) override;
  bool watches_disconnect() const override { return true; }

  // Ends the `logs?follow=1` streams of `function` (it was removed).
  void end_log_streams(const std::string& function);

 private:
  using InvocationPtr = std::shared_ptr<runtime::Invocation>;
  void deploy(const InvocationPtr& invocation, const std::map<std::string, std::string>& query);
  void invoke(const InvocationPtr& invocation, const std::string& function);
  void logs(const InvocationPtr& invocation, const std::string& function,
            const std::map<std::string, std::string>& query);
  bool authorized(const std::vector<frame::Header>& headers) const;
  // "http://HOST:PORT" as the client reached the server.
  static std::string base_url(const runtime::Invocation& invocation);

  Platform& platform_;
  std::string name_ = "control-api";
  // Requests still being answered by something else: a forwarded invoke (the
  // function's own invocation), a log follower (its id), a deploy.
  struct Pending {
    std::shared_ptr<runtime::Invocation> forwarded;
    std::shared_ptr<runtime::InvocationTarget> forwarded_to;
    uint64_t follower = 0;
    std::string function;  // whose log a follower follows
    std::weak_ptr<runtime::Invocation> invocation;
  };
  std::map<const runtime::Invocation*, Pending> pending_;
};

}  // namespace coil::platform
