// AsyncEngine's queue limit (--max-queue): a finished request's place must be free by the time
// a client can read its last update, or the client's next request gets a spurious 503.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "device_under_test.h"
#include "engine/async_engine.h"

namespace bf {
namespace {

TEST(AsyncEngine, FinishedRequestsPlaceIsFreeWhenItsLastUpdateArrives) {
  auto backend = make_cpu_backend();
  const auto dir = test::goldens_dir() / "dense_nested";
  auto model = Model::load(dir, *backend);
  auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_model_dir(dir));
  EngineConfig config;
  config.max_model_len = 64;
  config.cache_memory_bytes = size_t{64} << 20;
  AsyncEngine engine(std::make_unique<Engine>(std::move(model), tokenizer, config, nullptr),
                     /*max_pending=*/1);
  // The window was a few instructions wide: repeat so that a regression shows.
  for (int i = 0; i < 50; ++i) {
    EngineRequest request;
    request.prompt_token_ids = {1, 2, 3};
    request.params.max_tokens = 2;
    request.params.temperature = 0.0f;
    std::shared_ptr<RequestStream> stream;
    ASSERT_NO_THROW(stream = engine.submit(request)) << "request " << i;
    SequenceUpdate update;
    do {
      ASSERT_TRUE(stream->next(update, std::chrono::milliseconds(5000))) << "request " << i;
    } while (!update.finished);
    EXPECT_EQ(engine.num_pending(), 0) << "request " << i;
  }
  // And the limit itself: a second request while one is pending is refused.
  EngineRequest slow;
  slow.prompt_token_ids = {1, 2, 3};
  slow.params.max_tokens = 40;
  slow.params.ignore_eos = true;
  auto first = engine.submit(slow);
  EXPECT_THROW(engine.submit(slow), QueueFullError);
  engine.abort(first->request_id());
}

}  // namespace
}  // namespace bf
