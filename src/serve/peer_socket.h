// Whether the client of a request still waits for its answer. cpp-httplib 0.11 (Debian's) gives a handler neither
// its socket nor a "connection closed" check, and a non-streamed answer writes nothing until the generation ends:
// so the handler finds its connection's socket among the process's open ones by the request's two endpoints
// (address and port of each side), and polls it while it waits.
#pragma once

#include <string>

namespace ll::serve {

// One side of a TCP connection as httplib's Request reports it: a numeric address ("127.0.0.1", "::1",
// "::ffff:127.0.0.1", "fe80::1%eth0") and a port.
struct Endpoint {
  std::string addr;
  int port = -1;
};

// The connected TCP socket of this process whose local side is `local` and peer side `remote`; -1 when none is,
// or when an address does not parse. Ports alone are not enough: clients on two hosts may use the same source port
// to the same listening port. An IPv4 address matches its v4-mapped IPv6 form either way round.
int find_connection_socket(const Endpoint& remote, const Endpoint& local);

// Whether `fd` is still the connected socket with these two sides (its number may have been closed and reused).
bool socket_has_endpoints(int fd, const Endpoint& remote, const Endpoint& local);

// True once the peer has closed its side of the connection (or it failed); does not wait. A client that only
// half-closes (shutdown for writing) while it waits for the answer counts as gone: HTTP clients do not do that.
bool peer_closed(int fd);

// Whether the client of the connection found as `fd` has gone: the peer closed, or `fd` no longer holds that
// connection (httplib keeps a connection's socket open while its handler runs, so the number is not reused under
// the handler; checking the endpoints makes that an assumption no longer needed).
bool connection_gone(int fd, const Endpoint& remote, const Endpoint& local);

}  // namespace ll::serve
