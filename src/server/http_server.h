// The HTTP front: routes (vLLM's paths), API-key check on /v1/*, body size limit, JSON
// content-type check, and the one place where every failure becomes OpenAI's error JSON with
// its status, so no request can take the server down. cpp-httplib stays behind this header.
#pragma once

#include <memory>

#include "server/server_state.h"

namespace bf::server {

class HttpServer {
 public:
  explicit HttpServer(ServerState& state);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds state.options.host:port (port 0: any free port); bf::Error when it cannot.
  void bind();
  int port() const;
  // Serves until stop() (from another thread or a signal-watching thread).
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bf::server
