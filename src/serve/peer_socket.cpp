#include "serve/peer_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <optional>

namespace ll::serve {

namespace {

// An IP address in one comparable form: IPv4 as 4 bytes, IPv6 as 16, with v4-mapped IPv6 reduced to its IPv4
// (a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; httplib's string may be either form).
struct IpAddress {
  int family = 0;
  std::array<unsigned char, 16> bytes{};
  bool operator==(const IpAddress& o) const { return family == o.family && bytes == o.bytes; }
};

IpAddress from_ipv6(const in6_addr& a) {
  IpAddress ip;
  if (IN6_IS_ADDR_V4MAPPED(&a)) {
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), a.s6_addr + 12, 4);
  } else {
    ip.family = AF_INET6;
    std::memcpy(ip.bytes.data(), a.s6_addr, 16);
  }
  return ip;
}

// A numeric address string; the "%zone" of a link-local IPv6 address is dropped (the port pair and the rest of
// the address still tell connections apart). nullopt when it does not parse.
std::optional<IpAddress> parse_address(const std::string& text) {
  const std::string addr = text.substr(0, text.find('%'));
  IpAddress ip;
  in_addr v4{};
  if (::inet_pton(AF_INET, addr.c_str(), &v4) == 1) {
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), &v4, 4);
    return ip;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, addr.c_str(), &v6) == 1) return from_ipv6(v6);
  return std::nullopt;
}

// The address and port of a TCP/IP socket address; nullopt for other families.
std::optional<std::pair<IpAddress, int>> endpoint_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    IpAddress ip;
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), &in.sin_addr, 4);
    return std::make_pair(ip, static_cast<int>(ntohs(in.sin_port)));
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    return std::make_pair(from_ipv6(in6.sin6_addr), static_cast<int>(ntohs(in6.sin6_port)));
  }
  return std::nullopt;
}

bool matches(const std::optional<std::pair<IpAddress, int>>& side, const IpAddress& addr, int port) {
  return side && side->second == port && side->first == addr;
}

// Both sides parsed once; the fd checks compare against these.
struct Wanted {
  IpAddress remote, local;
  int remote_port = -1, local_port = -1;
};

std::optional<Wanted> parse_wanted(const Endpoint& remote, const Endpoint& local) {
  if (remote.port <= 0 || local.port <= 0) return std::nullopt;
  const auto r = parse_address(remote.addr), l = parse_address(local.addr);
  if (!r || !l) return std::nullopt;
  return Wanted{*r, *l, remote.port, local.port};
}

bool has_endpoints(int fd, const Wanted& w) {
  sockaddr_storage local{}, peer{};
  socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) return false;
  if (!matches(endpoint_of(local), w.local, w.local_port)) return false;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) return false;
  return matches(endpoint_of(peer), w.remote, w.remote_port);
}

}  // namespace

bool socket_has_endpoints(int fd, const Endpoint& remote, const Endpoint& local) {
  const auto w = parse_wanted(remote, local);
  return fd >= 0 && w && has_endpoints(fd, *w);
}

int find_connection_socket(const Endpoint& remote, const Endpoint& local) {
  const auto w = parse_wanted(remote, local);
  if (!w) return -1;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    if (has_endpoints(fd, *w)) return fd;
  }
  return -1;
}

bool peer_closed(int fd) {
  pollfd p{};
  p.fd = fd;
  p.events = POLLRDHUP;
  if (::poll(&p, 1, 0) < 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

bool connection_gone(int fd, const Endpoint& remote, const Endpoint& local) {
  return peer_closed(fd) || !socket_has_endpoints(fd, remote, local);
}

}  // namespace ll::serve
