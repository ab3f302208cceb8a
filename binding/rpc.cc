// llama.cpp's RPC backend: registering remote servers as devices (off the JS thread, after a
// handshake of our own that cannot abort), serving this machine's devices, and the checks that
// keep ggml-rpc's aborts away from servers that are gone (see rpc.h).
#include "rpc.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ggml-rpc.h"
#include "worker.h"

#ifndef _WIN32
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace llamem {

namespace {

// What ggml-rpc registered, and each endpoint's addresses (resolved once: a check runs before
// every decode and must not ask DNS each time).
std::mutex g_mu;
std::set<std::string> g_registered;
#ifndef _WIN32
std::map<std::string, std::vector<sockaddr_in>> g_addresses;
#endif
// Registrations one at a time (ggml's registry is not built for concurrent adds).
std::mutex g_add_mu;

bool SplitEndpoint(const std::string& endpoint, std::string& host, int& port) {
  // As ggml-rpc parses it: the host up to the first ':'.
  const size_t colon = endpoint.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = endpoint.substr(0, colon);
  const std::string p = endpoint.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  port = std::stoi(p);
  return port >= 1 && port <= 65535;
}

#ifndef _WIN32

// IPv4 addresses of `endpoint` (ggml-rpc connects over IPv4 with gethostbyname); empty with
// `why` set when the host does not resolve.
std::vector<sockaddr_in> Resolve(const std::string& endpoint, std::string* why) {
  std::string host;
  int port = 0;
  std::vector<sockaddr_in> out;
  if (!SplitEndpoint(endpoint, host, port)) {
    if (why) *why = "not host:port";
    return out;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    if (why) *why = std::string("cannot resolve ") + host + ": " + gai_strerror(rc);
    return out;
  }
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    sockaddr_in sin;
    std::memcpy(&sin, a->ai_addr, sizeof(sin));
    sin.sin_port = htons(static_cast<uint16_t>(port));
    out.push_back(sin);
  }
  freeaddrinfo(res);
  return out;
}

std::vector<sockaddr_in> AddressesOf(const std::string& endpoint) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_addresses.find(endpoint);
    if (it != g_addresses.end()) return it->second;
  }
  std::vector<sockaddr_in> addrs = Resolve(endpoint, nullptr);
  if (!addrs.empty()) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_addresses[endpoint] = addrs;
  }
  return addrs;
}

// The descriptors this process has open.
std::vector<int> OpenFds() {
  std::vector<int> fds;
#ifdef __linux__
  const char* dir = "/proc/self/fd";
#else
  const char* dir = "/dev/fd";
#endif
  if (DIR* d = opendir(dir)) {
    const int own = dirfd(d);
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      const int fd = std::atoi(e->d_name);
      if (fd != own) fds.push_back(fd);
    }
    closedir(d);
    return fds;
  }
  for (int fd = 0; fd < 4096; fd++) fds.push_back(fd);
  return fds;
}

enum class Connection { kNone, kOpen, kClosed };

// This process's TCP connections to any of `addrs`: ggml-rpc holds one per endpoint while
// buffers live on its devices. The server never speaks first, so a connection that reads as
// ended (0) or fails (a reset) is one whose server is gone; "would block" or pending bytes (a
// reply in flight for another thread) are a live one.
Connection ExistingConnection(const std::vector<sockaddr_in>& addrs) {
  Connection state = Connection::kNone;
  for (int fd : OpenFds()) {
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
    sockaddr_storage peer{};
    len = sizeof(peer);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0 || peer.ss_family != AF_INET) continue;
    const auto* p = reinterpret_cast<const sockaddr_in*>(&peer);
    bool match = false;
    for (const sockaddr_in& a : addrs) {
      if (a.sin_addr.s_addr == p->sin_addr.s_addr && a.sin_port == p->sin_port) match = true;
    }
    if (!match) continue;
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return Connection::kClosed;
    state = Connection::kOpen;
  }
  return state;
}

// A TCP connection to `addr`, or -1 (errno set) when none opens within `timeout_ms`.
int ConnectWithin(const sockaddr_in& addr, int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd pfd{fd, POLLOUT, 0};
    rc = poll(&pfd, 1, timeout_ms);
    if (rc == 0) {
      errno = ETIMEDOUT;
      rc = -1;
    } else if (rc > 0) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      if (err != 0) errno = err;
    }
  }
  if (rc != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  fcntl(fd, F_SETFL, flags);
  return fd;
}

// Sends or receives exactly `n` bytes before `deadline_ms` (a poll timeout each time).
bool Exchange(int fd, void* buf, size_t n, bool send_it, int timeout_ms) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    pollfd pfd{fd, static_cast<short>(send_it ? POLLOUT : POLLIN), 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t k = send_it ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// ggml-rpc's HELLO, by hand and with time limits: ggml's own aborts the process when the peer
// is not an RPC server (or another version), and waits forever on one that does not answer.
// The request is command 14 (static_assert'ed in ggml-rpc.cpp never to change), its 8-byte
// size, and RPC_CONN_CAPS_SIZE (24) zero bytes of capabilities: plain TCP. "" when it answered.
std::string Hello(const std::vector<sockaddr_in>& addrs, int timeout_ms) {
  const int fd = ConnectWithin(addrs.front(), timeout_ms);
  if (fd < 0) return std::string("cannot connect: ") + std::strerror(errno);
  uint8_t request[1 + 8 + 24] = {};
  request[0] = 14;
  const uint64_t size = 24;
  std::memcpy(request + 1, &size, sizeof(size));
  std::string why;
  uint64_t reply_size = 0;
  uint8_t reply[28] = {};
  if (!Exchange(fd, request, sizeof(request), true, timeout_ms)) {
    why = "the connection failed during the handshake";
  } else if (!Exchange(fd, &reply_size, sizeof(reply_size), false, timeout_ms)) {
    why = "no answer to the RPC handshake within " + std::to_string(timeout_ms) + " ms (not an RPC server, or one busy with another client)";
  } else if (reply_size != sizeof(reply) || !Exchange(fd, reply, sizeof(reply), false, timeout_ms)) {
    why = "the answer is not an RPC handshake (not a llama.cpp RPC server?)";
  } else if (reply[0] != RPC_PROTO_MAJOR_VERSION || reply[1] > RPC_PROTO_MINOR_VERSION) {
    why = "the server speaks RPC protocol " + std::to_string(reply[0]) + "." + std::to_string(reply[1]) + ", this build " +
          std::to_string(RPC_PROTO_MAJOR_VERSION) + "." + std::to_string(RPC_PROTO_MINOR_VERSION);
  }
  close(fd);
  return why;
}

#endif  // _WIN32

}  // namespace

std::vector<std::string> RegisteredRpcServers() {
  std::lock_guard<std::mutex> lock(g_mu);
  return {g_registered.begin(), g_registered.end()};
}

std::string RpcEndpointOf(ggml_backend_dev_t dev) {
  if (dev == nullptr || ggml_backend_dev_backend_reg(dev) != ggml_backend_rpc_reg()) return "";
  // ggml-rpc describes each of its devices by its server's endpoint.
  const char* d = ggml_backend_dev_description(dev);
  return d != nullptr ? d : "";
}

bool RpcServerAlive(const std::string& endpoint, int timeout_ms) {
#ifdef _WIN32
  (void)endpoint;
  (void)timeout_ms;
  return true;  // no check on Windows
#else
  const std::vector<sockaddr_in> addrs = AddressesOf(endpoint);
  if (addrs.empty()) return false;
  switch (ExistingConnection(addrs)) {
    case Connection::kOpen: return true;
    case Connection::kClosed: return false;
    case Connection::kNone: break;
  }
  // No connection: ggml would open one (to the first address, as gethostbyname gives it).
  const int fd = ConnectWithin(addrs.front(), timeout_ms);
  if (fd < 0) return false;
  close(fd);
  return true;
#endif
}

std::string FirstDeadRpcServer(const std::vector<std::string>& endpoints, int timeout_ms) {
  for (const std::string& e : endpoints) {
    if (!RpcServerAlive(e, timeout_ms)) return e;
  }
  return "";
}

void CheckRpcServers(const std::vector<std::string>& endpoints, const std::string& what) {
  if (endpoints.empty()) return;
  const std::string dead = FirstDeadRpcServer(endpoints, kRpcCheckTimeoutMs);
  if (!dead.empty()) {
    Throw("ERR_IO", "the RPC server " + dead + " is gone (its connection is closed or it cannot be reached); " + what +
                        " would need it. Restart the server and load the model again");
  }
}

namespace {

class AddServerWorker : public PromiseWorker {
 public:
  AddServerWorker(Napi::Env env, std::string endpoint) : PromiseWorker(env), endpoint_(std::move(endpoint)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> add(g_add_mu);
    bool known;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      known = g_registered.count(endpoint_) != 0;
    }
    if (known) {
      // Registered before: its devices stay registered; it must still be there to be used.
      CheckRpcServers({endpoint_}, "adding it again");
      return;
    }
#ifndef _WIN32
    std::string why;
    std::vector<sockaddr_in> addrs = Resolve(endpoint_, &why);
    if (addrs.empty()) Throw("ERR_IO", "cannot reach the RPC server " + endpoint_ + ": " + why);
    why = Hello(addrs, kRpcCheckTimeoutMs);
    if (!why.empty()) Throw("ERR_IO", "cannot use the RPC server " + endpoint_ + ": " + why);
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_addresses[endpoint_] = addrs;
    }
#endif
    TakeLastNativeError();
    ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint_.c_str());
    if (reg == nullptr) {
      std::string why = TakeLastNativeError();
      Throw("ERR_IO", "the RPC server " + endpoint_ + " reports no device" + (why.empty() ? "" : ": " + why));
    }
    // Registered devices are what llama.cpp offloads to when a model loads.
    ggml_backend_register(reg);
    std::lock_guard<std::mutex> lock(g_mu);
    g_registered.insert(endpoint_);
  }

 private:
  std::string endpoint_;
};

// The devices a server exports: GPUs when there are any, else the CPU; never remote devices.
std::vector<ggml_backend_dev_t> ServedDevices() {
  std::vector<ggml_backend_dev_t> cpus, gpus;
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    if (ggml_backend_dev_backend_reg(d) == ggml_backend_rpc_reg()) continue;
    (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_CPU ? cpus : gpus).push_back(d);
  }
  if (!gpus.empty()) return gpus;
  if (!cpus.empty()) cpus.resize(1);
  return cpus;
}

// Settles serveRpc's promise on the JS thread when the server thread ends (it never does
// unless the server could not start: a port in use, an address not of this machine).
struct ServeEnd {
  Napi::Promise::Deferred deferred;
  std::string endpoint;
};

void OnServeEnded(Napi::Env env, Napi::Function, ServeEnd* end, std::nullptr_t*) {
  if (env != nullptr) {
    end->deferred.Reject(MakeError(env, "ERR_IO", "the RPC server on " + end->endpoint +
                                                      " stopped or could not start (is the port in use, or the address not this machine's?)")
                             .Value());
  }
  delete end;
}

using ServeTsfn = Napi::TypedThreadSafeFunction<ServeEnd, std::nullptr_t, OnServeEnded>;

}  // namespace

// rpcAddServer("host:port") -> Promise<void>: registers a remote server's devices so models can
// offload to them. Off the JS thread: it connects, and the handshake can take seconds.
Napi::Value RpcAddServer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "rpcAddServer(endpoint)");
  std::string endpoint = args.String(0, "endpoint");
  std::string host;
  int port = 0;
  if (!SplitEndpoint(endpoint, host, port)) args.Fail("endpoint", "must be host:port with a port in [1, 65535]");
  return (new AddServerWorker(env, std::move(endpoint)))->Start();
}

// rpcServers() -> string[]: the endpoints registered in this process.
Napi::Value RpcServers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> all = RegisteredRpcServers();
  Napi::Array out = Napi::Array::New(env, all.size());
  for (uint32_t i = 0; i < all.size(); i++) out.Set(i, all[i]);
  return out;
}

// rpcServe("host:port", threads) -> Promise<never>: serves on a thread of its own (never a libuv
// pool thread, which it would hold forever) until the process exits. The promise rejects with
// ERR_IO if the server stops, which happens only when it cannot listen.
Napi::Value RpcServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "rpcServe(endpoint, threads)");
  std::string endpoint = args.String(0, "endpoint");
  std::string host;
  int port = 0;
  if (!SplitEndpoint(endpoint, host, port)) args.Fail("endpoint", "must be host:port with a port in [1, 65535]");
  const size_t threads = static_cast<size_t>(args.Int(1, "threads", 1, 1024));
  std::vector<ggml_backend_dev_t> devs = ServedDevices();
  if (devs.empty()) throw MakeError(env, "ERR_UNSUPPORTED", "no local device to serve");
  auto* end = new ServeEnd{Napi::Promise::Deferred::New(env), endpoint};
  Napi::Promise promise = end->deferred.Promise();
  ServeTsfn tsfn = ServeTsfn::New(env, "llamem-rpc-serve", 0, 1, end);
  // The caller decides what keeps the process alive; a server thread alone does not.
  tsfn.Unref(env);
  std::thread([endpoint, threads, devs, tsfn]() mutable {
    ggml_backend_rpc_start_server(endpoint.c_str(), nullptr, threads, devs.size(), devs.data());
    tsfn.BlockingCall(static_cast<std::nullptr_t*>(nullptr));
    tsfn.Release();
  }).detach();
  return promise;
}

}  // namespace llamem
