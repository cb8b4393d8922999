#include "server/http_server.h"

#include "server/httplib_include.h"

#include <algorithm>
#include <cctype>

#include "core/log.h"
#include "server/api_error.h"
#include "server/json_fields.h"

namespace bf::server {
namespace {

bool is_known_path(const std::string& path) {
  static const char* paths[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                "/tokenize", "/detokenize", "/health", "/metrics", "/version"};
  return std::any_of(std::begin(paths), std::end(paths), [&](const char* p) { return path == p; });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Compares without an early exit, so the time taken says nothing about the key.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || b.empty()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message,
                const std::optional<std::string>& param = std::nullopt) {
  send_json(res, status, error_json(status, type, message, param));
}

}  // namespace

struct HttpServer::Impl {
  explicit Impl(ServerState& s) : state(s) {}

  using JsonHandler = std::function<HandlerResponse(ServerState&, const nlohmann::json&, const std::string&)>;

  void check_auth(const httplib::Request& req) const {
    const std::string& key = state.options.api_key;
    if (key.empty() || req.path.rfind("/v1", 0) != 0) return;
    std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.size() > prefix.size() && lower(header.substr(0, prefix.size())) == "bearer " &&
        same_secret(header.substr(prefix.size()), key))
      return;
    throw ApiError(401, "AuthenticationError", "Unauthorized");
  }

  // Runs a JSON POST handler; every failure becomes an error response.
  void serve_json(const httplib::Request& req, httplib::Response& res, const JsonHandler& handler) {
    try {
      check_auth(req);
      std::string content_type = lower(req.get_header_value("Content-Type"));
      std::string media_type = content_type.substr(0, content_type.find(';'));
      media_type.erase(media_type.find_last_not_of(" \t") + 1);
      if (media_type != "application/json")
        bad_request("Unsupported Media Type: Only 'application/json' is allowed");
      nlohmann::json body = parse_json_body(req.body);
      HandlerResponse response = handler(state, body, req.body);
      if (!response.stream) {
        send_json(res, response.status, response.body);
        return;
      }
      auto stream = std::make_shared<std::function<void(const SseWrite&)>>(std::move(response.stream));
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream", [stream](size_t, httplib::DataSink& sink) {
            bool client_gone = false;
            SseWrite write = [&](const std::string& payload) {
              if (client_gone) return false;
              std::string event = "data: " + payload + "\n\n";
              client_gone = !sink.write(event.data(), event.size());
              return !client_gone;
            };
            try {
              (*stream)(write);
            } catch (const ApiError& e) {
              write(dump_json(error_json(e)));
              write("[DONE]");
            } catch (const std::exception& e) {
              log_error("stream failed: ", e.what());
              write(dump_json(error_json(500, "InternalServerError", e.what())));
              write("[DONE]");
            }
            stream->operator=(nullptr);  // drops the request group now: aborts what still runs
            if (client_gone) return false;
            sink.done();
            return true;
          });
    } catch (const ApiError& e) {
      if (e.status() >= 500) log_error(req.path, ": ", e.what());
      send_json(res, e.status(), error_json(e));
    } catch (const Error& e) {
      send_error(res, 400, "BadRequestError", e.what());
    } catch (const std::exception& e) {
      log_error(req.method, " ", req.path, " failed: ", e.what());
      send_error(res, 500, "InternalServerError", std::string("internal error: ") + e.what());
    } catch (...) {
      log_error(req.method, " ", req.path, " failed with an unknown exception");
      send_error(res, 500, "InternalServerError", "internal error");
    }
  }

  void serve_get(const httplib::Request& req, httplib::Response& res,
                 const std::function<void(httplib::Response&)>& handler) {
    try {
      check_auth(req);
      handler(res);
    } catch (const ApiError& e) {
      send_json(res, e.status(), error_json(e));
    } catch (const std::exception& e) {
      log_error(req.method, " ", req.path, " failed: ", e.what());
      send_error(res, 500, "InternalServerError", std::string("internal error: ") + e.what());
    }
  }

  void setup() {
    const int threads = state.options.http_threads > 0
                            ? state.options.http_threads
                            : std::max(32, 2 * state.engine.engine().config().max_num_seqs + 8);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server.set_payload_max_length(state.options.max_body_bytes);
    server.set_read_timeout(30, 0);
    server.set_write_timeout(10, 0);
    server.set_keep_alive_max_count(1000);

    auto post = [&](const char* path, JsonHandler handler) {
      server.Post(path, [this, handler](const httplib::Request& req, httplib::Response& res) {
        serve_json(req, res, handler);
      });
    };
    post("/v1/completions", [](ServerState& s, const nlohmann::json& b, const std::string&) {
      return handle_completions(s, b);
    });
    post("/v1/chat/completions", [](ServerState& s, const nlohmann::json& b, const std::string& raw) {
      return handle_chat_completions(s, b, raw);
    });
    post("/tokenize", [](ServerState& s, const nlohmann::json& b, const std::string& raw) {
      return handle_tokenize(s, b, raw);
    });
    post("/detokenize", [](ServerState& s, const nlohmann::json& b, const std::string&) {
      return handle_detokenize(s, b);
    });
    server.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      serve_get(req, res, [&](httplib::Response& r) { send_json(r, 200, models_json(state)); });
    });
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.status = 200; });
    server.Get("/version", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"version", "blockflash 0.1.0"}});
    });
    server.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      serve_get(req, res, [&](httplib::Response& r) {
        r.status = 200;
        r.set_content(state.metrics.render(state.engine.stats(), state.model_name()),
                      "text/plain; version=0.0.4; charset=utf-8");
      });
    });

    // Errors httplib itself produces (no route, body too large, unparsable request) and any
    // error response without a body get OpenAI's error JSON.
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      int status = res.status;
      std::string message;
      if (status == 404 && is_known_path(req.path)) {
        status = 405;
        message = "Method Not Allowed";
      } else if (status == 404) {
        message = "Not Found: " + req.path;
      } else if (status == 413) {
        message = "the request body is larger than the server's limit (--max-body-bytes)";
      } else {
        message = status == 400 ? "Bad Request: the HTTP request could not be parsed" : "HTTP error";
      }
      res.status = status;
      res.set_content(dump_json(error_json(status, error_type_for_status(status), message)),
                      "application/json");
    });
    server.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          log_error(req.method, " ", req.path, " failed: ", what);
          send_error(res, 500, "InternalServerError", "internal error: " + what);
        });
    server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      log_info(req.remote_addr, ":", req.remote_port, " \"", req.method, " ", req.path, "\" ",
               res.status);
    });
  }

  ServerState& state;
  httplib::Server server;
  int bound_port = -1;
};

HttpServer::HttpServer(ServerState& state) : impl_(std::make_unique<Impl>(state)) { impl_->setup(); }

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind() {
  const ServerOptions& o = impl_->state.options;
  if (o.port == 0) {
    impl_->bound_port = impl_->server.bind_to_any_port(o.host);
    BF_CHECK(impl_->bound_port > 0, "cannot listen on ", o.host, " (any port)");
  } else {
    BF_CHECK(impl_->server.bind_to_port(o.host, o.port), "cannot listen on ", o.host, ":", o.port,
             " (address in use or not available)");
    impl_->bound_port = o.port;
  }
}

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::run() { impl_->server.listen_after_bind(); }

void HttpServer::stop() {
  if (!impl_) return;
  impl_->state.shutting_down = true;
  if (impl_->server.is_running()) impl_->server.stop();
}

}  // namespace bf::server
