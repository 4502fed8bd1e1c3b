#include "platform/control_api.h"

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "platform/platform.h"
#include "store/tree_digest.h"

namespace coil::platform {
namespace {

using json = nlohmann::json;
using InvocationPtr = std::shared_ptr<runtime::Invocation>;

constexpr size_t kDefaultTail = 100;

void answer(runtime::Invocation& invocation, uint16_t status, const std::string& content_type, std::string body) {
  if (!invocation.sink) return;
  frame::ResponseHead head;
  head.status = status;
  head.headers.emplace_back("content-type", content_type);
  head.headers.emplace_back("cache-control", "no-store");
  invocation.sink->on_response_head(head, body, true);
  invocation.sink.reset();
}

void answer_json(runtime::Invocation& invocation, uint16_t status, const json& value) {
  answer(invocation, status, "application/json", value.dump() + "\n");
}

void answer_error(runtime::Invocation& invocation, uint16_t status, const std::string& message) {
  answer_json(invocation, status, json{{"error", message}});
}

// Starts a streamed response (chunked by the front).
void begin_stream(runtime::Invocation& invocation, const std::string& content_type) {
  frame::ResponseHead head;
  head.status = 200;
  head.headers.emplace_back("content-type", content_type);
  head.headers.emplace_back("cache-control", "no-store");
  head.headers.emplace_back("x-accel-buffering", "no");
  invocation.sink->on_response_head(head, {}, false);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
               hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view target) {
  std::map<std::string, std::string> query;
  size_t mark = target.find('?');
  if (mark == std::string_view::npos) return query;
  std::string_view rest = target.substr(mark + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    query[percent_decode(pair.substr(0, eq))] =
        eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
  }
  return query;
}

std::string header(const std::vector<frame::Header>& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

std::string header(const runtime::Invocation& invocation, std::string_view name) {
  return header(invocation.head.headers, name);
}

// FUNCTION of docs/control-api.md. `base` is "http://HOST:PORT" as the client
// reached the server.
json describe(const Platform& platform, const store::VersionRecord& version, const std::string& base) {
  std::optional<std::string> route = platform.manifest_route(version);
  return json{{"name", version.name},
              {"version", version.id},
              {"kind", version.kind},
              {"created_at", version.created_at},
              {"urls", platform.urls(version, base)},
              {"route", route ? json(*route) : json(nullptr)}};
}

// Splits "/v1/functions/NAME/rest" into its segments.
std::vector<std::string> segments(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    size_t slash = path.find('/');
    parts.emplace_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return parts;
}

// Relays a function's answer to an invoke to the client that asked.
class ForwardingSink : public runtime::ResponseSink {
 public:
  ForwardingSink(std::shared_ptr<runtime::ResponseSink> client, std::function<void()> on_done)
      : client_(std::move(client)), on_done_(std::move(on_done)) {}
  void on_response_head(const frame::ResponseHead& head, std::string_view body, bool end) override {
    client_->on_response_head(head, body, end);
    if (end) done();
  }
  void on_response_body(std::string_view body, bool end) override {
    client_->on_response_body(body, end);
    if (end) done();
  }
  void on_failure(uint16_t status, const std::string& message) override {
    client_->on_failure(status, message);
    done();
  }

 private:
  void done() {
    if (on_done_) std::exchange(on_done_, nullptr)();
  }
  std::shared_ptr<runtime::ResponseSink> client_;
  std::function<void()> on_done_;
};

}  // namespace

ControlApi::ControlApi(Platform& platform) : platform_(platform) {}

uint64_t ControlApi::max_body_bytes() const { return platform_.options().bundle_limits.max_archive_bytes; }

bool ControlApi::authorized(const std::vector<frame::Header>& headers) const {
  std::string given = header(headers, "authorization");
  constexpr std::string_view kScheme = "Bearer ";
  if (given.size() <= kScheme.size() || strncasecmp(given.c_str(), kScheme.data(), kScheme.size()) != 0) {
    // Still compare, so that a missing key takes the time a wrong one does.
    (void)store::secrets_equal(given, platform_.options().api_key);
    return false;
  }
  return store::secrets_equal(std::string_view(given).substr(kScheme.size()), platform_.options().api_key);
}

std::string ControlApi::base_url(const runtime::Invocation& invocation) {
  return "http://" + (invocation.head.host.empty() ? invocation.head.server : invocation.head.host);
}

std::optional<runtime::InvocationTarget::Refusal> ControlApi::screen(std::string_view target,
                                                                     const std::vector<frame::Header>& headers) {
  std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz" || authorized(headers)) return std::nullopt;
  return Refusal{401, "application/json", json{{"error", "unauthorized"}}.dump()};
}

void ControlApi::submit(InvocationPtr invocation) {
  runtime::Invocation& request = *invocation;
  std::string_view target = request.head.target;
  std::string_view path = target.substr(0, target.find('?'));
  const std::string& method = request.head.method;
  if (path == "/healthz") {
    if (method != "GET" && method != "HEAD") return answer_error(request, 405, "use GET");
    return answer_json(request, 200, json{{"status", "ok"}});
  }
  // screen() refused requests without the key; checked again all the same.
  if (!authorized(request.head.headers)) return answer_json(request, 401, json{{"error", "unauthorized"}});

  std::vector<std::string> parts = segments(path);  // "v1", ...
  std::map<std::string, std::string> query = parse_query(target);
  if (parts.size() == 2 && parts[1] == "deploy") {
    if (method != "POST") return answer_error(request, 405, "use POST");
    return deploy(invocation, query);
  }
  if (parts.size() < 2 || parts[1] != "functions") return answer_error(request, 404, "no such endpoint");
  if (parts.size() == 2) {
    if (method != "GET") return answer_error(request, 405, "use GET");
    auto all = platform_.list();
    if (auto* error = std::get_if<OperationError>(&all)) return answer_error(request, error->status, error->message);
    json functions = json::array();
    for (const auto& version : std::get<0>(all)) {
      functions.push_back(describe(platform_, version, base_url(request)));
    }
    return answer_json(request, 200, json{{"functions", functions}});
  }
  const std::string& name = parts[2];
  if (parts.size() == 3) {
    if (method == "DELETE") {
      auto removed = platform_.remove(name);
      if (auto* error = std::get_if<OperationError>(&removed)) {
        return answer_error(request, error->status, error->message);
      }
      return answer_json(request, 200, json{{"deleted", name}});
    }
    if (method != "GET") return answer_error(request, 405, "use GET or DELETE");
    auto current = platform_.current(name);
    if (auto* error = std::get_if<OperationError>(&current)) {
      return answer_error(request, error->status, error->message);
    }
    const auto& version = std::get<0>(current);
    json body = describe(platform_, version, base_url(request));
    auto all = platform_.versions(name);
    json versions = json::array();
    if (auto* list = std::get_if<0>(&all)) {
      for (const auto& v : *list) {
        versions.push_back(json{{"version", v.id}, {"created_at", v.created_at}, {"current", v.id == version.id}});
      }
    }
    body["versions"] = versions;
    return answer_json(request, 200, body);
  }
  if (parts.size() == 4 && parts[3] == "rollback") {
    if (method != "POST") return answer_error(request, 405, "use POST");
    std::string version;
    if (!request.body.empty()) {
      json body = json::parse(request.body, nullptr, false);
      if (body.is_discarded() || !body.is_object() || (body.contains("version") && !body["version"].is_string())) {
        return answer_error(request, 400, "body: expected {\"version\": \"ID\"} or nothing");
      }
      version = body.value("version", "");
    }
    auto rolled = platform_.rollback(name, version);
    if (auto* error = std::get_if<OperationError>(&rolled)) {
      return answer_error(request, error->status, error->message);
    }
    const auto& target_version = std::get<0>(rolled);
    return answer_json(request, 200, describe(platform_, target_version, base_url(request)));
  }
  if (parts.size() == 4 && parts[3] == "invoke") {
    if (method != "POST") return answer_error(request, 405, "use POST");
    return invoke(invocation, name);
  }
  if (parts.size() == 4 && parts[3] == "logs") {
    if (method != "GET") return answer_error(request, 405, "use GET");
    return logs(invocation, name, query);
  }
  return answer_error(request, 404, "no such endpoint");
}

void ControlApi::deploy(const InvocationPtr& invocation, const std::map<std::string, std::string>& query) {
  DeployRequest deploy;
  deploy.bundle = std::move(invocation->body);
  if (auto it = query.find("entrypoint"); it != query.end()) deploy.entrypoint = it->second;
  if (auto it = query.find("name"); it != query.end()) deploy.name = it->second;
  bool streamed = header(*invocation, "accept").find("application/x-ndjson") != std::string::npos;
  std::string base = base_url(*invocation);
  if (streamed) begin_stream(*invocation, "application/x-ndjson");
  pending_[invocation.get()] = Pending{};
  std::weak_ptr<runtime::Invocation> weak = invocation;
  auto progress = [weak, streamed](const std::string& line) {
    auto alive = weak.lock();
    if (streamed && alive && alive->sink) {
      alive->sink->on_response_body(json{{"event", "progress"}, {"message", line}}.dump() + "\n", false);
    }
  };
  platform_.deploy(std::move(deploy), progress,
                   [this, weak, streamed, base](Outcome<std::vector<store::VersionRecord>> outcome) {
                     auto alive = weak.lock();
                     if (!alive) return;
                     pending_.erase(alive.get());
                     if (!alive->sink) return;
                     json result;
                     uint16_t status = 201;
                     if (auto* error = std::get_if<OperationError>(&outcome)) {
                       status = error->status;
                       result = json{{"error", error->message}};
                       log::info("server: deploy refused: {}", error->message);
                     } else {
                       json deployed = json::array();
                       for (const auto& version : std::get<0>(outcome)) {
                         deployed.push_back(describe(platform_, version, base));
                       }
                       result = json{{"deployed", deployed}};
                     }
                     if (!streamed) return answer_json(*alive, status, result);
                     result["event"] = status == 201 ? "deployed" : "error";
                     alive->sink->on_response_body(result.dump() + "\n", true);
                     alive->sink.reset();
                   });
}

void ControlApi::invoke(const InvocationPtr& invocation, const std::string& function) {
  std::shared_ptr<runtime::FunctionPool> pool = platform_.current_pool(function);
  if (!pool) return answer_error(*invocation, 404, "no function named " + function);
  if (invocation->body.size() > pool->max_body_bytes()) {
    return answer_error(*invocation, 413,
                        "body larger than " + std::to_string(pool->max_body_bytes()) + " bytes (max_body_bytes)");
  }
  // The function gets `POST /` with this body and content type, never the key.
  auto forwarded = std::make_shared<runtime::Invocation>();
  forwarded->id = invocation->id;
  const frame::RequestHead& asked = invocation->head;
  forwarded->head = frame::RequestHead{.method = asked.method,
                                       .target = std::string(1, '/'),
                                       .version = asked.version,
                                       .scheme = asked.scheme,
                                       .client = asked.client,
                                       .server = asked.server,
                                       .host = asked.host,
                                       .route = std::string("/fn/").append(function).append("/..."),
                                       .prefix = std::string("/fn/").append(function),
                                       .path_info = std::string(1, '/'),
                                       .headers = asked.headers};
  std::erase_if(forwarded->head.headers, [](const frame::Header& h) { return h.first == "authorization"; });
  forwarded->body = std::move(invocation->body);
  forwarded->started = invocation->started;
  const runtime::Invocation* key = invocation.get();
  forwarded->sink = std::make_shared<ForwardingSink>(std::exchange(invocation->sink, nullptr),
                                                     [this, key] { pending_.erase(key); });
  pending_[key] = Pending{forwarded, pool, 0, {}, {}};
  pool->submit(forwarded);
}

void ControlApi::logs(const InvocationPtr& invocation, const std::string& function,
                      const std::map<std::string, std::string>& query) {
  auto current = platform_.current(function);
  if (auto* error = std::get_if<OperationError>(&current)) {
    return answer_error(*invocation, error->status, error->message);
  }
  size_t lines = kDefaultTail;
  if (auto it = query.find("tail"); it != query.end()) {
    char* end = nullptr;
    unsigned long value = std::strtoul(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0') return answer_error(*invocation, 400, "tail: expected a number of lines");
    lines = value;
  }
  bool follow = query.count("follow") && query.at("follow") != "0" && query.at("follow") != "false";
  std::string text;
  for (const std::string& line : platform_.logs().tail(function, lines)) text += line + "\n";
  if (!follow) return answer(*invocation, 200, "text/plain; charset=utf-8", std::move(text));
  begin_stream(*invocation, "text/plain; charset=utf-8");
  if (!text.empty()) invocation->sink->on_response_body(text, false);
  std::weak_ptr<runtime::Invocation> weak = invocation;
  uint64_t id = platform_.logs().follow(function, [weak](std::string_view line) {
    if (auto alive = weak.lock(); alive && alive->sink) alive->sink->on_response_body(std::string(line) + "\n", false);
  });
  pending_[invocation.get()] = Pending{nullptr, nullptr, id, function, invocation};
}

void ControlApi::end_log_streams(const std::string& function) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.follower == 0 || it->second.function != function) {
      ++it;
      continue;
    }
    platform_.logs().unfollow(it->second.follower);
    if (auto alive = it->second.invocation.lock(); alive && alive->sink) {
      alive->sink->on_response_body({}, true);
      alive->sink.reset();
    }
    it = pending_.erase(it);
  }
}

void ControlApi::abandon(const InvocationPtr& invocation) {
  auto it = pending_.find(invocation.get());
  if (it == pending_.end()) return;
  Pending pending = std::move(it->second);
  pending_.erase(it);
  if (pending.forwarded) pending.forwarded_to->abandon(pending.forwarded);
  if (pending.follower) platform_.logs().unfollow(pending.follower);
  invocation->sink.reset();
}

}  // namespace coil::platform
