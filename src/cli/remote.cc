#include "cli/remote.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cli/client.h"
#include "common/unique_fd.h"
#include "store/bundle.h"

namespace coil::cli {
namespace {

using nlohmann::json;

constexpr int kFailed = 1;
constexpr int kUsageError = 2;
constexpr char kDefaultServer[] = "http://127.0.0.1:8080";
// For the calls that only read or change the registry; deploys, logs and
// invocations take as long as the work they wait for.
constexpr auto kControlTimeout = std::chrono::seconds(60);
constexpr size_t kMaxErrorBody = 2000;

// --server and --key-file, which every command takes.
struct Connection {
  std::string server;
  std::string key_file;
};

struct DeployOptions {
  std::string dir = ".";
  std::string entrypoint;
  std::string name;
};

struct LogsOptions {
  std::string name;
  bool follow = false;
  uint32_t tail = 0;
};

struct InvokeOptions {
  std::string name;
  std::string data;
  std::string content_type;
};

void print_error(std::string_view command, std::string_view message) {
  fmt::print(stderr, "coil {}: {}\n", command, message);
}

std::string_view trim(std::string_view text) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  return text;
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (1u << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / (1u << 10));
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1u << 20));
}

Result<std::string> read_fd(int fd, const std::string& what) {
  std::string data;
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n == 0) return data;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::error("cannot read " + what + ": " + std::strerror(errno));
    }
    data.append(buffer, static_cast<size_t>(n));
  }
}

Result<std::string> read_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::error("cannot open " + path + ": " + std::strerror(errno));
  return read_fd(fd.get(), path);
}

// The API key: --key-file wins over $COIL_API_KEY. Surrounding whitespace
// (the newline a key file ends with) is not part of it.
Result<std::string> api_key(const Connection& connection) {
  if (!connection.key_file.empty()) {
    Result<std::string> text = read_file(connection.key_file);
    if (!text) return Status::error("--key-file: " + text.message());
    std::string key(trim(*text));
    if (key.empty()) {
      return Status::error("--key-file: " + connection.key_file + " holds no key (it is empty)");
    }
    return key;
  }
  if (const char* env = std::getenv("COIL_API_KEY"); env != nullptr && !trim(env).empty()) {
    return std::string(trim(env));
  }
  return Status::error(
      "no API key: set COIL_API_KEY or pass --key-file FILE, with the key the coil server was started with");
}

// --server, else $COIL_SERVER, else the default.
std::string server_of(const Connection& connection) {
  std::string server = connection.server;
  if (const char* env = std::getenv("COIL_SERVER"); server.empty() && env != nullptr) server = env;
  return server.empty() ? std::string(kDefaultServer) : server;
}

Result<Client> connect(const Connection& connection) {
  Result<std::string> key = api_key(connection);
  if (!key) return key.status();
  return Client::create(server_of(connection), std::move(*key));
}

std::string string_field(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

// What to tell the user about a response with an error status: the
// control API's {"error": "..."}, else the body, else the status.
std::string error_message(const HttpResponse& response) {
  std::string message = string_field(json::parse(response.body, nullptr, false), "error");
  if (message.empty()) message = std::string(trim(response.body));
  if (message.size() > kMaxErrorBody) message = message.substr(0, kMaxErrorBody) + "...";
  if (message.empty()) message = fmt::format("HTTP {}", response.status);
  if (response.status == 401) {
    message += " (the server refused the API key: check COIL_API_KEY or --key-file)";
  }
  return message;
}

bool succeeded(const HttpResponse& response) { return response.status >= 200 && response.status < 300; }

// Runs a request whose 2xx answer is a JSON object; anything else fails with
// the message to show (`command` names the call in it).
Result<json> call_json(Client& client, const HttpRequest& request, std::string_view command) {
  Result<HttpResponse> response = client.send(request);
  if (!response) return response.status();
  if (!succeeded(*response)) return Status::error(error_message(*response));
  json document = json::parse(response->body, nullptr, false);
  if (document.is_discarded() || !document.is_object()) {
    return Status::error(
        fmt::format("the server at {} did not answer {} with the JSON the control API describes",
                    client.server_url(), command));
  }
  return document;
}

// ---------------------------------------------------------------------------
// coil deploy
// ---------------------------------------------------------------------------

// What `coil deploy` shows on stderr while the upload and the build run: on
// a terminal, a percentage redrawn in place during the upload; otherwise one
// line, so that logs do not fill with carriage returns.
class DeployDisplay {
 public:
  DeployDisplay(bool terminal, uint64_t total, std::string server)
      : terminal_(terminal), total_(total), server_(std::move(server)) {}

  void start() {
    if (terminal_) {
      uploaded(0);
    } else {
      fmt::print(stderr, "Uploading {} to {}\n", human_size(total_), server_);
    }
  }

  void uploaded(uint64_t sent) {
    if (!terminal_ || upload_done_) return;
    int percent = total_ == 0 ? 100 : static_cast<int>(std::min<uint64_t>(sent, total_) * 100 / total_);
    if (percent == shown_percent_) return;
    shown_percent_ = percent;
    fmt::print(stderr, "\rUploading {} to {}: {:3}%", human_size(total_), server_, percent);
    std::fflush(stderr);
  }

  // Ends the redrawn line, once.
  void end_upload() {
    if (terminal_ && !upload_done_) fmt::print(stderr, "\n");
    upload_done_ = true;
  }

  void line(std::string_view text) {
    end_upload();
    fmt::print(stderr, "{}\n", text);
  }

 private:
  bool terminal_;
  uint64_t total_;
  std::string server_;
  int shown_percent_ = -1;
  bool upload_done_ = false;
};

// Reads the NDJSON stream of a deploy (docs/control-api.md) as it arrives.
class DeployStream {
 public:
  explicit DeployStream(DeployDisplay& display) : display_(display) {}

  void feed(std::string_view chunk) {
    display_.end_upload();  // the server answers once it has the whole bundle
    raw_.append(chunk);
    pending_.append(chunk);
    size_t newline;
    while ((newline = pending_.find('\n')) != std::string::npos) {
      handle_line(std::string_view(pending_).substr(0, newline));
      pending_.erase(0, newline + 1);
    }
  }

  // The stream ended: a last line without a newline still counts, and a
  // server that answered with one JSON document (201 {"deployed": [...]})
  // instead of a stream is understood too.
  void finish() {
    if (!pending_.empty()) handle_line(pending_);
    pending_.clear();
    if (finished()) return;
    json document = json::parse(raw_, nullptr, false);
    if (document.is_object() && document.contains("deployed")) set_deployed(document["deployed"]);
  }

  bool finished() const { return !error_.empty() || !deployed_.is_null(); }
  const std::string& error() const { return error_; }
  const json& deployed() const { return deployed_; }

 private:
  void handle_line(std::string_view line) {
    line = trim(line);
    if (line.empty()) return;
    json event = json::parse(line, nullptr, false);
    std::string kind = string_field(event, "event");
    if (kind == "progress") {
      display_.line(string_field(event, "message"));
    } else if (kind == "deployed") {
      set_deployed(event["deployed"]);
    } else if (kind == "error") {
      error_ = string_field(event, "error");
      if (error_.empty()) error_ = "the server reported a failed deploy without saying why";
    } else if (!event.is_object()) {
      display_.line(line);  // not JSON: show it as it is rather than lose it
    }
  }

  void set_deployed(const json& functions) { deployed_ = functions.is_array() ? functions : json::array(); }

  DeployDisplay& display_;
  std::string pending_;  // the incomplete last line
  std::string raw_;
  std::string error_;
  json deployed_;  // null until the verdict; then an array
};

// Prints the "Deployed ..." block of every function, URLs labelled in the
// order the control API lists them: by name, then this version's own; then
// where its coil.toml route serves it, if it has one.
void print_deployed(const json& functions) {
  bool first = true;
  for (const json& function : functions) {
    if (!first) std::fputc('\n', stdout);
    first = false;
    fmt::print("Deployed {}, version {}\n", string_field(function, "name"),
               string_field(function, "version"));
    std::vector<std::string> urls;
    if (function.is_object() && function.contains("urls") && function["urls"].is_array()) {
      for (const json& url : function["urls"]) {
        if (url.is_string()) urls.push_back(url.get<std::string>());
      }
    }
    if (urls.empty()) continue;
    std::vector<std::string> labels(urls.size(), "(this version, immutable)");
    labels[0] = "(follows the latest version)";
    std::string route = string_field(function, "route");
    std::string by_name = "/fn/" + string_field(function, "name") + "/";
    if (!route.empty() && urls[0].ends_with(by_name)) {
      // On the server's own base (what the URLs above start with); a prefix
      // route shown as its prefix, a capture route as written.
      std::string_view shown(route);
      if (shown.ends_with("/...")) shown.remove_suffix(3);
      urls.push_back(urls[0].substr(0, urls[0].size() - by_name.size()) + std::string(shown));
      labels.push_back("(coil.toml route " + route + "; follows the latest version)");
    }
    size_t width = 0;
    for (const std::string& url : urls) width = std::max(width, url.size());
    fmt::print("Available on:\n");
    for (size_t i = 0; i < urls.size(); ++i) fmt::print("  {:<{}}  {}\n", urls[i], width, labels[i]);
  }
  std::fflush(stdout);
}

int run_deploy(const DeployOptions& options, const Connection& connection) {
  std::error_code ec;
  if (!std::filesystem::is_directory(options.dir, ec)) {
    print_error("deploy", "\"" + options.dir + "\" is not a directory");
    return kUsageError;
  }
  if (!options.name.empty() && options.entrypoint.empty()) {
    print_error("deploy",
                "--name needs ENTRYPOINT; without it, the directory's coil.toml names the functions");
    return kUsageError;
  }
  std::string name = options.name;
  if (!options.entrypoint.empty() && name.empty()) {
    std::filesystem::path path = std::filesystem::absolute(options.dir, ec).lexically_normal();
    if (!path.has_filename()) path = path.parent_path();
    name = path.filename().string();
    if (name.empty()) {
      print_error("deploy", "cannot name the function after \"" + options.dir + "\": pass --name NAME");
      return kUsageError;
    }
  }
  Result<Client> client = connect(connection);
  if (!client) {
    print_error("deploy", client.message());
    return kUsageError;
  }

  Result<std::string> bundle = store::pack_directory(options.dir);
  if (!bundle) {
    print_error("deploy", bundle.message());
    return kFailed;
  }

  HttpRequest request;
  request.method = "POST";
  request.target = "/v1/deploy";
  if (!options.entrypoint.empty()) {
    request.target += "?name=" + url_encode(name) + "&entrypoint=" + url_encode(options.entrypoint);
  }
  request.body = std::move(*bundle);
  request.content_type = "application/gzip";
  request.headers.emplace_back("Accept", "application/x-ndjson");

  DeployDisplay display(::isatty(STDERR_FILENO) == 1, request.body.size(), client->server_url());
  DeployStream stream(display);
  request.on_upload = [&](uint64_t sent, uint64_t) { display.uploaded(sent); };
  request.on_body = [&](std::string_view chunk) {
    stream.feed(chunk);
    return true;
  };
  display.start();
  Result<HttpResponse> response = client->send(request);
  display.end_upload();
  if (response && !succeeded(*response)) {
    print_error("deploy", error_message(*response));
    return kFailed;
  }
  stream.finish();
  // A verdict that arrived counts even if the connection broke after it.
  if (!stream.error().empty()) {
    print_error("deploy", stream.error());
    return kFailed;
  }
  if (!stream.deployed().is_null()) {
    print_deployed(stream.deployed());
    return 0;
  }
  if (!response) {
    print_error("deploy", response.message() + "; run `coil ls` to see what is deployed");
  } else {
    print_error("deploy",
                "the server ended the deploy without saying whether it succeeded; run `coil ls` to see "
                "what is deployed");
  }
  return kFailed;
}

// ---------------------------------------------------------------------------
// coil ls, rm, rollback
// ---------------------------------------------------------------------------

// One control-API call whose answer is JSON, for `coil COMMAND`: the answer,
// or the exit code after the error was printed.
std::variant<json, int> call_for(const char* command, const Connection& connection, HttpRequest request,
                                 std::string_view what) {
  Result<Client> client = connect(connection);
  if (!client) {
    print_error(command, client.message());
    return kUsageError;
  }
  request.timeout = kControlTimeout;
  Result<json> answer = call_json(*client, request, what);
  if (!answer) {
    print_error(command, answer.message());
    return kFailed;
  }
  return std::move(*answer);
}

int run_ls(const Connection& connection) {
  HttpRequest request;
  request.target = "/v1/functions";
  std::variant<json, int> answer = call_for("ls", connection, std::move(request), "GET /v1/functions");
  if (const int* code = std::get_if<int>(&answer)) return *code;
  const json& functions = std::get<json>(answer)["functions"];
  if (!functions.is_array() || functions.empty()) {
    fmt::print(stderr, "No functions are deployed on {}.\n", server_of(connection));
    return 0;
  }

  std::vector<std::vector<std::string>> rows = {{"NAME", "VERSION", "KIND", "ROUTE", "CREATED", "URL"}};
  for (const json& function : functions) {
    std::string url;
    if (function.is_object() && function.contains("urls") && function["urls"].is_array() &&
        !function["urls"].empty() && function["urls"][0].is_string()) {
      url = function["urls"][0].get<std::string>();
    }
    std::string route = string_field(function, "route");  // its coil.toml route, if any
    rows.push_back({string_field(function, "name"), string_field(function, "version").substr(0, 12),
                    string_field(function, "kind"), route.empty() ? "-" : route,
                    string_field(function, "created_at"), url});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
    }
    fmt::print("{}\n", line);
  }
  return 0;
}

int run_rm(const std::string& name, const Connection& connection) {
  HttpRequest request;
  request.method = "DELETE";
  request.target = "/v1/functions/" + url_encode(name);
  std::variant<json, int> answer = call_for("rm", connection, std::move(request), "DELETE /v1/functions/" + name);
  if (const int* code = std::get_if<int>(&answer)) return *code;
  fmt::print("Removed {}: it is no longer served\n", name);
  return 0;
}

int run_rollback(const std::string& name, const std::string& version, const Connection& connection) {
  HttpRequest request;
  request.method = "POST";
  request.target = "/v1/functions/" + url_encode(name) + "/rollback";
  if (!version.empty()) {
    // The replacing error handler keeps dump() from throwing on invalid UTF-8.
    request.body = json{{"version", version}}.dump(-1, ' ', false, json::error_handler_t::replace);
    request.content_type = "application/json";
  }
  std::variant<json, int> answer = call_for("rollback", connection, std::move(request), "the rollback");
  if (const int* code = std::get_if<int>(&answer)) return *code;
  fmt::print("Rolled back {} to version {}\n", name, string_field(std::get<json>(answer), "version"));
  return 0;
}

// ---------------------------------------------------------------------------
// coil logs, invoke
// ---------------------------------------------------------------------------

// Writes a chunk to stdout at once, so that a follower sees each line as the
// server sends it. False when stdout is gone.
bool write_out(std::string_view chunk) {
  if (std::fwrite(chunk.data(), 1, chunk.size(), stdout) != chunk.size()) return false;
  return std::fflush(stdout) == 0;
}

int run_logs(const LogsOptions& options, bool tail_given, const Connection& connection) {
  Result<Client> client = connect(connection);
  if (!client) {
    print_error("logs", client.message());
    return kUsageError;
  }
  HttpRequest request;
  request.target = "/v1/functions/" + url_encode(options.name) + "/logs";
  std::vector<std::string> query;
  if (options.follow) query.push_back("follow=1");
  if (tail_given) query.push_back(fmt::format("tail={}", options.tail));
  for (size_t i = 0; i < query.size(); ++i) request.target += (i == 0 ? "?" : "&") + query[i];
  request.on_body = write_out;
  Result<HttpResponse> response = client->send(request);
  if (!response) {
    print_error("logs", response.message());
    return kFailed;
  }
  if (!succeeded(*response)) {
    print_error("logs", error_message(*response));
    return kFailed;
  }
  return 0;
}

int run_invoke(const InvokeOptions& options, const Connection& connection) {
  Result<Client> client = connect(connection);
  if (!client) {
    print_error("invoke", client.message());
    return kUsageError;
  }
  HttpRequest request;
  request.method = "POST";
  request.target = "/v1/functions/" + url_encode(options.name) + "/invoke";
  request.content_type = options.content_type;
  if (options.data == "-") {
    Result<std::string> input = read_fd(STDIN_FILENO, "standard input");
    if (!input) {
      print_error("invoke", "--data -: " + input.message());
      return kUsageError;
    }
    request.body = std::move(*input);
  } else if (options.data.starts_with("@")) {
    Result<std::string> input = read_file(options.data.substr(1));
    if (!input) {
      print_error("invoke", "--data " + options.data + ": " + input.message());
      return kUsageError;
    }
    request.body = std::move(*input);
  } else {
    request.body = options.data;
  }
  if (request.content_type.empty() && !options.data.empty()) {
    request.content_type = "application/octet-stream";
  }

  request.on_body = write_out;
  Result<HttpResponse> response = client->send(request);
  if (!response) {
    print_error("invoke", response.message());
    return kFailed;
  }
  // A 2xx body was written as it came; any other is printed raw too: it is
  // the function's answer (or the server's reason).
  if (!succeeded(*response)) (void)write_out(response->body);
  if (response->status >= 400) {
    print_error("invoke", fmt::format("HTTP {}", response->status));
    return kFailed;
  }
  return 0;
}

void add_connection_options(CLI::App* command, Connection& connection) {
  command->add_option("--server", connection.server,
                      "URL of the coil server [default: the environment variable COIL_SERVER, else "
                      "http://127.0.0.1:8080]");
  command->add_option("--key-file", connection.key_file,
                      "File holding the API key [default: the environment variable COIL_API_KEY]");
}

}  // namespace

struct RemoteCommands::Commands {
  CLI::App* deploy = nullptr;
  CLI::App* ls = nullptr;
  CLI::App* rm = nullptr;
  CLI::App* rollback = nullptr;
  CLI::App* logs = nullptr;
  CLI::App* invoke = nullptr;
  CLI::Option* tail = nullptr;

  // One Connection each: CLI11 may fill an unparsed subcommand's options too.
  Connection deploy_connection, ls_connection, rm_connection, rollback_connection, logs_connection,
      invoke_connection;
  DeployOptions deploy_options;
  std::string rm_name;
  std::string rollback_name;
  std::string rollback_version;
  LogsOptions logs_options;
  InvokeOptions invoke_options;
};

RemoteCommands::RemoteCommands(CLI::App& app) : commands_(std::make_unique<Commands>()) {
  Commands& c = *commands_;

  c.deploy = app.add_subcommand("deploy", "Upload DIR to a coil server and serve it (see coil server)");
  c.deploy->add_option("dir", c.deploy_options.dir, "Directory with coil.toml (or the code, with ENTRYPOINT)")
      ->capture_default_str();
  c.deploy->add_option("entrypoint", c.deploy_options.entrypoint,
                       "module:attr to deploy DIR without a manifest, as one function served at /fn/NAME/");
  c.deploy->add_option("--name", c.deploy_options.name,
                       "With ENTRYPOINT: the function's name [default: DIR's base name]");
  add_connection_options(c.deploy, c.deploy_connection);

  c.ls = app.add_subcommand("ls", "List the functions a coil server serves");
  add_connection_options(c.ls, c.ls_connection);

  c.rm = app.add_subcommand("rm", "Stop serving function NAME on a coil server");
  c.rm->add_option("name", c.rm_name, "The function")->required();
  add_connection_options(c.rm, c.rm_connection);

  c.rollback = app.add_subcommand("rollback", "Serve an earlier version of function NAME");
  c.rollback->add_option("name", c.rollback_name, "The function")->required();
  c.rollback->add_option(
      "version", c.rollback_version,
      "Version id or a unique prefix of one [default: the version before the current one]");
  add_connection_options(c.rollback, c.rollback_connection);

  c.logs = app.add_subcommand("logs", "Print what function NAME wrote to stdout and stderr");
  c.logs->add_option("name", c.logs_options.name, "The function")->required();
  c.logs->add_flag("-f,--follow", c.logs_options.follow,
                   "Keep printing new lines as they come, until interrupted");
  c.tail = c.logs->add_option("--tail", c.logs_options.tail, "How many recent lines [default: 100]");
  add_connection_options(c.logs, c.logs_connection);

  c.invoke =
      app.add_subcommand("invoke", "Call function NAME's current version (POST /) and print its answer");
  c.invoke->add_option("name", c.invoke_options.name, "The function")->required();
  c.invoke->add_option("-d,--data", c.invoke_options.data,
                       "Request body: TEXT, @FILE for a file's contents, or - for standard input");
  c.invoke->add_option("--content-type", c.invoke_options.content_type,
                       "The body's Content-Type [default: application/octet-stream when there is a body]");
  add_connection_options(c.invoke, c.invoke_connection);
}

RemoteCommands::~RemoteCommands() = default;

std::optional<int> RemoteCommands::run() {
  Commands& c = *commands_;
  if (c.deploy->parsed()) return run_deploy(c.deploy_options, c.deploy_connection);
  if (c.ls->parsed()) return run_ls(c.ls_connection);
  if (c.rm->parsed()) return run_rm(c.rm_name, c.rm_connection);
  if (c.rollback->parsed()) return run_rollback(c.rollback_name, c.rollback_version, c.rollback_connection);
  if (c.logs->parsed()) return run_logs(c.logs_options, c.tail->count() > 0, c.logs_connection);
  if (c.invoke->parsed()) return run_invoke(c.invoke_options, c.invoke_connection);
  return std::nullopt;
}

}  // namespace coil::cli
