#include "services/resolver.h"

#include <fmt/format.h>

#include <boost/asio/post.hpp>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "common/ascii.h"

namespace coil::services {

namespace asio = boost::asio;

Result<std::shared_ptr<Resolver>> Resolver::create(asio::io_context& io, const std::string& hosts_file) {
  std::shared_ptr<Resolver> resolver(new Resolver(io));
  ifaddrs* interfaces = nullptr;
  if (::getifaddrs(&interfaces) == 0) {
    for (ifaddrs* i = interfaces; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr) continue;
      if (i->ifa_addr->sa_family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
        resolver->local_.push_back(asio::ip::address_v4(ntohl(in->sin_addr.s_addr)));
      } else if (i->ifa_addr->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
        asio::ip::address_v6::bytes_type bytes;
        std::memcpy(bytes.data(), in6->sin6_addr.s6_addr, bytes.size());
        resolver->local_.push_back(asio::ip::address_v6(bytes, in6->sin6_scope_id));
      }
    }
    ::freeifaddrs(interfaces);
  }
  if (hosts_file.empty()) return resolver;
  std::ifstream in(hosts_file);
  if (!in) return Status::error(fmt::format("--hosts-file: cannot read {}", hosts_file));
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string address_text, name;
    if (!(words >> address_text)) continue;
    boost::system::error_code ec;
    asio::ip::address address = asio::ip::make_address(address_text, ec);
    if (ec) return Status::error(fmt::format("{}:{}: \"{}\" is not an IP address", hosts_file, number, address_text));
    bool named = false;
    while (words >> name) {
      ascii::lower_in_place(name);
      if (!name.empty() && name.back() == '.') name.pop_back();
      resolver->hosts_[name].push_back(address);
      named = true;
    }
    if (!named) return Status::error(fmt::format("{}:{}: an address without a name", hosts_file, number));
  }
  return resolver;
}

bool Resolver::is_local(const asio::ip::address& address) const {
  asio::ip::address plain = address;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    plain = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  for (const auto& local : local_) {
    if (local.is_v6() && plain.is_v6()) {
      if (local.to_v6().to_bytes() == plain.to_v6().to_bytes()) return true;  // any scope
    } else if (local == plain) {
      return true;
    }
  }
  return false;
}

void Resolver::resolve(const std::string& host, Callback callback) {
  boost::system::error_code ec;
  // Strict literals only (inet_pton): "2130706433" or "0x7f.1" are names
  // here, and whatever the system resolver makes of them is checked as any
  // other answer.
  asio::ip::address literal = asio::ip::make_address(host, ec);
  if (!ec) {
    asio::post(io_, [callback = std::move(callback), literal] { callback(Addresses{literal}); });
    return;
  }
  if (auto it = hosts_.find(host); it != hosts_.end()) {
    asio::post(io_, [callback = std::move(callback), addresses = it->second] { callback(addresses); });
    return;
  }
  resolver_.async_resolve(host, "", [self = shared_from_this(), host, callback = std::move(callback)](
                                        boost::system::error_code error, asio::ip::tcp::resolver::results_type results) {
    if (error) {
      callback(Status::error(fmt::format("cannot resolve {}: {}", host, error.message())));
      return;
    }
    Addresses addresses;
    for (const auto& entry : results) addresses.push_back(entry.endpoint().address());
    callback(std::move(addresses));
  });
}

}  // namespace coil::services
