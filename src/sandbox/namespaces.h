// The namespace layers of the sandbox: user, mount, pid, net, ipc and uts.
//
// One function version gets one set of namespaces, entered by its template
// (created with clone(), so that the template is pid 1 of its pid namespace
// and the whole namespace, instances included, dies with it) and inherited by
// every instance forked from it.
//
// Users: inside the sandbox, uid/gid 0 exist only while coil sets the sandbox
// up; function code runs as kFunctionUid, with no capabilities. On the host
// these are kHostRootUid and kHostFunctionUid, ids no account uses, so that a
// process that escaped every namespace is still an unprivileged stranger.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace coil::sandbox {

inline constexpr uid_t kFunctionUid = 1000;
inline constexpr uid_t kHostRootUid = 990000;
inline constexpr uid_t kHostFunctionUid = 991000;

// The clone() flags of a sandbox; `user` adds CLONE_NEWUSER.
unsigned long namespace_clone_flags(bool user);

// The child as the parent addresses it: /proc/PID for its files, and a
// pidfd to check, after opening one, that PID was still the child then (a
// child that died may have had its pid reused).
struct ChildRef {
  pid_t pid = -1;
  int pidfd = -1;
};

// Opens /proc/PID/`relative` of `child`, and makes sure it is the child's.
Result<unique_fd> open_child_file(const ChildRef& child, const std::string& relative, int flags);

// Parent side, right after the clone: maps the child's uid/gid 0 and
// kFunctionUid to the host ids above (needs CAP_SETUID/CAP_SETGID, i.e. root).
Status write_id_maps(const ChildRef& child);

// Child side, in this order, before any function code runs:
// take uid/gid 0 of the new user namespace (its capabilities come with it),
Status become_namespace_root();
// name the host inside the uts namespace,
Status set_hostname(const std::string& name);
// and finally drop to the function user: no supplementary groups, every
// capability gone, and not "dumpable": instances run as the same uid as
// their template, and a dumpable template's memory (/proc/1/mem) would be
// theirs to write. Instances make themselves dumpable (enter_instance()), so
// that each can read its own /proc/self (fd, status). `in_user_namespace`
// false: the ids are the host ones (kHostFunctionUid), for a root host
// without user namespaces.
Status become_function_user(bool in_user_namespace);

// Parent side: enters the child's network namespace, brings up `lo` (its
// only interface), opens a listening TCP socket at 127.0.0.1:`port` there,
// and returns to `own_net_ns`. A socket belongs to the namespace it was
// created in for good: the host serves the function's outbound proxy on it
// from outside (services/outbound_proxy.h).
Result<unique_fd> listen_inside(const ChildRef& child, int own_net_ns, uint16_t port);

// In a new instance: dumpable again (see become_function_user()).
Status enter_instance();

// True when this kernel lets us create a user namespace (checked by the host
// to choose and report the layers).
bool user_namespaces_available();

}  // namespace coil::sandbox
