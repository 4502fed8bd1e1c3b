#include "cli/client.h"

#include <curl/curl.h>

#include <string>

#include "common/ascii.h"

namespace coil::cli {
namespace {

constexpr long kConnectTimeoutMs = 10000;

using ascii::iequals;

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() &&
         (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

// What the libcurl callbacks of one send() share.
struct Exchange {
  CURL* easy = nullptr;
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  bool cancelled = false;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* exchange = static_cast<Exchange*>(user);
  std::string_view line(data, size * count);
  // A status line starts a response; an interim one (100 Continue) is
  // followed by another, and only the last one's headers count.
  if (line.starts_with("HTTP/")) {
    exchange->response->headers.clear();
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    exchange->response->headers.emplace_back(std::string(trim(line.substr(0, colon))),
                                             std::string(trim(line.substr(colon + 1))));
  }
  return size * count;
}

size_t on_write(char* data, size_t size, size_t count, void* user) {
  auto* exchange = static_cast<Exchange*>(user);
  std::string_view chunk(data, size * count);
  long status = 0;
  curl_easy_getinfo(exchange->easy, CURLINFO_RESPONSE_CODE, &status);
  if (exchange->request->on_body && status >= 200 && status < 300) {
    if (!exchange->request->on_body(chunk)) {
      exchange->cancelled = true;
      return CURL_WRITEFUNC_ERROR;
    }
  } else {
    exchange->response->body.append(chunk);
  }
  return chunk.size();
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t upload_now) {
  auto* exchange = static_cast<Exchange*>(user);
  exchange->request->on_upload(static_cast<uint64_t>(upload_now), exchange->request->body.size());
  return 0;
}

}  // namespace

struct Client::Handle {
  CURL* easy = nullptr;
  ~Handle() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return "";
}

Result<Client> Client::create(std::string server_url, std::string api_key) {
  // libcurl's global state, once per process (C++ guarantees a single
  // initialisation of a static even with threads).
  static const CURLcode global_init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global_init != CURLE_OK) {
    return Status::error(std::string("cannot initialise libcurl: ") + curl_easy_strerror(global_init));
  }

  while (server_url.size() > 1 && server_url.back() == '/') server_url.pop_back();
  bool http = server_url.starts_with("http://") || server_url.starts_with("https://");
  CURLU* parsed = curl_url();
  bool valid =
      http && parsed != nullptr && curl_url_set(parsed, CURLUPART_URL, server_url.c_str(), 0) == CURLUE_OK;
  if (parsed != nullptr) curl_url_cleanup(parsed);
  if (!valid) {
    return Status::error("server URL \"" + server_url +
                         "\" is not of the form http://HOST:PORT or https://HOST:PORT");
  }

  if (api_key.empty()) return Status::error("the API key is empty");
  for (char c : api_key) {
    // The key goes into a header line, where these would end or corrupt it.
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Status::error("the API key contains a control character (a line break?); it cannot be sent");
    }
  }

  auto handle = std::make_unique<Handle>();
  handle->easy = curl_easy_init();
  if (handle->easy == nullptr) return Status::error("cannot initialise libcurl (out of memory?)");
  return Client(std::move(server_url), std::move(api_key), std::move(handle));
}

Client::Client(std::string server_url, std::string api_key, std::unique_ptr<Handle> handle)
    : server_url_(std::move(server_url)), api_key_(std::move(api_key)), handle_(std::move(handle)) {}

Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Result<HttpResponse> Client::send(const HttpRequest& request) {
  CURL* easy = handle_->easy;
  // A reset keeps the handle's open connections, so that commands making
  // several requests reuse one.
  curl_easy_reset(easy);

  HttpResponse response;
  Exchange exchange{easy, &request, &response};
  char error_buffer[CURL_ERROR_SIZE] = {};
  std::string url = server_url_ + request.target;

  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
  // Streams (logs -f) may stay quiet for long; keepalive notices a dead peer.
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "coil");
  if (request.timeout) {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout->count()));
  }

  if (request.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else {
    if (request.method == "POST" || !request.body.empty()) {
      // POSTFIELDS neither copies the body nor stops at a NUL byte, given its size.
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    }
    if (request.method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }

  struct curl_slist* headers = nullptr;
  std::string authorization = "Authorization: Bearer " + api_key_;
  headers = curl_slist_append(headers, authorization.c_str());
  // An empty value stops libcurl from adding its form default to a POST.
  std::string content_type = "Content-Type: " + request.content_type;
  if (request.content_type.empty()) content_type = "Content-Type:";
  headers = curl_slist_append(headers, content_type.c_str());
  for (const auto& [name, value] : request.headers) {
    headers = curl_slist_append(headers, (name + ": " + value).c_str());
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);

  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &exchange);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &exchange);
  if (request.on_upload) {
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &exchange);
  }

  CURLcode code = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &response.status);
  // The handle must not point at this frame's buffers after we return.
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
  curl_slist_free_all(headers);

  if (code == CURLE_OK) return response;
  if (exchange.cancelled) return Status::error("cancelled");
  std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
  if (code == CURLE_OPERATION_TIMEDOUT && response.status != 0) {
    return Status::error("the coil server at " + server_url_ +
                         " did not finish answering in time: " + detail);
  }
  if (response.status == 0) {
    return Status::error("cannot reach the coil server at " + server_url_ + ": " + detail);
  }
  return Status::error("lost the connection to the coil server at " + server_url_ + ": " + detail);
}

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    }
  }
  return out;
}

}  // namespace coil::cli
