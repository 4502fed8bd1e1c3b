// FunctionPool: everything the host runs for one function — its template,
// its instances, the queue of requests waiting for one, and the deadlines.
//
// Scheduling (handler kind, one request at a time per instance):
//   1. an idle instance takes the request;
//   2. else, below max_instances, a new instance is forked from the template
//      and takes it (frames wait in the socket until the fork completes);
//   3. else the request waits: pipelined on the least busy instance (up to
//      kPipelineDepth, so that the instance reads and answers requests in
//      batches), then in the pool's queue. Waiting requests beyond
//      max_queue are refused with 503.
// Deadlines: timeout_ms counts from submit(). A request whose deadline passes
// while it waits is answered 504 and cancelled; if it is executing, its
// instance is killed (it serves one request at a time) and the requests
// pipelined behind it, which have not started, go back to the queue.
//
// Single-threaded: all methods run on the host's event loop.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/manifest.h"
#include "runtime/control_channel.h"
#include "runtime/instance.h"
#include "runtime/invocation.h"
#include "runtime/zygote_process.h"

namespace coil::runtime {

class FunctionPool : public InstanceEvents {
 public:
  static constexpr size_t kPipelineDepth = 32;

  FunctionPool(boost::asio::io_context& io, config::FunctionConfig config, ZygoteProcess& zygote);
  ~FunctionPool() override;
  FunctionPool(const FunctionPool&) = delete;
  FunctionPool& operator=(const FunctionPool&) = delete;

  // Builds the template. `done` is called once: OK when it is ready, or an
  // error "ORIGIN: entrypoint: why" when the code does not import.
  void start(std::function<void(Status)> done);
  // Takes a complete request. Always answers it eventually through its sink.
  void submit(std::shared_ptr<Invocation> invocation);
  // The client is gone: the invocation is forgotten (cancelled if it has not
  // started; a running handler is let finish, its response dropped).
  void abandon(const std::shared_ptr<Invocation>& invocation);
  // Housekeeping, called periodically: idle instances exit, min_instances kept.
  void tick(Clock::time_point now);
  // Requests not yet answered.
  size_t unanswered() const { return live_.size(); }
  // Refuses new work and stops the template and every instance.
  void stop();

  const config::FunctionConfig& config() const { return config_; }

  // InstanceEvents
  void on_frame(Instance& instance, const frame::Frame& frame) override;
  void on_instance_lost(Instance& instance) override;

 private:
  enum class TemplateState { kBuilding, kReady, kFailed, kGone };

  void build_template();
  void on_template_message(Status status, control::Message& message);
  void place(const std::shared_ptr<Invocation>& invocation);
  void dispatch(Instance& instance, const std::shared_ptr<Invocation>& invocation);
  std::shared_ptr<Instance> spawn_instance();
  void drain_queue();
  void keep_minimum();
  size_t waiting() const;
  // Removes an instance from service: its unstarted requests go back to the
  // front of the queue, its running one is answered `status`.
  void retire(Instance& instance, uint16_t running_status, const std::string& running_message);
  // Ends an invocation's relation with its client: `fail` answers it first.
  void fail(Invocation& invocation, uint16_t status, const std::string& message);
  void detach(Invocation& invocation);
  void arm_deadline_timer();
  void on_deadline();
  void expire(const std::shared_ptr<Invocation>& invocation);
  void remove_from_queue(const Invocation& invocation);

  boost::asio::io_context& io_;
  config::FunctionConfig config_;
  ZygoteProcess& zygote_;

  TemplateState template_state_ = TemplateState::kBuilding;
  std::string template_error_;
  std::shared_ptr<ControlChannel> template_;
  pid_t template_pid_ = 0;
  Clock::time_point build_started_;
  std::function<void(Status)> on_started_;
  bool stopping_ = false;

  std::vector<std::shared_ptr<Instance>> instances_;
  uint32_t next_token_ = 0;
  std::unordered_map<pid_t, std::string> exit_reasons_;  // why the host ended an instance

  std::deque<std::shared_ptr<Invocation>> queue_;
  std::list<std::shared_ptr<Invocation>> live_;  // unanswered, in deadline order
  boost::asio::steady_timer deadline_timer_;
  bool timer_armed_ = false;
  Clock::time_point timer_at_;
};

}  // namespace coil::runtime
