#include "services/resolver.h"

#include <fmt/format.h>

#include <boost/asio/post.hpp>
#include <cctype>
#include <fstream>
#include <sstream>

namespace coil::services {

namespace asio = boost::asio;

Result<std::shared_ptr<Resolver>> Resolver::create(asio::io_context& io, const std::string& hosts_file) {
  std::shared_ptr<Resolver> resolver(new Resolver(io));
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
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!name.empty() && name.back() == '.') name.pop_back();
      resolver->hosts_[name].push_back(address);
      named = true;
    }
    if (!named) return Status::error(fmt::format("{}:{}: an address without a name", hosts_file, number));
  }
  return resolver;
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
