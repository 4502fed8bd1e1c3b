// FunctionPool: everything the host runs for one function — its template,
// its instances, the queue of requests waiting for one, and the deadlines.
//
// Scheduling depends on the kind the template reported:
//   handler  one request executes at a time per instance. An idle instance
//            takes a request; else, below max_instances, a new instance is
//            forked; else the request waits, pipelined on the least busy
//            instance (up to kPipelineDepth, so the instance reads and answers
//            requests in batches) or in the pool's queue.
//   asgi     up to max_concurrency requests execute at once per instance (on
//            its event loop); the least busy instance with room takes a
//            request, else a new one is forked, else the request is queued.
//            The request is dispatched as soon as its head is here; its body
//            follows as it arrives (send_body()).
// Waiting requests beyond max_queue are refused with 503.
//
// Deadlines (each a DeadlineQueue, so one timer serves them all):
//   - until the response starts: timeout_ms from submit(). Past it a waiting
//     request gets 504. An executing handler is stopped by killing its
//     instance (the requests pipelined behind it had not started: they go back
//     to the queue); an executing ASGI request is answered 504 and cancelled
//     on its instance;
//   - once the response started: stream_idle_timeout_ms between messages;
//   - a cancelled ASGI request must be taken by its instance (kCancelTaken)
//     within kCancelGrace, or the instance's event loop is taken to be
//     blocked and the instance is killed. Until then the instance takes no
//     new requests (they go to another instance, or wait), so none is lost
//     with a blocked one. Once taken, the request's cleanup has kCleanupGrace
//     to end before the instance is recycled.
//
// Single-threaded: all methods run on the host's event loop.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "config/manifest.h"
#include "runtime/control_channel.h"
#include "runtime/instance.h"
#include "runtime/invocation.h"
#include "runtime/invocation_target.h"
#include "runtime/output_relay.h"
#include "runtime/zygote_process.h"
#include "sandbox/cgroup.h"
#include "services/outbound_proxy.h"
#include "services/resolver.h"

namespace coil::runtime {

// What the host provides to every pool, shared.
struct HostServices {
  // Where each instance gets its cgroup (memory_mb, max_processes, cpu);
  // nullptr when the machine has none (see SandboxMode).
  sandbox::CgroupManager* cgroups = nullptr;
  // For the outbound proxy of each sandboxed template.
  std::shared_ptr<services::Resolver> resolver;
  std::shared_ptr<boost::asio::ip::tcp::endpoint> self;  // coil's front, once listening
  // Called with every line a function's processes print (besides the host
  // log), e.g. coil server's log book; may be empty.
  std::function<void(const std::string& function, pid_t pid, std::string_view line)> output_tap;
};

class FunctionPool : public InvocationTarget, public InstanceEvents {
 public:
  static constexpr size_t kPipelineDepth = 32;
  static constexpr size_t kStandbys = 1;
  static constexpr auto kCancelGrace = std::chrono::milliseconds(1000);
  // How long the cleanup of a cancelled ASGI request may take once its
  // instance took the cancel. Past it the instance is recycled: a task that
  // ignores its cancellation would otherwise hold its slot, and keep the
  // instance from idling out, for ever.
  static constexpr auto kCleanupGrace = std::chrono::seconds(30);
  // How many of the requests that fail with a lost ASGI instance its log line names.
  static constexpr size_t kRequestsNamed = 8;
  // A trial instance that reports neither ready nor failed within this is
  // killed, and the start fails. An ASGI instance bounds lifespan startup
  // itself (30 s), but not when startup blocks its event loop.
  static constexpr auto kTrialTimeout = std::chrono::seconds(35);
  // Flow control for handler instances (frame.h): the pool stops reading an
  // instance while its response has more than kPauseAbove bytes unsent to
  // the client, and reads on once no more than kResumeBelow are.
  static constexpr size_t kPauseAbove = 1 << 20;
  static constexpr size_t kResumeBelow = 256 << 10;

  FunctionPool(boost::asio::io_context& io, config::FunctionConfig config, ZygoteProcess& zygote,
               const HostServices& services = {});
  ~FunctionPool() override;
  FunctionPool(const FunctionPool&) = delete;
  FunctionPool& operator=(const FunctionPool&) = delete;

  // Which functions get a trial instance at start. An ASGI function always
  // does (its lifespan startup must show now, not on a user's first
  // request); coil server asks for one for every function, so that a deploy
  // is accepted only once an instance has started.
  enum class Trial { kAsgiOnly, kAlways };
  // Builds the template (and starts a trial instance, see Trial). `done` is
  // called once: OK, or an error "ORIGIN: entrypoint: why".
  void start(std::function<void(Status)> done, Trial trial = Trial::kAsgiOnly);
  // InvocationTarget
  const std::string& name() const override { return config_.name; }
  uint64_t max_body_bytes() const override { return config_.max_body_bytes; }
  // Whether requests are submitted as soon as their head is here, their body
  // following through send_body() (ASGI), rather than once complete.
  bool streams_request_body() const override { return kind_ == config::Kind::kAsgi; }
  // Takes a request. Always answers it eventually through its sink.
  void submit(std::shared_ptr<Invocation> invocation) override;
  // More of the body of a submitted request (`end`: that was the last part).
  void send_body(const std::shared_ptr<Invocation>& invocation, std::string_view chunk, bool end) override;
  // WebSocket sessions: a client message, and the client closing.
  void send_websocket_message(const std::shared_ptr<Invocation>& invocation, std::string_view data,
                              bool text) override;
  void send_websocket_close(const std::shared_ptr<Invocation>& invocation, uint16_t code) override;
  void client_alive(const std::shared_ptr<Invocation>& invocation) override;
  // The client is gone: the invocation is forgotten. A queued one is dropped;
  // an executing ASGI request is told (http.disconnect) and runs on, within
  // its deadlines; a running handler is let finish, one pipelined behind it
  // is cancelled.
  void abandon(const std::shared_ptr<Invocation>& invocation) override;
  // The client closed its sending side after its request: an ASGI app is told
  // (kInputClosed: http.disconnect), now or when the request is dispatched;
  // its response still goes to the client. Handlers are not told.
  void input_closed(const std::shared_ptr<Invocation>& invocation) override;
  // ASGI: a kDrained frame to the instance; a handler instance paused for
  // this response reads on. Either way the stream is not idle.
  void response_drained(const std::shared_ptr<Invocation>& invocation, uint64_t bytes, size_t unsent) override;
  // Housekeeping, called periodically: idle instances exit, min_instances kept.
  void tick(Clock::time_point now);
  // Requests whose client has not had its complete answer yet.
  size_t unanswered() const { return response_deadlines_.size() + stream_deadlines_.size(); }
  // Refuses new work and closes every instance's socket, so that instances
  // exit on their own (an ASGI instance runs lifespan shutdown first), and
  // retires the template (kRetire): its standbys end too, an ASGI one after
  // its lifespan shutdown. `done` is called once the template has exited,
  // which it does after its last instance and standby.
  void stop_instances(std::function<void()> done);
  // Refuses new work and stops the template and every instance.
  void stop();

  const config::FunctionConfig& config() const { return config_; }
  // The kind the template reported (or the manifest forced).
  config::Kind kind() const { return kind_; }

  // InstanceEvents
  void on_frame(Instance& instance, const frame::Frame& frame) override;
  void on_instance_lost(Instance& instance) override;

 private:
  enum class TemplateState { kBuilding, kReady, kFailed, kGone };

  void build_template();
  void on_template_message(Status status, control::Message& message);
  void finish_start(Status status);
  void place(const std::shared_ptr<Invocation>& invocation);
  Instance* instance_with_room() const;
  bool awaits_cancel(const Instance& instance) const;  // a cancel sent to it is unanswered
  // The requests an instance works on, against its max_concurrency: those in
  // flight, less the cancelled ones whose cleanup runs (their loop took the
  // cancel; kCleanupGrace bounds them), which would otherwise keep new
  // requests out while it lasts.
  size_t load(const Instance& instance) const;
  // The instances that count toward max_instances. A recycled one does not
  // (up to max_instances of them): it is replaced while the requests still
  // in flight on it (a long stream, a WebSocket) finish.
  size_t counted_instances() const;
  // An ASGI instance to be replaced (kRecycle, or a cleanup past kCleanupGrace):
  // it takes no new requests, and is retired once no client waits on it
  // (retire_if_recycled, true if it did).
  void recycle(Instance& instance, std::string why);
  bool retire_if_recycled(Instance& instance);
  void log_requests_lost(const Instance& instance, const std::deque<std::shared_ptr<Invocation>>& in_flight) const;
  void dispatch(Instance& instance, const std::shared_ptr<Invocation>& invocation);
  std::shared_ptr<Instance> spawn_instance();
  // Keeps kStandbys standbys prepared in the template (see python/zygote.cc):
  // forked and in their cgroups ahead of need, so that a cold start pays
  // neither the fork nor the cgroup join. Only once the template has
  // answered every spawn: during a burst, each spawn would otherwise take
  // the standby just asked for, and pay for a standby's preparation (a
  // socket pair, a message, a wakeup) on top of a plain fork.
  void prepare_standbys();
  // True while a wanted instance's spawn is unanswered (no pid yet).
  bool spawn_unanswered() const;
  Result<std::vector<unique_fd>> acquire_instance_cgroup(uint32_t token);
  // A group with `instances` x the instance limits into `group`, and its
  // cgroup.procs files to join it with.
  Result<std::vector<unique_fd>> acquire_group(uint64_t instances, std::unique_ptr<sandbox::InstanceCgroup>& group);
  void drain_queue();
  void keep_minimum();
  size_t waiting() const;
  void on_instance_frame(Instance& instance, const frame::Frame& frame);
  void end_stream(Instance& instance, const std::shared_ptr<Invocation>& invocation);
  // Removes an instance from service. Requests that were executing on it are
  // answered `status`; handler requests pipelined behind the executing one
  // had not started and go back to the front of the queue.
  void retire(Instance& instance, uint16_t status, const std::string& message);
  void kill(Instance& instance, const std::string& reason);
  void send_cancel(const std::shared_ptr<Invocation>& invocation, std::string_view reason);
  // An instance broke the frame protocol (function code can write to its
  // socket): it is killed, and its requests answered 502.
  void protocol_error(Instance& instance, std::string_view what);
  // Whether an instance may send a frame of `type` on `invocation`'s stream now.
  static bool in_order(const Invocation& invocation, frame::Type type);
  // Flow control for a handler instance: stops reading it while the client
  // of the response it is sending has more than kPauseAbove bytes unsent.
  void hold_back_if_unsent(Instance& instance, const Invocation& invocation, bool end);
  // ASGI: tells the instance that the stream's client left; the app runs on.
  void send_disconnect(const std::shared_ptr<Invocation>& invocation);
  // Answers the client (if it is still waiting) and forgets it.
  void fail(Invocation& invocation, uint16_t status, const std::string& message);
  void detach(Invocation& invocation);
  void arm_deadline_timer();
  void on_deadline();
  void expire_response(const std::shared_ptr<Invocation>& invocation);
  void expire_stream(const std::shared_ptr<Invocation>& invocation);
  void remove_from_queue(const Invocation& invocation);
  // Refuses every waiting and running request (503) and closes every instance.
  void close_all_instances(bool kill_busy_handlers);

  boost::asio::io_context& io_;
  config::FunctionConfig config_;
  ZygoteProcess& zygote_;
  config::Kind kind_ = config::Kind::kHandler;

  TemplateState template_state_ = TemplateState::kBuilding;
  std::shared_ptr<ControlChannel> template_;
  pid_t template_pid_ = 0;
  Clock::time_point build_started_;
  std::function<void(Status)> on_started_;
  Trial trial_policy_ = Trial::kAsgiOnly;
  Instance* trial_ = nullptr;  // the trial instance, until it is ready or failed
  bool stopping_ = false;

  std::vector<std::shared_ptr<Instance>> instances_;
  uint32_t next_token_ = 0;
  std::unordered_map<pid_t, std::string> exit_reasons_;  // why the host ended an instance
  std::unordered_set<pid_t> live_pids_;                  // instances forked and not yet reaped
  // The template reports pids of its own pid namespace; the host logs and
  // keys instances by their host pids (read from the pidfd).
  std::unordered_map<pid_t, pid_t> host_pid_of_;
  std::function<void()> on_instances_stopped_;  // stop_instances(): called when the template exits

  HostServices services_;  // services_.cgroups: nullptr when the host has none
  // A cgroup kept ready for every process this pool may run at once, from
  // start() until stop().
  sandbox::CgroupManager::Reservation cgroup_reservation_;
  // The current template's outbound proxy (replaced with the template).
  std::shared_ptr<services::OutboundProxy> outbound_;
  // Each instance's cgroup, by instance token, from spawn until the
  // instance's exit is reported (or its template is gone).
  std::unordered_map<uint32_t, std::unique_ptr<sandbox::InstanceCgroup>> instance_cgroups_;
  // The current template's group, which bounds its import and what its
  // instances do before they join their own: (max_instances + 1) x the
  // instance limits.
  std::unique_ptr<sandbox::InstanceCgroup> template_cgroup_;
  void release_template_cgroup();
  std::unordered_map<pid_t, uint32_t> token_of_pid_;  // host pid -> token
  std::deque<uint32_t> standby_tokens_;               // prepared in the current template
  // Tokens of kSpawn messages not yet answered by kSpawned. The template
  // runs the function's imports, so what it says is checked: a kSpawned for
  // any other token is refused, as is a kOutboundListener after the
  // template started (the zygote sends it before).
  std::unordered_set<uint32_t> awaiting_spawned_;
  bool template_started_ = false;
  static constexpr uint32_t kMaxPageHintReports = 8;
  uint32_t page_hint_reports_ = 0;  // page hints passed on to the current template
  bool out_of_memory(uint32_t token) const;
  void release_cgroup(uint32_t token);
  std::string memory_limit_message() const;
  OutputRelay::Tap output_tap(pid_t pid) const;

  std::deque<std::shared_ptr<Invocation>> queue_;
  DeadlineQueue response_deadlines_;  // unanswered, response not started
  DeadlineQueue stream_deadlines_;    // response started, not complete
  DeadlineQueue cancel_deadlines_;    // cancelled on an ASGI instance, not yet ended there
  DeadlineQueue cleanup_deadlines_;   // ... and the instance took the cancel (kCancelTaken)
  boost::asio::steady_timer deadline_timer_;
  boost::asio::steady_timer trial_timer_;  // bounds the trial instance's start (kTrialTimeout)
  bool timer_armed_ = false;
  Clock::time_point timer_at_;
};

}  // namespace coil::runtime
