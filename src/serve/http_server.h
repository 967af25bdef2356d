// The HTTP layer (Debian's cpp-httplib): the OpenAI-compatible endpoints over an Engine, the web page, the API-key
// check, the body limit, and OpenAI-style error objects for every failure (a handler's exception is a 500, never a
// crash).
//   GET  /                      the web page (web_page.h)
//   GET  /health                503 while the model loads, then {"status": "ok"}
//   GET  /v1/models             the one model served
//   POST /v1/completions        OpenAI's completions (stream: SSE ending with `data: [DONE]`)
//   POST /v1/chat/completions   OpenAI's chat completions, through the model's chat template
//   POST /tokenize              {"content", "add_special"} → {"tokens"}
//   POST /detokenize            {"tokens"} → {"content"}
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "serve/openai_schema.h"

namespace httplib {
class Server;
}

namespace ll::serve {

class Engine;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int64_t port = 8898;  // 0: any free port
  std::string api_key;  // "" = no check; else `Authorization: Bearer KEY` on every endpoint but / and /health
  int64_t max_body_bytes = 16 << 20;
  int64_t threads = 0;  // connections served at once; 0 = max_queue + 8
  // demo.py's flags as the defaults of requests that leave them out (max_gen_len 0: OpenAI's max_tokens defaults).
  SamplingDefaults sampling;
  int64_t max_gen_len = 0;
};

class HttpServer {
 public:
  HttpServer(Engine& engine, HttpOptions options, int64_t max_queue);
  ~HttpServer();
  // Binds (throws ll::Error naming the address when it cannot) and returns the port.
  int bind();
  // Serves until stop(); returns false when listening failed.
  bool serve();
  void stop();
  // New completion requests get 503 from now on (shutting down).
  void refuse_new() { refusing_ = true; }

 private:
  void routes();
  Engine& engine_;
  HttpOptions o_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<bool> refusing_{false};
  std::atomic<int64_t> next_id_{1};
};

}  // namespace ll::serve
