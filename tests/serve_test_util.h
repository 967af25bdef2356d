// build/serve as a child process for the HTTP tests: started on a free loopback port (--port 0, the port read from
// its log), waited for until /health answers 200, stopped with SIGTERM (or SIGKILL when a test ends early).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "util/files.h"

namespace ll::test {

class ServerProcess {
 public:
  ServerProcess(const std::string& binary, std::vector<std::string> args, const std::string& log_path)
      : log_path_(log_path) {
    args.insert(args.begin(), binary);
    args.push_back("--port");
    args.push_back("0");
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1), ::dup2(fd, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Waits for the port in the log, then for /health 200. False (with the log in *why) on timeout or exit.
  bool wait_ready(std::string* why, double seconds = 120) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *why = "build/serve exited early:\n" + log();
        return false;
      }
      std::smatch m;
      const std::string text = log();
      if (port_ == 0 && std::regex_search(text, m, listening)) port_ = std::stoi(m[1]);
      if (port_ > 0) {
        httplib::Client c("127.0.0.1", port_);
        if (auto r = c.Get("/health"); r && r->status == 200) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    *why = "build/serve did not become ready:\n" + log();
    return false;
  }
  int port() const { return port_; }
  std::string log() const { return path_exists(log_path_) ? read_bytes(log_path_) : std::string(); }
  // SIGTERM, then its exit status (-1 when it did not exit normally within `seconds`).
  int terminate(double seconds = 60) {
    ::kill(pid_, SIGTERM);
    return wait_exit(seconds);
  }
  int wait_exit(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// The `data: ` payloads of a Server-Sent Events body, in order.
inline std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find("\n\n", at);
    if (end == std::string::npos) end = body.size();
    const std::string event = body.substr(at, end - at);
    if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    at = end + 2;
  }
  return out;
}

}  // namespace ll::test
