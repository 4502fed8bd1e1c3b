#include "http/forwarded.h"

#include <fmt/format.h>

#include "common/ascii.h"

namespace coil::http {
namespace {

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// The last comma-separated element of `value`, trimmed.
std::string_view last_element(std::string_view value) {
  size_t comma = value.rfind(',');
  return trimmed(comma == std::string_view::npos ? value : value.substr(comma + 1));
}

boost::asio::ip::address unmapped(const boost::asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
  }
  return address;
}

}  // namespace

Result<TrustedProxies> TrustedProxies::parse(std::string_view list) {
  TrustedProxies proxies;
  if (trimmed(list).empty()) return proxies;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = trimmed(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (item == "*") {
      proxies.any_ = true;
      continue;
    }
    boost::system::error_code ec;
    boost::asio::ip::address address = boost::asio::ip::make_address(std::string(item), ec);
    if (ec) {
      return Status::error(fmt::format("\"{}\" is not an IP address (a list of IP addresses, or \"*\" for any)",
                                       item));
    }
    proxies.addresses_.push_back(unmapped(address));
  }
  return proxies;
}

bool TrustedProxies::trusts(const boost::asio::ip::address& peer) const {
  if (any_) return true;
  boost::asio::ip::address address = unmapped(peer);
  for (const auto& trusted : addresses_) {
    if (trusted == address) return true;
  }
  return false;
}

Forwarded read_forwarded(const std::vector<frame::Header>& headers) {
  // Repeated headers are one list (RFC 9110 section 5.3): the last one's last element.
  std::string_view proto, for_;
  for (const auto& [name, value] : headers) {
    if (name == "x-forwarded-proto") proto = value;
    if (name == "x-forwarded-for") for_ = value;
  }
  Forwarded forwarded;
  std::string scheme = ascii::lowered(last_element(proto));
  if (scheme == "http" || scheme == "https") forwarded.scheme = std::move(scheme);
  std::string_view client = last_element(for_);
  boost::system::error_code ec;
  boost::asio::ip::address address = boost::asio::ip::make_address(std::string(client), ec);
  if (!client.empty() && !ec) {
    address = unmapped(address);
    forwarded.client = address.is_v6() ? fmt::format("[{}]:0", address.to_string())
                                       : fmt::format("{}:0", address.to_string());
  }
  return forwarded;
}

}  // namespace coil::http
