#include "services/outbound_proxy.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <optional>
#include <string_view>

#include "common/ascii.h"
#include "common/log.h"

namespace coil::services {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kMaxHead = 32 * 1024;
constexpr auto kHeadTimeout = std::chrono::seconds(10);
constexpr auto kIdleTimeout = std::chrono::seconds(300);

using ascii::iequals;

// "host:port" or "[v6]:port" into its parts; false when malformed.
bool split_authority(std::string_view authority, std::string& host, std::string& port) {
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(authority.substr(0, close + 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = std::string(rest.substr(1));
    }
    return true;
  }
  auto colon = authority.rfind(':');
  if (colon == std::string_view::npos) {
    host = std::string(authority);
    return true;
  }
  host = std::string(authority.substr(0, colon));
  port = std::string(authority.substr(colon + 1));
  return true;
}

bool parse_port(const std::string& text, uint16_t& port) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

// One connection from the function: its request head, the checks, then the
// relay between the function and the destination.
class ProxySession : public std::enable_shared_from_this<ProxySession> {
 public:
  ProxySession(asio::io_context& io, tcp::socket client, std::weak_ptr<OutboundProxy> proxy,
               std::shared_ptr<const OutboundOptions> options)
      : client_(std::move(client)),
        upstream_(io),
        timer_(io),
        head_(kMaxHead),
        proxy_(std::move(proxy)),
        options_holder_(std::move(options)) {}

  void start() {
    arm(kHeadTimeout);
    asio::async_read_until(client_, head_, "\r\n\r\n",
                           [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                             if (ec) {
                               // Too large, or the function hung up: nothing was forwarded.
                               if (ec == asio::error::not_found) self->refuse(431, "Request Header Fields Too Large", "");
                               else self->close();
                               return;
                             }
                             self->on_head(n);
                           });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    timer_.cancel();
    client_.close(ignored);
    upstream_.close(ignored);
    if (auto proxy = proxy_.lock()) proxy->detach(this);
  }

 private:
  // Closes the session once `timeout` passes without touch().
  void arm(std::chrono::seconds timeout) {
    timeout_ = timeout;
    deadline_ = std::chrono::steady_clock::now() + timeout;
    wait_until(deadline_);
  }
  void wait_until(std::chrono::steady_clock::time_point when) {
    timer_.expires_at(when);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->closed_) return;
      if (std::chrono::steady_clock::now() < self->deadline_) return self->wait_until(self->deadline_);
      self->close();
    });
  }
  void touch() { deadline_ = std::chrono::steady_clock::now() + timeout_; }

  void on_head(size_t head_size) {
    std::string head(asio::buffers_begin(head_.data()), asio::buffers_begin(head_.data()) + static_cast<long>(head_size));
    head_.consume(head_size);
    size_t line_end = head.find("\r\n");
    std::string_view request_line(head.data(), line_end);
    auto sp1 = request_line.find(' ');
    auto sp2 = request_line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return refuse(400, "Bad Request", "malformed request line\n");
    method_ = std::string(request_line.substr(0, sp1));
    std::string target(request_line.substr(sp1 + 1, sp2 - sp1 - 1));
    std::string_view version = request_line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return refuse(400, "Bad Request", "not HTTP/1.x\n");

    // Headers, kept for the upstream request (plain HTTP only).
    std::vector<std::pair<std::string, std::string>> headers;
    size_t pos = line_end + 2;
    while (pos < head.size()) {
      size_t end = head.find("\r\n", pos);
      if (end == pos) break;
      std::string_view line(head.data() + pos, end - pos);
      auto colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return refuse(400, "Bad Request", "malformed header\n");
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
      pos = end + 2;
    }

    std::string host, port_text;
    config::Destination destination;
    std::string path = "/";
    if (method_ == "CONNECT") {
      // CONNECT carries TLS in practice: it is checked as https, whatever the port.
      destination.scheme = "https";
      if (!split_authority(target, host, port_text) || port_text.empty()) {
        return refuse(400, "Bad Request", "CONNECT needs host:port\n");
      }
    } else {
      constexpr std::string_view kHttp = "http://";
      if (target.size() < kHttp.size() || !iequals(std::string_view(target).substr(0, kHttp.size()), kHttp)) {
        return refuse(400, "Bad Request",
                      "only absolute http:// URLs can be proxied (https goes through CONNECT)\n");
      }
      destination.scheme = "http";
      std::string_view rest = std::string_view(target).substr(kHttp.size());
      size_t authority_end = rest.find_first_of("/?#");
      std::string_view authority = rest.substr(0, authority_end);
      // URL semantics: what precedes '@' is user information, the host follows it.
      if (auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
      authority_text_ = std::string(authority);
      if (authority_end != std::string_view::npos) {
        path = std::string(rest.substr(authority_end));
        if (path.front() != '/') path.insert(path.begin(), '/');
      }
      if (!split_authority(authority, host, port_text)) return refuse(400, "Bad Request", "malformed URL\n");
      if (port_text.empty()) port_text = "80";
    }
    uint16_t port = 0;
    if (!parse_port(port_text, port)) return deny(target, "not a valid port");
    destination.host = config::normalise_host(host);
    destination.port = port;
    described_ = destination.scheme + "://" + (host.empty() ? "?" : host) + ":" + std::to_string(port);
    if (destination.host.empty()) return deny(described_, "not a valid host name");
    if (!config::admits(options_.rules, destination)) return deny(described_, "not in allowed_outbound_hosts");

    if (method_ != "CONNECT") {
      upstream_head_ = method_ + " " + path + " HTTP/1.1\r\n";
      bool has_host = false;
      for (const auto& [name, value] : headers) {
        if (iequals(name, "connection") || iequals(name, "proxy-connection") || iequals(name, "keep-alive") ||
            iequals(name, "proxy-authorization") || iequals(name, "upgrade")) {
          continue;
        }
        has_host = has_host || iequals(name, "host");
        upstream_head_ += name + ": " + value + "\r\n";
      }
      if (!has_host) upstream_head_ += "Host: " + authority_text_ + "\r\n";
      upstream_head_ += "Connection: close\r\n\r\n";
    }

    if (destination.host == "self") {
      if (!options_.self || options_.self->port() == 0) return deny(described_, "coil is not listening yet");
      return connect(*options_.self);
    }
    destination_ = destination;
    options_.resolver->resolve(destination.host, [self = shared_from_this()](Result<Resolver::Addresses> addresses) {
      if (self->closed_) return;
      if (!addresses) return self->deny(self->described_, addresses.message());
      for (const auto& address : *addresses) {
        std::optional<config::IpAddress> ip = config::parse_ip_literal(address.to_string());
        if (!ip || !config::address_admitted(self->options_.rules, self->destination_, *ip)) continue;
        // One of this machine's own addresses: only when an entry names it.
        if (self->options_.resolver->is_local(address) && !self->names_address(address)) continue;
        return self->connect(tcp::endpoint(address, self->destination_.port));
      }
      self->deny(self->described_, "it resolves to " + (addresses->empty() ? std::string("nothing")
                                                                             : addresses->front().to_string()) +
                                       ", a loopback, private, link-local or this machine's own address "
                                       "that no entry names");
    });
  }

  // Whether an address entry (an IP or a network, not a name or "*") admits
  // this address for the destination's scheme and port.
  bool names_address(const asio::ip::address& address) const {
    std::vector<config::AllowedHost> explicit_rules;
    for (const config::AllowedHost& rule : options_.rules) {
      if (rule.host_kind == config::AllowedHost::HostKind::kAddress ||
          rule.host_kind == config::AllowedHost::HostKind::kCidr) {
        explicit_rules.push_back(rule);
      }
    }
    config::Destination literal{destination_.scheme, address.to_string(), destination_.port};
    return config::admits(explicit_rules, literal);
  }

  void connect(const tcp::endpoint& endpoint) {
    upstream_.async_connect(endpoint, [self = shared_from_this(), endpoint](boost::system::error_code ec) {
      if (self->closed_) return;
      if (ec) {
        return self->refuse(502, "Bad Gateway",
                            fmt::format("cannot connect to {}: {}\n", self->described_, ec.message()));
      }
      self->arm(kIdleTimeout);
      std::string greeting = self->method_ == "CONNECT" ? "HTTP/1.1 200 Connection Established\r\n\r\n" : "";
      if (!greeting.empty()) {
        auto text = std::make_shared<std::string>(std::move(greeting));
        asio::async_write(self->client_, asio::buffer(*text), [self, text](boost::system::error_code error, size_t) {
          if (error) return self->close();
          self->forward_leftover();
        });
      } else {
        self->forward_leftover();
      }
    });
  }

  // What the function sent after its head (a body, or TLS bytes), then the
  // two pumps.
  void forward_leftover() {
    auto first = std::make_shared<std::string>(upstream_head_);
    first->append(asio::buffers_begin(head_.data()), asio::buffers_end(head_.data()));
    head_.consume(head_.size());
    asio::async_write(upstream_, asio::buffer(*first), [self = shared_from_this(), first](boost::system::error_code ec, size_t) {
      if (ec) return self->close();
      self->pump(self->client_, self->upstream_, self->up_buffer_, 0);
      self->pump(self->upstream_, self->client_, self->down_buffer_, 1);
    });
  }

  void pump(tcp::socket& from, tcp::socket& to, std::array<char, 65536>& buffer, int direction) {
    from.async_read_some(asio::buffer(buffer), [self = shared_from_this(), &from, &to, &buffer, direction](
                                                   boost::system::error_code ec, size_t n) {
      if (self->closed_) return;
      if (ec) {
        // This direction is over: pass the end on, and finish when both are.
        boost::system::error_code ignored;
        to.shutdown(tcp::socket::shutdown_send, ignored);
        if (++self->directions_done_ == 2 || direction == 1) self->close();
        return;
      }
      self->touch();
      asio::async_write(to, asio::buffer(buffer.data(), n),
                        [self, &from, &to, &buffer, direction](boost::system::error_code error, size_t) {
                          if (error) return self->close();
                          self->pump(from, to, buffer, direction);
                        });
    });
  }

  void deny(const std::string& destination, const std::string& why) {
    log::info("outbound {} denied {} {}: {}", options_.function, method_, destination, why);
    refuse(403, "Destination Not Allowed",
           fmt::format("destination not allowed: {} ({}; see allowed_outbound_hosts of function {})\n", destination,
                       why, options_.function));
  }

  void refuse(int status, const char* reason, const std::string& body) {
    auto response = std::make_shared<std::string>(fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        status, reason, body.size(), body));
    asio::async_write(client_, asio::buffer(*response),
                      [self = shared_from_this(), response](boost::system::error_code, size_t) { self->close(); });
  }

  tcp::socket client_;
  tcp::socket upstream_;
  asio::steady_timer timer_;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::seconds timeout_{0};
  asio::streambuf head_;
  std::weak_ptr<OutboundProxy> proxy_;
  std::shared_ptr<const OutboundOptions> options_holder_;
  const OutboundOptions& options_ = *options_holder_;
  std::string method_;
  std::string authority_text_;
  std::string described_;
  std::string upstream_head_;
  config::Destination destination_;
  std::array<char, 65536> up_buffer_{};
  std::array<char, 65536> down_buffer_{};
  int directions_done_ = 0;
  bool closed_ = false;
};

OutboundProxy::OutboundProxy(asio::io_context& io, unique_fd listener, OutboundOptions options)
    : io_(io), acceptor_(io), retry_(io), options_(std::make_shared<const OutboundOptions>(std::move(options))) {
  boost::system::error_code ec;
  acceptor_.assign(tcp::v4(), listener.release(), ec);
  if (ec) log::info("outbound proxy of {}: {}", options_->function, ec.message());
}

OutboundProxy::~OutboundProxy() { stop(); }

void OutboundProxy::start() { accept(); }

void OutboundProxy::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  retry_.cancel();
  auto sessions = sessions_;
  for (ProxySession* session : sessions) session->close();
  sessions_.clear();
}

void OutboundProxy::accept() {
  acceptor_.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
    if (self->stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of fds (EMFILE, ENFILE), or a socket that cannot accept at all:
      // the listener stays readable, so retrying at once would spin the
      // event loop. Try again a little later.
      log::info("outbound proxy of {}: accept: {}", self->options_->function, ec.message());
      self->retry_.expires_after(std::chrono::milliseconds(100));
      self->retry_.async_wait([self](boost::system::error_code error) {
        if (!error && !self->stopped_) self->accept();
      });
      return;
    }
    if (self->sessions_.size() >= self->options_->max_connections) {
      // Refused outright: the function has too many connections open.
      boost::system::error_code ignored;
      static const std::string kBusy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      socket.write_some(asio::buffer(kBusy), ignored);
      socket.close(ignored);
    } else {
      auto session = std::make_shared<ProxySession>(self->io_, std::move(socket), self, self->options_);
      self->sessions_.insert(session.get());
      session->start();
    }
    self->accept();
  });
}

}  // namespace coil::services
