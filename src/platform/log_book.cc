#include "platform/log_book.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>

namespace coil::platform {
namespace {

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Appends the last lines of `path` to `out` (at most `lines` kept overall).
void read_tail(const std::string& path, size_t lines, std::deque<std::string>& out) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(std::move(line));
    if (out.size() > lines) out.pop_front();
  }
}

}  // namespace

LogBook::LogBook(std::string directory) : directory_(std::move(directory)) {}

LogBook::File* LogBook::file_of(const std::string& function) {
  auto it = files_.find(function);
  if (it != files_.end() && it->second.size < kMaxFileBytes) return &it->second;
  if (it != files_.end()) {
    // Rotate: one old file is kept.
    files_.erase(it);
    std::rename(path_of(function).c_str(), (path_of(function) + ".1").c_str());
  }
  unique_fd fd(::open(path_of(function).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) return nullptr;
  struct stat st {};
  ::fstat(fd.get(), &st);
  File& file = files_[function];
  file.fd = std::move(fd);
  file.size = static_cast<uint64_t>(st.st_size);
  return &file;
}

void LogBook::append(const std::string& function, pid_t pid, std::string_view line) {
  std::string text = timestamp() + " [pid=" + std::to_string(pid) + "] ";
  text.append(line);
  if (File* file = file_of(function)) {
    std::string record = text + "\n";
    ssize_t written = ::write(file->fd.get(), record.data(), record.size());
    if (written > 0) file->size += static_cast<uint64_t>(written);
  }
  // A follower may unfollow (itself or another) while being called.
  std::vector<uint64_t> ids;
  for (const auto& [id, subscription] : followers_) {
    if (subscription.function == function) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    auto it = followers_.find(id);
    if (it != followers_.end()) it->second.follower(text);
  }
}

std::vector<std::string> LogBook::tail(const std::string& function, size_t lines) const {
  std::deque<std::string> kept;
  if (lines == 0) return {};
  read_tail(path_of(function) + ".1", lines, kept);
  read_tail(path_of(function), lines, kept);
  return {kept.begin(), kept.end()};
}

uint64_t LogBook::follow(const std::string& function, Follower follower) {
  uint64_t id = next_id_++;
  followers_[id] = Subscription{function, std::move(follower)};
  return id;
}

void LogBook::unfollow(uint64_t id) { followers_.erase(id); }

}  // namespace coil::platform
