// Time seam. Every timeout, heartbeat deadline and backoff in dd2 reads a Clock, so tests drive
// time with FakeClock::Advance instead of sleeping. Times are milliseconds since the Unix epoch.
#ifndef DD2_COMMON_CLOCK_H_
#define DD2_COMMON_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace dd2 {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class RealClock : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// Not thread-safe; for single-threaded tests.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_; }
  void Advance(int64_t ms) { now_ms_ += ms; }

 private:
  int64_t now_ms_;
};

}  // namespace dd2

#endif  // DD2_COMMON_CLOCK_H_
