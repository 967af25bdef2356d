// Whether the client of a request still waits for its answer. cpp-httplib 0.11 (Debian's) gives a handler neither
// its socket nor a "connection closed" check, and a non-streamed answer writes nothing until the generation ends:
// so the handler finds its connection's socket among the process's open ones by the request's two ports, and
// polls it while it waits.
#pragma once

namespace ll::serve {

// The connected TCP socket whose local port is `local_port` and peer port `remote_port`; -1 when none is (the ports
// of one connection identify it among this process's sockets).
int find_connection_socket(int remote_port, int local_port);

// True once the peer has closed its side of the connection (or it failed); does not wait. A client that only
// half-closes (shutdown for writing) while it waits for the answer counts as gone: HTTP clients do not do that.
bool peer_closed(int fd);

}  // namespace ll::serve
