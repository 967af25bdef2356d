// build/serve finds a request's socket by its two endpoints (serve/peer_socket.h). Real loopback sockets: clients
// on two hosts (127.0.0.1 and 127.0.0.2, both loopback on Linux) may use the same source port to one listener, so
// the addresses must decide; a dual-stack listener reports IPv4 peers in v4-mapped form.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "serve/peer_socket.h"

namespace ll::serve {
namespace {

// An IPv4 socket address.
sockaddr_in v4(const char* addr, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  EXPECT_EQ(::inet_pton(AF_INET, addr, &a.sin_addr), 1);
  return a;
}

int local_port(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  return a.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in&>(a).sin_port)
                                : ntohs(reinterpret_cast<sockaddr_in6&>(a).sin6_port);
}

// Open sockets, closed at the end of the test.
struct Sockets {
  std::vector<int> fds;
  ~Sockets() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  int add(int fd) {
    EXPECT_GE(fd, 0);
    fds.push_back(fd);
    return fd;
  }
  void close(int fd) {
    for (int& f : fds)
      if (f == fd) f = -1;
    ::close(fd);
  }
};

int ipv4_listener(Sockets& s) {
  const int fd = s.add(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a = v4("127.0.0.1", 0);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::listen(fd, 8), 0);
  return fd;
}

// A client socket bound to `from` (port 0: any), connected to 127.0.0.1:port.
int connect_from(Sockets& s, const char* from, int from_port, int port) {
  const int fd = s.add(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in src = v4(from, from_port), dst = v4("127.0.0.1", port);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from << ":" << from_port;
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)), 0);
  return fd;
}

TEST(PeerSocket, TwoHostsWithOneSourcePortAreToldApartByAddress) {
  Sockets s;
  const int listener = ipv4_listener(s), port = local_port(listener);
  const int a = connect_from(s, "127.0.0.1", 0, port);
  const int client_port = local_port(a);
  const int b = connect_from(s, "127.0.0.2", client_port, port);  // the same source port from another host
  const int accepted_a = s.add(::accept(listener, nullptr, nullptr));
  const int accepted_b = s.add(::accept(listener, nullptr, nullptr));
  ASSERT_NE(accepted_a, accepted_b);
  (void)b;
  const Endpoint local{"127.0.0.1", port};
  EXPECT_EQ(find_connection_socket({"127.0.0.1", client_port}, local), accepted_a);
  EXPECT_EQ(find_connection_socket({"127.0.0.2", client_port}, local), accepted_b);
  // The v4-mapped form of an address names the same peer.
  EXPECT_EQ(find_connection_socket({"::ffff:127.0.0.2", client_port}, local), accepted_b);
  // The client's own socket is found from its side.
  EXPECT_EQ(find_connection_socket({"127.0.0.1", port}, {"127.0.0.2", client_port}), b);
  // Wrong address, wrong port, or an address that does not parse: none.
  EXPECT_EQ(find_connection_socket({"127.0.0.3", client_port}, local), -1);
  EXPECT_EQ(find_connection_socket({"127.0.0.1", client_port}, {"127.0.0.9", port}), -1);
  EXPECT_EQ(find_connection_socket({"127.0.0.1", client_port + 1 == port ? client_port + 2 : client_port + 1}, local),
            -1);
  EXPECT_EQ(find_connection_socket({"localhost", client_port}, local), -1);
  EXPECT_EQ(find_connection_socket({"", client_port}, local), -1);
  EXPECT_EQ(find_connection_socket({"127.0.0.1", -1}, local), -1);
}

TEST(PeerSocket, DualStackListenerReportsIpv4PeersMapped) {
  Sockets s;
  const int listener = s.add(::socket(AF_INET6, SOCK_STREAM, 0));
  int off = 0;
  ASSERT_EQ(::setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)), 0);
  sockaddr_in6 any{};
  any.sin6_family = AF_INET6;
  any.sin6_addr = in6addr_any;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) GTEST_SKIP() << "no IPv6 here";
  ASSERT_EQ(::listen(listener, 8), 0);
  const int port = local_port(listener);
  const int client = connect_from(s, "127.0.0.1", 0, port);
  const int accepted = s.add(::accept(listener, nullptr, nullptr));
  const int client_port = local_port(client);
  // getpeername on `accepted` gives ::ffff:127.0.0.1; httplib may print it either way.
  EXPECT_EQ(find_connection_socket({"::ffff:127.0.0.1", client_port}, {"::ffff:127.0.0.1", port}), accepted);
  EXPECT_EQ(find_connection_socket({"127.0.0.1", client_port}, {"127.0.0.1", port}), accepted);
  EXPECT_EQ(find_connection_socket({"::1", client_port}, {"127.0.0.1", port}), -1);
}

TEST(PeerSocket, Ipv6LoopbackIsFoundByItsAddress) {
  Sockets s;
  const int listener = s.add(::socket(AF_INET6, SOCK_STREAM, 0));
  sockaddr_in6 lo{};
  lo.sin6_family = AF_INET6;
  lo.sin6_addr = in6addr_loopback;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&lo), sizeof(lo)) != 0) GTEST_SKIP() << "no IPv6 loopback here";
  ASSERT_EQ(::listen(listener, 8), 0);
  lo.sin6_port = htons(uint16_t(local_port(listener)));
  const int client = s.add(::socket(AF_INET6, SOCK_STREAM, 0));
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&lo), sizeof(lo)), 0);
  const int accepted = s.add(::accept(listener, nullptr, nullptr));
  const int port = local_port(listener), client_port = local_port(client);
  EXPECT_EQ(find_connection_socket({"::1", client_port}, {"::1", port}), accepted);
  EXPECT_EQ(find_connection_socket({"127.0.0.1", client_port}, {"::1", port}), -1);
}

TEST(PeerSocket, ConnectionGoneWhenThePeerClosesOrTheNumberIsReused) {
  Sockets s;
  const int listener = ipv4_listener(s), port = local_port(listener);
  const int a = connect_from(s, "127.0.0.1", 0, port);
  const int accepted_a = s.add(::accept(listener, nullptr, nullptr));
  const Endpoint remote_a{"127.0.0.1", local_port(a)}, local{"127.0.0.1", port};
  EXPECT_FALSE(connection_gone(accepted_a, remote_a, local));
  s.close(a);
  EXPECT_TRUE(connection_gone(accepted_a, remote_a, local));

  // The number of a's socket closes and a new connection gets it (the lowest free number): still alive, but not a's.
  const int b = connect_from(s, "127.0.0.1", 0, port);
  (void)b;
  s.close(accepted_a);
  const int accepted_b = s.add(::accept(listener, nullptr, nullptr));
  ASSERT_EQ(accepted_b, accepted_a) << "the number was not reused";
  EXPECT_FALSE(peer_closed(accepted_b));
  EXPECT_TRUE(connection_gone(accepted_b, remote_a, local));
  EXPECT_FALSE(connection_gone(accepted_b, {"127.0.0.1", local_port(b)}, local));
}

}  // namespace
}  // namespace ll::serve
