// build/serve: an OpenAI-compatible HTTP server over one model (LongLoRA's demo.py as a local model server), with a
// web page at /. Flags and process life only (signals, start-up, exit codes); the endpoints are in
// src/serve/http_server.h, generation in src/serve/engine.h.
//
// Start-up: it listens first (GET /health answers 503 while the model loads), then loads; a load failure ends it
// with exit status 1. SIGTERM or SIGINT: new requests get 503, the running and queued ones finish, then it exits 0.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "eval/command_flags.h"
#include "serve/engine.h"
#include "serve/http_server.h"
#include "util/error.h"
#include "util/flags.h"

namespace {

int run(int argc, char** argv) {
  ll::serve::EngineOptions eo;
  ll::serve::HttpOptions ho;
  ll::Flags f("serve",
              "An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models, /health,\n"
              "/tokenize, /detokenize) with a web page at / (attach a text file, ask, the answer streams).");
  ll::add_model_flags(f, eo,
                      "tokens the KV cache holds (prompt + completion) and the RoPE rule's context (<= 0: "
                      "max_position_embeddings × RoPE factor)");
  f.add("tokenizer", &eo.tokenizer, "tokenizer.json or tokenizer.model (default: the one in <base_model>)");
  ll::add_streaming_flags(f, eo.streaming);
  f.add("chat_template", &eo.chat_template, "auto | llama2 | llama3 | chatml | mistral | none (chat requests)");
  f.add("parse_special_tokens", &eo.parse_special_tokens,
        "special-token strings in prompts become their ids (else they stay text)");
  f.add("prefill_chunk", &eo.prefill_chunk, "prompt tokens per forward pass while prefilling").at_least(1);
  f.add("model_name", &eo.model_name, "the model's id in /v1/models and responses (default: the folder's name)");
  f.add("host", &ho.host, "address to listen on (0.0.0.0: every interface; default: this machine only)");
  f.add("port", &ho.port, "TCP port (0: any free port; the one chosen is printed)").at_least(0).at_most(65535);
  f.add("api_key", &ho.api_key, "require `Authorization: Bearer KEY` (all endpoints but / and /health)");
  f.add("max_queue", &eo.max_queue, "requests that may wait behind the running one (more: 503 + Retry-After)")
      .at_least(0)
      .at_most(4096);
  f.add("max_body_bytes", &ho.max_body_bytes, "largest request body (more: 413)").at_least(1024);
  f.add("max_gen_len", &ho.max_gen_len, "max_tokens of requests that give none (0: OpenAI's: 16 for completions, "
        "the rest of the context for chat)").at_least(0);
  f.add("temperature", &ho.sampling.temperature, "temperature of requests that give none (OpenAI's 1; demo.py: 0.6)")
      .at_least(0)
      .at_most(2);
  f.add("top_p", &ho.sampling.top_p, "top_p of requests that give none (OpenAI's 1; demo.py: 0.9)").above(0).at_most(1);
  f.add("threads", &ho.threads, "connections served at once (0: max_queue + 8)").at_least(0).at_most(4096);
  f.add("test_delay_ms", &eo.test_delay_ms, "for tests: pause this long before loading and after each generated token").at_least(0);
  if (!f.parse(argc, argv)) return 0;
  for (const std::string& note : f.notes()) std::fprintf(stderr, "%s\n", note.c_str());  // the ignored flags' lines
  LL_CHECK(!eo.base_model.empty(), "--base_model is required (a Hugging Face model folder)");
  if (eo.chat_template != "auto") ll::parse_chat_template(eo.chat_template);
  ll::ModelConfig quant_probe;  // the --bnb_4bit_* values are checked before listening, not after the load
  ll::apply_quant_options(eo.quant, /*low_rank_training=*/true, quant_probe);

  // SIGTERM / SIGINT go to one thread (sigwait); SIGPIPE (a client gone mid-write) is an error return, not a kill.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ll::serve::Engine engine(eo);
  ll::serve::HttpServer http(engine, ho, eo.max_queue);
  const int port = http.bind();
  std::fprintf(stderr, "serve: listening on http://%s:%d (loading the model)\n", ho.host.c_str(), port);
  std::fflush(stderr);

  std::atomic<int> exit_code{0};
  std::atomic<bool> exiting{false};
  std::thread loader([&] {
    try {
      engine.load(std::cerr);
      ll::serve::log_line("serve: ready on http://" + ho.host + ":" + std::to_string(port));
    } catch (const std::exception& e) {
      ll::serve::log_line("serve: error: " + ll::exception_message(e));
      exit_code = 1;
      http.stop();
    }
  });
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (exiting) return;
    ll::serve::log_line(std::string("serve: ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                        ": finishing the requests in flight, then exiting");
    http.refuse_new();
    engine.drain();
    http.stop();
  });
  if (!http.serve()) {
    ll::serve::log_line("serve: error: listening on " + ho.host + ":" + std::to_string(port) + " failed");
    exit_code = 1;
  }
  loader.join();
  exiting = true;
  pthread_kill(waiter.native_handle(), SIGTERM);  // no-op once it returned
  waiter.join();
  if (exit_code == 0) ll::serve::log_line("serve: stopped");
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("serve: ", 0) == 0) message.erase(0, 7);
    std::fprintf(stderr, "serve: error: %s\n", message.c_str());
    return 1;
  }
}
