#include "serve/http_server.h"

#include <httplib.h>

#include <chrono>
#include <ctime>
#include <random>
#include <thread>

#include "serve/api_error.h"
#include "serve/engine.h"
#include "serve/openai_schema.h"
#include "serve/peer_socket.h"
#include "serve/web_page.h"
#include "util/error.h"

namespace ll::serve {

using nlohmann::json;

namespace {

json streaming_json(const StreamingWindow& w) {
  if (!w.enabled()) return nullptr;
  return {{"start_size", w.start_size}, {"recent_size", w.recent_size}};
}

// Generated text may hold bytes that are not UTF-8 (a byte-level piece cut off at max_tokens): U+FFFD, not a throw.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status() == 503) res.set_header("Retry-After", "1");
  send_json(res, e.status(), e.body());
}

// Every handler's failure becomes an OpenAI-style error object: ApiError as it says, anything else a 500.
httplib::Server::Handler guarded(std::function<void(const httplib::Request&, httplib::Response&)> handler) {
  return [handler](const httplib::Request& req, httplib::Response& res) {
    try {
      handler(req, res);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      log_line(std::string("error: ") + req.method + " " + req.path + ": " + exception_message(e));
      send_error(res, ApiError(500, "internal error: " + exception_message(e)));
    }
  };
}

bool write_event(httplib::DataSink& sink, const std::string& data) {
  const std::string event = "data: " + data + "\n\n";
  return sink.write(event.data(), event.size());
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

}  // namespace

HttpServer::HttpServer(Engine& engine, HttpOptions options, int64_t max_queue)
    : engine_(engine), o_(std::move(options)), server_(std::make_unique<httplib::Server>()) {
  const size_t threads = size_t(o_.threads > 0 ? o_.threads : max_queue + 8);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(size_t(o_.max_body_bytes));
  routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = int(o_.port);
  if (o_.port == 0) {
    port = server_->bind_to_any_port(o_.host);
  } else if (!server_->bind_to_port(o_.host, port)) {
    port = -1;
  }
  LL_CHECK(port > 0, "cannot listen on ", o_.host, ":", o_.port,
           " (address in use, or --host is not an address of this machine)");
  return port;
}

bool HttpServer::serve() { return server_->listen_after_bind(); }
void HttpServer::stop() {
  // httplib's stop() does nothing before listening starts: wait for it (serve() is called right after bind()).
  for (int i = 0; i < 500 && !server_->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server_->stop();
}

void HttpServer::routes() {
  httplib::Server& s = *server_;
  const std::string key = o_.api_key;
  s.set_pre_routing_handler([key](const httplib::Request& req, httplib::Response& res) {
    if (key.empty() || req.path == "/" || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + key) return httplib::Server::HandlerResponse::Unhandled;
    send_json(res, 401, error_body(401, "missing or wrong API key: send `Authorization: Bearer KEY`", "",
                                   "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Unknown paths (404), bodies over the limit (413) and anything else httplib answers itself get an error object.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 404) message = "no such endpoint: " + req.method + " " + req.path;
    if (res.status == 413) message = "the request body is larger than the limit (--max_body_bytes)";
    send_json(res, res.status, error_body(res.status, message));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_json(res, 500, error_body(500, "internal error"));
  });

  auto require_ready = [this] {
    if (!engine_.ready()) throw ApiError(503, "the model is loading", "", "model_loading");
  };

  s.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_page(), "text/html; charset=utf-8"); });
  s.Get("/health", guarded([this, require_ready](const httplib::Request&, httplib::Response& res) {
          require_ready();
          send_json(res, 200, {{"status", "ok"}});
        }));
  s.Get("/v1/models", guarded([this, require_ready](const httplib::Request&, httplib::Response& res) {
          require_ready();
          send_json(res, 200,
                    {{"object", "list"},
                     {"data", json::array({{{"id", engine_.model_name()},
                                             {"object", "model"},
                                             {"created", unix_now()},
                                             {"owned_by", "longlora"},
                                             {"meta",
                                              {{"context_size", engine_.context_size()},
                                               {"vocab_size", engine_.vocab_size()},
                                               {"chat_template", engine_.chat_template()},
                                               {"base_weights", engine_.base_weights()},
                                               {"streaming", streaming_json(engine_.streaming_window())}}}}})}});
        }));
  s.Post("/tokenize", guarded([this, require_ready](const httplib::Request& req, httplib::Response& res) {
           require_ready();
           const json body = parse_json_object(req.body);
           if (!body.contains("content") || !body["content"].is_string())
             throw ApiError(400, "`content` must be a string", "content");
           bool add_special = false;
           if (body.contains("add_special") && !body["add_special"].is_null()) {
             if (!body["add_special"].is_boolean()) throw ApiError(400, "`add_special` must be a boolean", "add_special");
             add_special = body["add_special"].get<bool>();
           }
           send_json(res, 200, {{"tokens", engine_.tokenize(body["content"].get<std::string>(), add_special)}});
         }));
  s.Post("/detokenize", guarded([this, require_ready](const httplib::Request& req, httplib::Response& res) {
           require_ready();
           const json body = parse_json_object(req.body);
           if (!body.contains("tokens")) throw ApiError(400, "`tokens` must be an array of token ids", "tokens");
           send_json(res, 200, {{"content", engine_.detokenize(parse_token_ids(body["tokens"], "tokens"))}});
         }));

  auto completion = [this, require_ready](bool chat) {
    return guarded([this, require_ready, chat](const httplib::Request& req, httplib::Response& res) {
      require_ready();
      if (refusing_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
      const CompletionRequest r = parse_completion_request(parse_json_object(req.body), chat, o_.sampling);
      auto job = std::make_shared<Job>();
      job->prompt = engine_.prompt_ids(r);
      job->chat = chat;
      const int64_t used = int64_t(job->prompt.size());
      const StreamingWindow window = engine_.streaming_window();
      // StreamingLLM bounds nothing: the cache evicts. Its default for chat is one window of new tokens.
      const int64_t context = window.enabled() ? used + window.recent_size : engine_.context_size();
      if (used >= context)
        throw ApiError(400, "the prompt has " + std::to_string(used) + " tokens; the model's context is " +
                                std::to_string(context) + " tokens (prompt and completion together)",
                       chat ? "messages" : "prompt", "context_length_exceeded");
      // OpenAI's defaults: 16 new tokens for a completion, the rest of the context for a chat.
      job->max_tokens = r.max_tokens      ? *r.max_tokens
                        : o_.max_gen_len > 0 ? std::min(o_.max_gen_len, context - used)
                        : chat               ? context - used
                                             : std::min<int64_t>(16, context - used);
      if (!window.enabled() && used + job->max_tokens > context)
        throw ApiError(400, "this model's context is " + std::to_string(context) + " tokens, but " +
                                std::to_string(used + job->max_tokens) + " were requested (" + std::to_string(used) +
                                " in the prompt, " + std::to_string(job->max_tokens) + " for the completion)",
                       "max_tokens", "context_length_exceeded");
      job->sampling.temperature = r.temperature;
      job->sampling.top_p = r.top_p;
      job->sampling.seed = r.seed ? *r.seed : std::random_device{}();
      job->stop = r.stop;
      job->cache_prompt = r.cache_prompt;

      switch (engine_.submit(job)) {
        case Engine::Submit::Accepted: break;
        case Engine::Submit::QueueFull:
          throw ApiError(503, "the server is busy: its request queue is full; retry later", "", "queue_full");
        case Engine::Submit::Closed: throw ApiError(503, "the server is shutting down", "", "shutting_down");
      }
      ResponseId id;
      id.chat = chat;
      id.id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
      id.model = engine_.model_name();
      id.created = unix_now();
      if (!r.stream) {
        // Nothing is written before the end, so a client that leaves is noticed by watching its socket.
        const Endpoint remote{req.remote_addr, req.remote_port}, local{req.local_addr, req.local_port};
        const int fd = find_connection_socket(remote, local);
        while (!job->wait_done_for(std::chrono::milliseconds(50)))
          if (fd >= 0 && !job->cancelled() && connection_gone(fd, remote, local)) job->cancel();
        if (!job->error().empty()) throw ApiError(500, "generation failed: " + job->error());
        send_json(res, 200, completion_response(id, job->result()));
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      const bool include_usage = r.include_usage;
      auto first = std::make_shared<bool>(true);
      res.set_chunked_content_provider(
          "text/event-stream",
          [job, id, include_usage, first](size_t, httplib::DataSink& sink) {
            // A write that fails means the client went away: its generation stops.
            auto send = [&](const json& j) {
              if (write_event(sink, dump(j))) return true;
              job->cancel();
              return false;
            };
            if (*first && id.chat) {
              *first = false;
              if (!send(stream_chunk(id, "", "", true))) return false;
            }
            std::string text;
            if (job->next(&text)) {
              const bool with_role = *first;
              *first = false;
              return send(stream_chunk(id, text, "", with_role));
            }
            if (!job->error().empty()) {
              if (!send(error_body(500, "generation failed: " + job->error()))) return false;
            } else {
              if (!send(stream_chunk(id, "", job->result().finish_reason, *first))) return false;
              if (include_usage && !send(usage_chunk(id, job->result()))) return false;
            }
            const std::string done = "data: [DONE]\n\n";
            if (!sink.write(done.data(), done.size())) return false;
            sink.done();
            return true;
          },
          [job](bool success) {
            if (!success) job->cancel();
          });
    });
  };
  s.Post("/v1/completions", completion(false));
  s.Post("/v1/chat/completions", completion(true));
}

}  // namespace ll::serve
