// Status and Result<T>: how coil reports expected failures.
//
// Contract: functions that can fail for reasons a user or the OS controls
// return [[nodiscard]] Status or Result<T>; the message is written for the
// person who has to act on it ("coil.toml:3: route: must start with '/'"),
// never an internal code. Exceptions never cross module boundaries.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace coil {

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status ok() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message), true); }

  bool is_ok() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  Status(std::string message, bool failed) : message_(std::move(message)), failed_(failed) {}
  std::string message_;
  bool failed_ = false;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {}  // NOLINT: must be an error

  bool is_ok() const { return std::holds_alternative<T>(value_); }
  explicit operator bool() const { return is_ok(); }
  T& value() { return std::get<T>(value_); }
  const T& value() const { return std::get<T>(value_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const std::string& message() const { return std::get<Status>(value_).message(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(value_); }

 private:
  std::variant<T, Status> value_;
};

}  // namespace coil
