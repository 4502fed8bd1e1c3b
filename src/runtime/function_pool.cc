#include "runtime/function_pool.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/ascii.h"
#include "common/log.h"
#include "runtime/output_relay.h"

namespace coil::runtime {
namespace {

// The host does not trust what an instance sends: a response head must be
// well-formed before any of it reaches a client (no header injection, no
// interim 1xx status posing as the response, no header so large that a
// library on the way refuses it). 101 is the accept of a WebSocket.
constexpr size_t kMaxHeaderName = 256;
constexpr size_t kMaxHeaderValue = 16 * 1024;
using frame::kMaxResponseHead;

// A header name as a log line may show it: at most 64 bytes, anything but
// printable ASCII as '?'.
std::string loggable_name(std::string_view name) {
  std::string shown(name.substr(0, 64));
  for (char& c : shown) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x21 || byte > 0x7e) c = '?';
  }
  return name.size() > 64 ? shown + "..." : shown;
}

// What is wrong with a response head a function sent, for its log line; ""
// when it may go to a client.
std::string response_head_problem(const frame::ResponseHead& head, bool websocket) {
  bool status_ok = (head.status >= 200 && head.status <= 599) || (websocket && head.status == 101);
  if (!status_ok) return fmt::format("status {} is not a final status (200-599)", head.status);
  size_t total = 0;
  for (const auto& [name, value] : head.headers) {
    total += name.size() + value.size() + 4;
    if (name.empty()) return "a header with an empty name";
    if (name.size() > kMaxHeaderName) {
      return fmt::format("header {} has a name over {} bytes", loggable_name(name), kMaxHeaderName);
    }
    if (value.size() > kMaxHeaderValue) {
      return fmt::format("header {} has a value of {} bytes (at most {})", loggable_name(name), value.size(),
                         kMaxHeaderValue);
    }
    if (total > kMaxResponseHead) return fmt::format("its headers are over {} bytes", kMaxResponseHead);
    for (char c : name) {
      if (!ascii::is_token_char(c)) return fmt::format("header name {} is not a token", loggable_name(name));
    }
    for (unsigned char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') {
        return fmt::format("header {} has a CR, LF or NUL in its value", loggable_name(name));
      }
    }
  }
  return "";
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

std::string output_prefix(const std::string& function, pid_t pid) {
  return "[" + function + " pid=" + std::to_string(pid) + "] ";
}

// The pid a pidfd refers to, in the host's pid namespace; `fallback` when
// it cannot be read.
pid_t host_pid_of_pidfd(int pidfd, pid_t fallback) {
  std::ifstream info("/proc/self/fdinfo/" + std::to_string(pidfd));
  std::string line;
  while (std::getline(info, line)) {
    if (line.rfind("Pid:", 0) == 0) {
      long pid = std::strtol(line.c_str() + 4, nullptr, 10);
      return pid > 0 ? static_cast<pid_t>(pid) : fallback;
    }
  }
  return fallback;
}

}  // namespace

FunctionPool::FunctionPool(boost::asio::io_context& io, config::FunctionConfig config, ZygoteProcess& zygote,
                           const HostServices& services)
    : io_(io),
      config_(std::move(config)),
      zygote_(zygote),
      services_(services),
      response_deadlines_(std::chrono::milliseconds(config_.timeout_ms)),
      stream_deadlines_(std::chrono::milliseconds(config_.stream_idle_timeout_ms)),
      cancel_deadlines_(kCancelGrace),
      cleanup_deadlines_(kCleanupGrace),
      deadline_timer_(io),
      trial_timer_(io) {
  // A kind the manifest forces (or coil server recorded at deploy) is known
  // before the template reports it: the front streams bodies from the start.
  if (config_.kind != config::Kind::kAuto) kind_ = config_.kind;
}

OutputRelay::Tap FunctionPool::output_tap(pid_t pid) const {
  if (!services_.output_tap) return nullptr;
  return [tap = services_.output_tap, name = config_.name, pid](std::string_view line) { tap(name, pid, line); };
}

FunctionPool::~FunctionPool() {
  stop();
  // Whatever still runs in these groups is killed by the manager.
  while (!instance_cgroups_.empty()) release_cgroup(instance_cgroups_.begin()->first);
  release_template_cgroup();
}

void FunctionPool::release_template_cgroup() {
  if (template_cgroup_) services_.cgroups->release(std::move(template_cgroup_));
}

bool FunctionPool::out_of_memory(uint32_t token) const {
  auto it = instance_cgroups_.find(token);
  return it != instance_cgroups_.end() && it->second->oom_killed();
}

void FunctionPool::release_cgroup(uint32_t token) {
  auto it = instance_cgroups_.find(token);
  if (it == instance_cgroups_.end()) return;
  services_.cgroups->release(std::move(it->second));
  instance_cgroups_.erase(it);
}

std::string FunctionPool::memory_limit_message() const {
  return "function " + config_.name + " ran out of memory: its memory limit (memory_mb = " +
         std::to_string(config_.memory_mb) + ") was reached";
}

void FunctionPool::start(std::function<void(Status)> done, Trial trial) {
  on_started_ = std::move(done);
  trial_policy_ = trial;
  if (services_.cgroups != nullptr) {
    cgroup_reservation_ = services_.cgroups->reserve(config_.max_instances + kStandbys + 1);
  }
  build_template();
}

void FunctionPool::finish_start(Status status) {
  trial_ = nullptr;
  trial_timer_.cancel();
  if (on_started_) std::exchange(on_started_, nullptr)(std::move(status));
}

void FunctionPool::build_template() {
  template_state_ = TemplateState::kBuilding;
  build_started_ = Clock::now();
  std::vector<unique_fd> cgroup_procs;
  if (services_.cgroups != nullptr) {
    release_template_cgroup();  // the previous template's, if any
    // The template counts as one more instance.
    Result<std::vector<unique_fd>> procs = acquire_group(config_.max_instances + 1, template_cgroup_);
    if (!procs) {
      template_state_ = TemplateState::kFailed;
      finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: cannot create the function's cgroup: " +
                                 procs.message()));
      return;
    }
    cgroup_procs = std::move(*procs);
  }
  template_started_ = false;
  page_hint_reports_ = 0;
  Result<TemplateHandles> handles = zygote_.build_template(config_, std::move(cgroup_procs));
  if (!handles) {
    template_state_ = TemplateState::kFailed;
    finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: " + handles.message()));
    return;
  }
  template_ = std::make_shared<ControlChannel>(io_, std::move(handles->control));
  // The template's output is relayed once its pid is known (kTemplateStarted);
  // until then it waits in the pipe.
  auto output = std::make_shared<unique_fd>(std::move(handles->output));
  template_->start([this, output](Status s, control::Message& m) {
    if (s && m.type == control::Type::kTemplateStarted && output->valid()) {
      template_pid_ = static_cast<pid_t>(m.pid);
      std::make_shared<OutputRelay>(io_, std::move(*output), output_prefix(config_.name, template_pid_),
                                    output_tap(template_pid_))
          ->start();
    }
    on_template_message(s, m);
  });
}

void FunctionPool::on_template_message(Status status, control::Message& m) {
  if (!status) {
    // The template is gone: its instances die with it (PDEATHSIG).
    release_template_cgroup();  // and whatever is left in it
    bool was_building = template_state_ == TemplateState::kBuilding;
    template_.reset();
    if (stopping_) {
      if (on_instances_stopped_) std::exchange(on_instances_stopped_, nullptr)();
      return;
    }
    if (was_building) {
      template_state_ = TemplateState::kFailed;
      finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: the template exited while importing '" +
                                 config_.entrypoint + "' (see its output above)"));
      while (!queue_.empty()) {
        auto invocation = queue_.front();
        queue_.pop_front();
        fail(*invocation, 503, "function " + config_.name + " failed to start");
      }
      return;
    }
    bool was_ready = template_state_ == TemplateState::kReady;
    template_state_ = TemplateState::kGone;
    // Its instances died with it; no exit will be reported for them.
    while (!instance_cgroups_.empty()) release_cgroup(instance_cgroups_.begin()->first);
    token_of_pid_.clear();
    standby_tokens_.clear();
    awaiting_spawned_.clear();
    host_pid_of_.clear();
    exit_reasons_.clear();
    live_pids_.clear();
    if (was_ready) {
      log::info("template {} (pid {}) exited; it is rebuilt when a request needs it", config_.name, template_pid_);
      // Its instances die with it (PDEATHSIG): none may take another request.
      for (auto& instance : std::vector(instances_)) {
        retire(*instance, 502, "instance of " + config_.name + " died with its template");
      }
    }
    // Requests are waiting for it now, or instances must be kept running
    // (min_instances, persistent): rebuild at once.
    if (!queue_.empty() || config_.min_instances > 0) build_template();
    return;
  }
  switch (m.type) {
    case control::Type::kOutboundListener: {
      if (template_started_) {
        log::info("template {} sent an outbound listener after it started; ignored", config_.name);
        break;
      }
      if (m.fds.empty() || !services_.resolver) break;
      if (outbound_) outbound_->stop();  // the previous template's, whose sandbox is gone
      services::OutboundOptions options;
      options.function = config_.name;
      options.rules = config_.allowed_outbound_hosts;
      options.resolver = services_.resolver;
      options.self = services_.self;
      outbound_ = std::make_shared<services::OutboundProxy>(io_, std::move(m.fds[0]), std::move(options));
      outbound_->start();
      break;
    }
    case control::Type::kTemplateStarted:
      template_started_ = true;
      break;
    case control::Type::kTemplateReady: {
      if (template_state_ != TemplateState::kBuilding) break;  // said once, at the end of the build
      if (stopping_) {  // built while coil stops: nothing is to start in it
        finish_start(Status::error("coil is stopping"));
        break;
      }
      template_state_ = TemplateState::kReady;
      kind_ = m.ready.kind == "asgi" ? config::Kind::kAsgi : config::Kind::kHandler;
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - build_started_).count();
      log::info("template {} imported {} in {:.1f}ms (kind {})", config_.name, config_.entrypoint,
                m.ready.import_us / 1000.0, m.ready.kind);
      if (!m.ready.threads.empty()) {
        log::info("template {}: importing {} started threads ({}); a process with threads cannot be forked "
                  "safely, so its instances start as fresh processes (correct, only slower)",
                  config_.name, config_.entrypoint, m.ready.threads);
      }
      log::info("template {} ready in {:.1f}ms (pid {})", config_.name, ms, m.ready.pid);
      if (kind_ == config::Kind::kAsgi || trial_policy_ == Trial::kAlways) {
        // One trial instance runs lifespan startup now, so that a failing
        // startup shows at start and not on a user's first request.
        auto trial = spawn_instance();
        if (!trial) {
          finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: cannot start an instance"));
          return;
        }
        trial_ = trial.get();
        trial_timer_.expires_after(kTrialTimeout);
        trial_timer_.async_wait([this](boost::system::error_code ec) {
          if (ec || trial_ == nullptr) return;
          Instance& stuck = *trial_;
          trial_ = nullptr;  // retire() is not to report it as an exit
          log::info("instance {} pid={} did not finish starting within {} s; killing it", config_.name, stuck.pid(),
                    kTrialTimeout.count());
          kill(stuck, "start timeout");
          retire(stuck, 503, "function " + config_.name + " failed to start");
          // Last: the start callback may stop this pool.
          finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: the first instance did not finish " +
                                     "starting within " + std::to_string(kTrialTimeout.count()) +
                                     " s (lifespan startup or an after_restore hook blocked its process)"));
        });
      } else {
        finish_start(Status::ok());
      }
      keep_minimum();
      drain_queue();
      prepare_standbys();
      break;
    }
    case control::Type::kTemplateFailed:
      template_state_ = TemplateState::kFailed;
      log::info("template {} failed: {}", config_.name, m.message);
      finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: " + m.message));
      while (!queue_.empty()) {
        auto invocation = queue_.front();
        queue_.pop_front();
        fail(*invocation, 503, "function " + config_.name + " failed to start");
      }
      break;
    case control::Type::kSpawned: {
      if (awaiting_spawned_.erase(m.token) == 0) {
        log::info("template {} reported an instance nobody asked for (token {}); ignored", config_.name, m.token);
        break;  // its fds close with `m`
      }
      auto pid = static_cast<pid_t>(m.pid);
      if (!m.fds.empty()) pid = host_pid_of_pidfd(m.fds[0].get(), pid);
      host_pid_of_[static_cast<pid_t>(m.pid)] = pid;
      token_of_pid_[pid] = m.token;
      if (m.fds.size() == 2) {
        std::make_shared<OutputRelay>(io_, std::move(m.fds[1]), output_prefix(config_.name, pid), output_tap(pid))
            ->start();
      }
      auto it = std::find_if(instances_.begin(), instances_.end(),
                             [&](const auto& i) { return i->token() == m.token; });
      if (it != instances_.end() && !m.fds.empty()) {
        (*it)->set_process(pid, std::move(m.fds[0]));
      } else if (!m.fds.empty()) {
        // Retired before its fork was reported (a kill requested then would
        // otherwise be lost): it must not run unsupervised.
        ::syscall(SYS_pidfd_send_signal, m.fds[0].get(), SIGKILL, nullptr, 0);
        exit_reasons_[pid] = "killed: retired before it started";
      }
      live_pids_.insert(pid);
      log::info("instance {} pid={} started", config_.name, pid);
      prepare_standbys();
      break;
    }
    case control::Type::kExited: {
      auto pid = static_cast<pid_t>(m.pid);
      auto known = host_pid_of_.find(pid);
      if (known == host_pid_of_.end()) break;  // not an instance the template reported
      pid = known->second;
      host_pid_of_.erase(known);
      std::string reason = describe_wait_status(m.wait_status);
      if (auto it = exit_reasons_.find(pid); it != exit_reasons_.end()) {
        reason = it->second;
        exit_reasons_.erase(it);
      }
      if (auto token = token_of_pid_.find(pid); token != token_of_pid_.end()) {
        if (out_of_memory(token->second)) {
          reason = "killed: out of memory, memory_mb = " + std::to_string(config_.memory_mb);
        }
        release_cgroup(token->second);
        token_of_pid_.erase(token);
      }
      log::info("instance {} pid={} exited ({})", config_.name, pid, reason);
      live_pids_.erase(pid);
      break;
    }
    default:
      break;
  }
}

void FunctionPool::submit(std::shared_ptr<Invocation> invocation) {
  if (stopping_) {
    invocation->sink->on_failure(503, "coil is shutting down\n");
    invocation->sink.reset();
    return;
  }
  invocation->state = Invocation::State::kQueued;
  response_deadlines_.push(invocation, Clock::now());
  arm_deadline_timer();

  switch (template_state_) {
    case TemplateState::kReady:
      place(invocation);
      return;
    case TemplateState::kFailed:
      fail(*invocation, 503, "function " + config_.name + " failed to start");
      return;
    case TemplateState::kGone:
      build_template();
      if (template_state_ == TemplateState::kFailed) {
        fail(*invocation, 503, "function " + config_.name + " failed to start");
        return;
      }
      [[fallthrough]];
    case TemplateState::kBuilding:
      if (waiting() >= config_.max_queue) {
        fail(*invocation, 503, config_.name + " is overloaded, retry later");
        return;
      }
      queue_.push_back(invocation);
      return;
  }
}

void FunctionPool::send_body(const std::shared_ptr<Invocation>& invocation, std::string_view chunk, bool end) {
  switch (invocation->state) {
    case Invocation::State::kQueued:
      invocation->body.append(chunk);
      invocation->body_complete = end;
      break;
    case Invocation::State::kDispatched:
    case Invocation::State::kResponding:
      if (invocation->instance != nullptr && !invocation->cancel_sent) {
        std::string frames;
        frame::append_body(frames, frame::Type::kRequestBody, invocation->id, chunk, end);
        invocation->instance->send(frames);
      }
      // A body still coming beside a started response (full duplex) is the
      // stream's activity, as a WebSocket's messages are: an app that reads a
      // slow upload before it answers is not idle.
      client_alive(invocation);
      invocation->body_complete = end;
      break;
    case Invocation::State::kDone:
      break;
  }
}

void FunctionPool::send_websocket_message(const std::shared_ptr<Invocation>& invocation, std::string_view data,
                                          bool text) {
  Instance* instance = invocation->instance;
  if (instance == nullptr || invocation->cancel_sent) return;
  if (invocation->deadline_queue == &stream_deadlines_) {
    stream_deadlines_.push(invocation, Clock::now());  // activity either way keeps the session alive
  }
  std::string frames;
  frame::append_ws_message(frames, frame::Type::kRequestBody, invocation->id, data, text);
  instance->send(frames);
}

void FunctionPool::client_alive(const std::shared_ptr<Invocation>& invocation) {
  if (invocation->deadline_queue == &stream_deadlines_) stream_deadlines_.push(invocation, Clock::now());
}

void FunctionPool::send_websocket_close(const std::shared_ptr<Invocation>& invocation, uint16_t code) {
  Instance* instance = invocation->instance;
  if (instance == nullptr || invocation->cancel_sent) return;
  std::string frames;
  frame::append_ws_close(frames, invocation->id, code, {});
  instance->send(frames);
}

size_t FunctionPool::waiting() const {
  size_t count = queue_.size();
  if (kind_ == config::Kind::kHandler) {
    for (const auto& instance : instances_) {
      if (instance->in_flight().size() > 1) count += instance->in_flight().size() - 1;
    }
  }
  return count;
}

// The instance a request should go to without forking: an idle one first;
// then (handler) the least busy one with pipeline room, or (ASGI) the least
// busy one below max_concurrency. nullptr when none has room. A recycled
// instance takes no new requests, nor does an ASGI instance that has not yet
// taken a cancel sent to it: a working event loop takes it within a turn, a
// blocked one is killed at kCancelGrace, with every request sent to it meanwhile.
Instance* FunctionPool::instance_with_room() const {
  size_t limit = kind_ == config::Kind::kAsgi ? config_.max_concurrency : kPipelineDepth;
  Instance* best = nullptr;
  size_t best_load = 0;
  for (const auto& instance : instances_) {
    // A handler instance held back by a slow client (flow control) would
    // keep what is sent to it waiting on that client.
    if (instance->closed() || instance->reading_paused() || instance->recycled()) continue;
    size_t instance_load = load(*instance);
    if (instance_load >= limit || (!cancel_deadlines_.empty() && awaits_cancel(*instance))) continue;
    if (best == nullptr || instance_load < best_load) {
      best = instance.get();
      best_load = instance_load;
    }
  }
  return best;
}

size_t FunctionPool::counted_instances() const {
  size_t recycled = std::count_if(instances_.begin(), instances_.end(), [](const auto& i) { return i->recycled(); });
  return instances_.size() - std::min<size_t>(recycled, config_.max_instances);
}

size_t FunctionPool::load(const Instance& instance) const {
  size_t count = instance.in_flight().size();
  for (const auto& invocation : cleanup_deadlines_) {
    if (invocation->instance == &instance && count > 0) --count;
  }
  return count;
}

bool FunctionPool::awaits_cancel(const Instance& instance) const {
  return std::any_of(cancel_deadlines_.begin(), cancel_deadlines_.end(),
                     [&](const auto& invocation) { return invocation->instance == &instance; });
}

void FunctionPool::place(const std::shared_ptr<Invocation>& invocation) {
  Instance* target = instance_with_room();
  bool idle = target != nullptr && (target->in_flight().empty() || kind_ == config::Kind::kAsgi);
  if (!idle && counted_instances() < config_.max_instances) {
    if (auto spawned = spawn_instance()) target = spawned.get();
  } else if (!idle && target != nullptr && waiting() >= config_.max_queue) {
    target = nullptr;  // pipelining would make it wait: the queue limit applies
  }
  if (target != nullptr) {
    dispatch(*target, invocation);
    return;
  }
  if (waiting() >= config_.max_queue) {
    fail(*invocation, 503, config_.name + " is overloaded, retry later");
    return;
  }
  queue_.push_back(invocation);
}

void FunctionPool::dispatch(Instance& instance, const std::shared_ptr<Invocation>& invocation) {
  invocation->state = Invocation::State::kDispatched;
  invocation->instance = &instance;
  instance.in_flight().push_back(invocation);
  std::string frames;
  frame::append_request(frames, invocation->id, invocation->head, invocation->body, invocation->body_complete);
  if (invocation->input_closed) frame::append(frames, frame::Type::kInputClosed, frame::kFlagEnd, invocation->id, "");
  // A handler request may be sent again if its instance dies before starting
  // it; an ASGI request never is, so its body need not be kept.
  if (kind_ == config::Kind::kAsgi) invocation->body.clear();
  instance.send(frames);
}

Result<std::vector<unique_fd>> FunctionPool::acquire_group(uint64_t instances,
                                                           std::unique_ptr<sandbox::InstanceCgroup>& group) {
  sandbox::CgroupLimits limits;
  limits.memory_bytes = instances * (uint64_t{config_.memory_mb} << 20);
  limits.max_processes = instances * config_.max_processes;
  limits.cpu = config_.cpu;
  Result<std::unique_ptr<sandbox::InstanceCgroup>> acquired = services_.cgroups->acquire(limits);
  Result<std::vector<unique_fd>> procs =
      acquired ? (*acquired)->open_procs() : Result<std::vector<unique_fd>>(acquired.status());
  if (!procs) {
    if (acquired) services_.cgroups->release(std::move(*acquired));
    return procs.status();
  }
  group = std::move(*acquired);
  return procs;
}

Result<std::vector<unique_fd>> FunctionPool::acquire_instance_cgroup(uint32_t token) {
  // The instance joins its own group before it runs anything, through these
  // fds, opened here with the host's rights (see sandbox/cgroup.h). Joining
  // costs an RCU grace period on cgroup v1 (several ms): standbys pay it
  // ahead of need.
  std::unique_ptr<sandbox::InstanceCgroup> group;
  Result<std::vector<unique_fd>> procs = acquire_group(1, group);
  if (procs) instance_cgroups_[token] = std::move(group);
  return procs;
}

std::shared_ptr<Instance> FunctionPool::spawn_instance() {
  if (!template_ || template_state_ != TemplateState::kReady) return nullptr;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    log::info("cannot create an instance socket for {}: {}", config_.name, std::strerror(errno));
    return nullptr;
  }
  unique_fd host_end(fds[0]);
  control::Message spawn;
  spawn.type = control::Type::kSpawn;
  spawn.fds.emplace_back(fds[1]);
  if (!standby_tokens_.empty()) {
    spawn.token = standby_tokens_.front();  // its cgroup is acquired and joined already
    standby_tokens_.pop_front();
  } else {
    spawn.token = ++next_token_;
    if (services_.cgroups != nullptr) {
      Result<std::vector<unique_fd>> procs = acquire_instance_cgroup(spawn.token);
      if (!procs) {
        log::info("cannot give an instance of {} its cgroup: {}", config_.name, procs.message());
        return nullptr;
      }
      for (unique_fd& fd : *procs) spawn.fds.push_back(std::move(fd));
    }
  }
  uint32_t token = spawn.token;
  if (Status s = template_->send(std::move(spawn)); !s) {
    log::info("cannot ask template {} for an instance: {}", config_.name, s.message());
    if (services_.cgroups != nullptr) release_cgroup(token);
    return nullptr;
  }
  awaiting_spawned_.insert(token);
  auto instance = std::make_shared<Instance>(io_, std::move(host_end), token, *this);
  instance->start();
  instances_.push_back(instance);
  return instance;
}

bool FunctionPool::spawn_unanswered() const {
  // An instance gets its pid from kSpawned; one retired before it no longer counts.
  return std::any_of(instances_.begin(), instances_.end(), [](const auto& i) { return i->pid() == 0; });
}

void FunctionPool::prepare_standbys() {
  if (stopping_ || !template_ || template_state_ != TemplateState::kReady || spawn_unanswered()) return;
  while (standby_tokens_.size() < kStandbys) {
    control::Message prepare;
    prepare.type = control::Type::kPrepare;
    prepare.token = ++next_token_;
    if (services_.cgroups != nullptr) {
      Result<std::vector<unique_fd>> procs = acquire_instance_cgroup(prepare.token);
      if (!procs) return;  // a spawn will try (and report) itself
      prepare.fds = std::move(*procs);
    }
    uint32_t token = prepare.token;
    if (Status s = template_->send(std::move(prepare)); !s) {
      if (services_.cgroups != nullptr) release_cgroup(token);
      return;
    }
    standby_tokens_.push_back(token);
  }
}

void FunctionPool::drain_queue() {
  while (!queue_.empty() && template_state_ == TemplateState::kReady && !stopping_) {
    Instance* target = instance_with_room();
    if (target == nullptr || (!target->in_flight().empty() && kind_ == config::Kind::kHandler)) {
      if (counted_instances() < config_.max_instances) {
        if (auto spawned = spawn_instance()) target = spawned.get();
      }
    }
    if (target == nullptr) return;
    auto invocation = queue_.front();
    queue_.pop_front();
    dispatch(*target, invocation);
  }
}

void FunctionPool::keep_minimum() {
  if (stopping_ || template_state_ != TemplateState::kReady) return;
  while (instances_.size() < config_.min_instances) {
    if (!spawn_instance()) return;
  }
}

void FunctionPool::on_frame(Instance& instance, const frame::Frame& f) {
  if (f.stream == 0) {
    on_instance_frame(instance, f);
    return;
  }
  auto& in_flight = instance.in_flight();
  auto it = std::find_if(in_flight.begin(), in_flight.end(), [&](const auto& i) { return i->id == f.stream; });
  if (it == in_flight.end()) {
    protocol_error(instance, "answered an unknown request");
    return;
  }
  std::shared_ptr<Invocation> invocation = *it;
  if (!in_order(*invocation, f.type)) {
    // Only a function writing raw frames to its socket gets here; its
    // clients must not wait on a stream that can no longer end properly.
    protocol_error(instance, fmt::format("sent a frame of type {} out of order", static_cast<int>(f.type)));
    return;
  }
  bool end = f.end();
  switch (f.type) {
    case frame::Type::kResponseHead: {
      frame::ResponseHead head;
      std::string_view body;
      invocation->state = Invocation::State::kResponding;  // its body frames may follow, even if refused
      std::string problem = frame::decode_response_head(f.payload, head, body)
                                ? response_head_problem(head, invocation->websocket)
                                : "a truncated frame";
      if (!problem.empty()) {
        log::info("function {} pid={} sent an invalid response head for {} {}: {}", config_.name, instance.pid(),
                  invocation->head.method, invocation->head.target, problem);
        fail(*invocation, 502, "invalid response from function " + config_.name);
        if (!end) send_cancel(invocation, frame::kCancelTimeout);  // the app must not go on streaming
        break;
      }
      if (invocation->sink) {
        if (!end) {
          stream_deadlines_.push(invocation, Clock::now());
          arm_deadline_timer();
        }
        invocation->sink->on_response_head(head, body, end);
        hold_back_if_unsent(instance, *invocation, end);
      }
      break;
    }
    case frame::Type::kResponseBody:
      if (invocation->sink) {
        if (!end) {
          stream_deadlines_.push(invocation, Clock::now());
          arm_deadline_timer();
        }
        if (invocation->websocket) {
          invocation->sink->on_websocket_message(f.payload, (f.flags & frame::kFlagText) != 0,
                                                 (f.flags & frame::kFlagMore) != 0);
        } else {
          invocation->sink->on_response_body(f.payload, end);
          hold_back_if_unsent(instance, *invocation, end);
        }
      }
      break;
    case frame::Type::kWsClose: {
      end = true;
      uint16_t code = 1000;
      std::string reason;
      if (!frame::decode_ws_close(f.payload, code, reason)) code = 1000;
      if (invocation->sink) invocation->sink->on_websocket_close(code, reason);
      break;
    }
    case frame::Type::kReset:
      end = true;
      if (invocation->input_closed && invocation->sink) {
        std::shared_ptr<ResponseSink> sink = invocation->sink;
        detach(*invocation);
        sink->on_ended_for_closed_client();
      } else {
        fail(*invocation, 502, "function " + config_.name + " aborted the response");
      }
      break;
    case frame::Type::kContinue:
      end = false;
      if (invocation->sink) invocation->sink->on_body_wanted();
      break;
    case frame::Type::kDrained: {
      end = false;
      uint64_t bytes = 0;
      if (invocation->sink && frame::decode_drained(f.payload, bytes)) invocation->sink->on_messages_taken(bytes);
      break;
    }
    case frame::Type::kCancelTaken:
      // The event loop is alive: the app's cancellation (its cleanup) may
      // take what it takes; the client already has its answer.
      end = false;
      if (invocation->deadline_queue == &cancel_deadlines_) {
        cleanup_deadlines_.push(invocation, Clock::now());
        arm_deadline_timer();
        drain_queue();  // its slot is free for new requests (load())
      }
      break;
    default:  // in_order() refused every other type
      break;
  }
  if (end) end_stream(instance, invocation);
}

bool FunctionPool::in_order(const Invocation& invocation, frame::Type type) {
  bool responding = invocation.state == Invocation::State::kResponding;
  switch (type) {
    case frame::Type::kResponseHead: return !responding;  // one head per stream
    case frame::Type::kResponseBody: return responding;   // after it
    case frame::Type::kWsClose: return responding && invocation.websocket;  // an accepted WebSocket's end
    case frame::Type::kReset: return true;
    case frame::Type::kContinue: return true;  // the front knows whether it still means anything
    case frame::Type::kDrained: return true;  // the app took client input (WebSocket messages, request body)
    case frame::Type::kCancelTaken: return invocation.cancel_sent || invocation.disconnect_sent;
    default: return false;  // not a frame an instance sends on a stream
  }
}

// Frames about the instance itself (stream 0).
void FunctionPool::on_instance_frame(Instance& instance, const frame::Frame& f) {
  if (f.type == frame::Type::kReady) {
    if (trial_ == &instance) finish_start(Status::ok());
    return;
  }
  if (f.type == frame::Type::kPageHints) {
    // Advice for the template's next standbys (python/page_hints.h), passed
    // on for the first kMaxPageHintReports reports of a template (they refine
    // each other). A standby only ever faults its own pages in with it,
    // whatever the addresses say.
    if (page_hint_reports_ < kMaxPageHintReports && template_ && f.payload.size() % 8 == 0 &&
        f.payload.size() <= 8 * frame::kMaxPageHints) {
      ++page_hint_reports_;
      log::info("template {}: an instance's first request faulted {} more pages in (copied or mapped); its "
                "standbys fault them ahead from now on",
                config_.name, f.payload.size() / 8);
      control::Message hints;
      hints.type = control::Type::kPageHints;
      hints.message = std::string(f.payload);
      if (Status s = template_->send(std::move(hints)); !s) {
        log::info("cannot pass page hints to template {}: {}", config_.name, s.message());
      }
    }
    return;
  }
  if (f.type == frame::Type::kRecycle) {
    if (kind_ == config::Kind::kAsgi) {
      recycle(instance, f.payload.empty() ? "it asked to be" : std::string(f.payload));
    }
    return;
  }
  if (f.type == frame::Type::kFailed) {
    std::string why(f.payload);
    if (trial_ == &instance) {
      finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: lifespan startup failed: " + why));
    }
    exit_reasons_[instance.pid()] = "startup failed";
    retire(instance, 503, "function " + config_.name + " failed to start");
    return;
  }
  protocol_error(instance, "sent an unexpected frame");
}

void FunctionPool::protocol_error(Instance& instance, std::string_view what) {
  log::info("instance {} pid={} {}; killing it", config_.name, instance.pid(), what);
  kill(instance, "protocol error");
  retire(instance, 502, "instance of " + config_.name + " failed");
}

void FunctionPool::end_stream(Instance& instance, const std::shared_ptr<Invocation>& invocation) {
  detach(*invocation);
  DeadlineQueue::remove(*invocation);
  invocation->state = Invocation::State::kDone;
  invocation->instance = nullptr;
  auto& in_flight = instance.in_flight();
  in_flight.erase(std::find(in_flight.begin(), in_flight.end(), invocation));
  if (in_flight.empty()) instance.mark_idle(Clock::now());
  if (instance.recycled() && retire_if_recycled(instance)) return;
  drain_queue();
}

void FunctionPool::recycle(Instance& instance, std::string why) {
  if (instance.recycled()) return;
  log::info("instance {} pid={} is replaced: {}; it takes no new requests", config_.name, instance.pid(), why);
  instance.recycle(std::move(why));
  retire_if_recycled(instance);
}

bool FunctionPool::retire_if_recycled(Instance& instance) {
  // What is still in flight only matters while a client waits for it:
  // requests cancelled already are left to end with the instance.
  bool waited_for = std::any_of(instance.in_flight().begin(), instance.in_flight().end(),
                                [](const auto& invocation) { return !invocation->cancel_sent; });
  if (waited_for) return false;
  exit_reasons_[instance.pid()] = "replaced: " + instance.recycle_reason();
  retire(instance, 502, "instance of " + config_.name + " was replaced");
  return true;
}

void FunctionPool::on_instance_lost(Instance& instance) {
  // The kernel counts an OOM kill before the process dies, so by the time
  // its socket closes the count tells whether the memory limit killed it.
  if (out_of_memory(instance.token())) {
    log::info("instance {} pid={} was killed by its memory limit (memory_mb = {})", config_.name, instance.pid(),
              config_.memory_mb);
    retire(instance, 500, memory_limit_message());
    return;
  }
  retire(instance, 502, "instance of " + config_.name + " died during the request");
}

void FunctionPool::kill(Instance& instance, const std::string& reason) {
  exit_reasons_[instance.pid()] = "killed: " + reason;
  instance.kill();
}

void FunctionPool::retire(Instance& instance, uint16_t status, const std::string& message) {
  auto self = std::find_if(instances_.begin(), instances_.end(), [&](const auto& i) { return i.get() == &instance; });
  if (self == instances_.end()) return;
  std::shared_ptr<Instance> keep = *self;  // the instance outlives this call
  instances_.erase(self);
  instance.close_when_written();
  // Never reported (its fork failed, or is still to come): no exit will
  // release its cgroup. If it does start after all, it starts retired and
  // its group's release has killed it.
  if (instance.pid() == 0 && services_.cgroups != nullptr) release_cgroup(instance.token());
  if (trial_ == &instance) {
    finish_start(Status::error(config_.entrypoint_origin + ": entrypoint: the first instance exited during startup" +
                               " (see its output above)"));
  }

  auto in_flight = std::move(instance.in_flight());
  instance.in_flight().clear();
  bool handler = kind_ == config::Kind::kHandler;
  if (kind_ == config::Kind::kAsgi) log_requests_lost(instance, in_flight);
  // Walk backwards so that requeued requests keep their order at the queue's front.
  for (auto it = in_flight.rbegin(); it != in_flight.rend(); ++it) {
    const std::shared_ptr<Invocation>& invocation = *it;
    invocation->instance = nullptr;
    bool executing = !handler || it == std::prev(in_flight.rend());
    if (executing || !invocation->sink) {
      fail(*invocation, status, message);
      DeadlineQueue::remove(*invocation);
      invocation->state = Invocation::State::kDone;
      continue;
    }
    invocation->state = Invocation::State::kQueued;
    invocation->cancel_sent = false;
    invocation->disconnect_sent = false;
    queue_.push_front(invocation);
  }
  if (stopping_) return;
  keep_minimum();
  drain_queue();
  prepare_standbys();
}

void FunctionPool::log_requests_lost(const Instance& instance,
                                     const std::deque<std::shared_ptr<Invocation>>& in_flight) const {
  // Which request brought an instance down, the log cannot say; it can say
  // which ones, with a client waiting, went down with it (the cause is
  // among them, unless it had been answered already).
  size_t waiting = std::count_if(in_flight.begin(), in_flight.end(), [](const auto& i) { return i->sink != nullptr; });
  if (waiting < 2) return;
  std::string named;
  size_t count = 0;
  for (const auto& invocation : in_flight) {
    if (!invocation->sink) continue;
    if (count++ == kRequestsNamed) {
      named += fmt::format(" and {} more", waiting - kRequestsNamed);
      break;
    }
    named += fmt::format("{}{} {}", count == 1 ? "" : ", ", invocation->head.method, invocation->head.target);
  }
  log::info("instance {} pid={} had {} requests in flight, which fail with it: {}", config_.name, instance.pid(),
            waiting, named);
}

void FunctionPool::send_cancel(const std::shared_ptr<Invocation>& invocation, std::string_view reason) {
  Instance* instance = invocation->instance;
  if (instance == nullptr || invocation->cancel_sent) return;
  invocation->cancel_sent = true;
  std::string cancel;
  frame::append(cancel, frame::Type::kCancel, frame::kFlagEnd, invocation->id, reason);
  instance->send(cancel);
  if (kind_ == config::Kind::kAsgi) {
    cancel_deadlines_.push(invocation, Clock::now());
    arm_deadline_timer();
    if (instance->recycled()) retire_if_recycled(*instance);
  }
}

void FunctionPool::response_drained(const std::shared_ptr<Invocation>& invocation, uint64_t bytes,
                                    size_t unsent) {
  Instance* instance = invocation->instance;
  if (instance == nullptr || !invocation->sink) return;
  if (invocation->deadline_queue == &stream_deadlines_) {
    // The client is taking the response: the stream is not idle, even if
    // its function is held back by flow control.
    stream_deadlines_.push(invocation, Clock::now());
  }
  if (kind_ == config::Kind::kAsgi) {
    if (invocation->cancel_sent || invocation->disconnect_sent) return;
    std::string frames;
    frame::append_drained(frames, invocation->id, bytes);
    instance->send(frames);
  } else if (instance->reading_paused() && unsent <= kResumeBelow) {
    instance->resume_reading();
  }
}

void FunctionPool::hold_back_if_unsent(Instance& instance, const Invocation& invocation, bool end) {
  if (kind_ == config::Kind::kHandler && !end && invocation.sink && invocation.sink->unsent_bytes() > kPauseAbove) {
    instance.pause_reading();
  }
}

void FunctionPool::send_disconnect(const std::shared_ptr<Invocation>& invocation) {
  Instance* instance = invocation->instance;
  if (instance == nullptr || invocation->cancel_sent || invocation->disconnect_sent) return;
  invocation->disconnect_sent = true;
  std::string frames;
  frame::append(frames, frame::Type::kCancel, frame::kFlagEnd, invocation->id, frame::kCancelDisconnect);
  instance->send(frames);
}

void FunctionPool::fail(Invocation& invocation, uint16_t status, const std::string& message) {
  if (invocation.sink) invocation.sink->on_failure(status, message + "\n");
  detach(invocation);
}

void FunctionPool::detach(Invocation& invocation) {
  if (invocation.deadline_queue == &response_deadlines_ || invocation.deadline_queue == &stream_deadlines_) {
    DeadlineQueue::remove(invocation);
  }
  invocation.sink.reset();
  // A handler instance held back for this response's client goes on (what
  // it still sends is dropped).
  if (kind_ == config::Kind::kHandler && invocation.instance != nullptr && invocation.instance->reading_paused()) {
    invocation.instance->resume_reading();
  }
}

void FunctionPool::abandon(const std::shared_ptr<Invocation>& invocation) {
  switch (invocation->state) {
    case Invocation::State::kQueued:
      remove_from_queue(*invocation);
      detach(*invocation);
      invocation->state = Invocation::State::kDone;
      break;
    case Invocation::State::kDispatched:
    case Invocation::State::kResponding: {
      Instance* instance = invocation->instance;
      if (kind_ == config::Kind::kAsgi && instance != nullptr && !invocation->websocket) {
        // The app learns that its client left (http.disconnect) and runs
        // on to its end, as under uvicorn. Its deadlines stay: they bound
        // what it does with no one waiting, and cancel it past them. (A
        // WebSocket stream is cancelled, below: its app's send() raises and
        // it has a few seconds to end; see python/coil/_asgi.py.)
        invocation->sink.reset();
        send_disconnect(invocation);
        break;
      }
      detach(*invocation);
      // A handler cannot be interrupted: let the one executing finish.
      bool executing_handler = kind_ == config::Kind::kHandler && instance != nullptr &&
                               instance->in_flight().front() == invocation;
      if (!executing_handler) send_cancel(invocation, frame::kCancelDisconnect);
      break;
    }
    case Invocation::State::kDone:
      break;
  }
}

void FunctionPool::input_closed(const std::shared_ptr<Invocation>& invocation) {
  if (kind_ != config::Kind::kAsgi || invocation->websocket || invocation->input_closed) return;
  invocation->input_closed = true;
  bool on_an_instance =
      invocation->state == Invocation::State::kDispatched || invocation->state == Invocation::State::kResponding;
  if (!on_an_instance || invocation->instance == nullptr || invocation->cancel_sent) return;
  std::string frames;
  frame::append(frames, frame::Type::kInputClosed, frame::kFlagEnd, invocation->id, "");
  invocation->instance->send(frames);
}

void FunctionPool::remove_from_queue(const Invocation& invocation) {
  auto it = std::find_if(queue_.begin(), queue_.end(), [&](const auto& i) { return i.get() == &invocation; });
  if (it != queue_.end()) queue_.erase(it);
}

void FunctionPool::arm_deadline_timer() {
  Clock::time_point next = Clock::time_point::max();
  for (const DeadlineQueue* queue :
       {&response_deadlines_, &stream_deadlines_, &cancel_deadlines_, &cleanup_deadlines_}) {
    if (!queue->empty()) next = std::min(next, queue->front()->deadline);
  }
  if (next == Clock::time_point::max()) return;
  if (timer_armed_ && timer_at_ <= next) return;
  timer_armed_ = true;
  timer_at_ = next;
  deadline_timer_.expires_at(next);
  deadline_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec == boost::asio::error::operation_aborted) return;
    timer_armed_ = false;
    on_deadline();
  });
}

void FunctionPool::on_deadline() {
  Clock::time_point now = Clock::now();
  // Copies, not references: expiring removes the entry from its queue.
  while (!response_deadlines_.empty() && response_deadlines_.front()->deadline <= now) {
    std::shared_ptr<Invocation> invocation = response_deadlines_.front();
    expire_response(invocation);
  }
  while (!stream_deadlines_.empty() && stream_deadlines_.front()->deadline <= now) {
    std::shared_ptr<Invocation> invocation = stream_deadlines_.front();
    expire_stream(invocation);
  }
  while (!cancel_deadlines_.empty() && cancel_deadlines_.front()->deadline <= now) {
    std::shared_ptr<Invocation> invocation = cancel_deadlines_.front();
    DeadlineQueue::remove(*invocation);
    if (Instance* instance = invocation->instance) {
      log::info("instance {} pid={} did not take the cancel of a request within {} ms: its event loop is blocked; "
                "killing it", config_.name, instance->pid(), kCancelGrace.count());
      kill(*instance, "event loop blocked");
      retire(*instance, 502, "instance of " + config_.name + " was killed: its event loop was blocked");
    }
  }
  while (!cleanup_deadlines_.empty() && cleanup_deadlines_.front()->deadline <= now) {
    std::shared_ptr<Invocation> invocation = cleanup_deadlines_.front();
    DeadlineQueue::remove(*invocation);
    if (Instance* instance = invocation->instance) {
      recycle(*instance, fmt::format("a cancelled request ({} {}) did not end within {} s of its cancel",
                                     invocation->head.method, invocation->head.target, kCleanupGrace.count()));
    }
  }
  arm_deadline_timer();
}

void FunctionPool::expire_response(const std::shared_ptr<Invocation>& invocation) {
  std::string message = "timeout after " + std::to_string(config_.timeout_ms) + " ms";
  Instance* instance = invocation->instance;
  if (invocation->state == Invocation::State::kQueued || instance == nullptr) {
    remove_from_queue(*invocation);
    fail(*invocation, 504, message);
    invocation->state = Invocation::State::kDone;
    return;
  }
  if (kind_ == config::Kind::kHandler && instance->in_flight().front() == invocation) {
    // Executing: the only way to stop a handler is to end its process.
    log::info("function {} pid={} exceeded timeout_ms={}; killing the instance", config_.name, instance->pid(),
              config_.timeout_ms);
    kill(*instance, "timeout");
    retire(*instance, 504, message);
    return;
  }
  // Waiting behind another request (handler) or executing on an event loop
  // (ASGI): answer now, and cancel it on the instance.
  if (!invocation->sink) {
    log::info("function {}: a request whose client left ran past timeout_ms={}; cancelling it", config_.name,
              config_.timeout_ms);
  }
  fail(*invocation, 504, message);
  send_cancel(invocation, frame::kCancelTimeout);
}

void FunctionPool::expire_stream(const std::shared_ptr<Invocation>& invocation) {
  Instance* instance = invocation->instance;
  if (invocation->sink && invocation->sink->unsent_bytes() > 0) {
    // Flow control held the function back: the client is the one idle.
    log::info("function {}: the client took none of the response for stream_idle_timeout_ms={}; aborting it",
              config_.name, config_.stream_idle_timeout_ms);
  } else if (invocation->websocket) {
    log::info("function {}: no WebSocket message either way for stream_idle_timeout_ms={}; closing it",
              config_.name, config_.stream_idle_timeout_ms);
  } else {
    log::info("function {}: no response data for stream_idle_timeout_ms={}; aborting the response", config_.name,
              config_.stream_idle_timeout_ms);
  }
  fail(*invocation, 504, "stream idle for " + std::to_string(config_.stream_idle_timeout_ms) + " ms");
  if (instance == nullptr) return;
  if (kind_ == config::Kind::kHandler) {
    kill(*instance, "stream idle");
    retire(*instance, 502, "instance of " + config_.name + " was killed");
  } else {
    send_cancel(invocation, frame::kCancelTimeout);
  }
}

void FunctionPool::tick(Clock::time_point now) {
  if (stopping_) return;
  auto idle_limit = std::chrono::milliseconds(config_.idle_timeout_ms);
  for (size_t i = 0; i < instances_.size() && instances_.size() > config_.min_instances;) {
    Instance& instance = *instances_[i];
    if (instance.in_flight().empty() && instance.pid() > 0 && &instance != trial_ &&
        now - instance.idle_since() >= idle_limit) {
      exit_reasons_[instance.pid()] = "idle";
      retire(instance, 502, "");
      continue;  // retire() removed it from instances_
    }
    ++i;
  }
  keep_minimum();
}

void FunctionPool::close_all_instances(bool kill_busy_handlers) {
  stopping_ = true;
  trial_ = nullptr;  // its instance goes with the others
  trial_timer_.cancel();
  while (!queue_.empty()) {
    auto invocation = queue_.front();
    queue_.pop_front();
    fail(*invocation, 503, "coil is shutting down");
  }
  for (auto& instance : std::vector(instances_)) {
    for (auto& invocation : instance->in_flight()) {
      fail(*invocation, 503, "coil is shutting down");
      DeadlineQueue::remove(*invocation);
    }
    // A handler still executing cannot be interrupted any other way, and
    // has no shutdown of its own to run.
    if (kill_busy_handlers && kind_ == config::Kind::kHandler && !instance->in_flight().empty()) instance->kill();
    instance->in_flight().clear();
    exit_reasons_[instance->pid()] = "shutdown";
    instance->close();
  }
  instances_.clear();
}

void FunctionPool::stop_instances(std::function<void()> done) {
  close_all_instances(true);
  // The template ends its standbys (an ASGI one runs its lifespan shutdown)
  // and exits once its last instance has: its exit is the signal.
  control::Message retire;
  retire.type = control::Type::kRetire;
  if (!template_ || template_state_ != TemplateState::kReady || !template_->send(std::move(retire))) {
    done();
    return;
  }
  on_instances_stopped_ = std::move(done);
}

void FunctionPool::stop() {
  if (outbound_) outbound_->stop();
  trial_timer_.cancel();
  deadline_timer_.cancel();
  cgroup_reservation_ = {};  // a stopped pool needs no ready groups
  on_instances_stopped_ = nullptr;
  if (stopping_ && !template_) return;  // stop_instances() saw its template exit
  close_all_instances(false);
  // Those still running now (background work, a lifespan shutdown that did
  // not end) go with their template.
  for (pid_t pid : live_pids_) {
    log::info("instance {} pid={} is still running as its function stops; it is killed", config_.name, pid);
  }
  if (template_) template_->close();
  template_.reset();
}

}  // namespace coil::runtime
