import HourglassCoordinator
import Synchronization

/// A clock that moves only when the test says so; sleepers wake when it passes their deadline.
final class ManualClock: CoordinatorClock {
  private struct Sleeper {
    var deadline: Int64
    var continuation: CheckedContinuation<Void, any Error>
  }

  private let state: Mutex<(now: Int64, sleepers: [UInt64: Sleeper], next: UInt64)>
  /// Tests waiting for someone to sleep until a given deadline.
  private let sleepWatchers = Mutex<[(deadline: Int64, continuation: AsyncStream<Void>.Continuation)]>([])

  init(nowMicros: Int64) {
    state = Mutex((nowMicros, [:], 0))
  }

  func nowMicros() -> Int64 { state.withLock { $0.now } }

  /// Moves time forward and wakes every sleeper whose deadline has come.
  func advance(byMicros delta: Int64) {
    let woken = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
      state.now += delta
      let now = state.now
      let due = state.sleepers.filter { $0.value.deadline <= now }
      for key in due.keys { state.sleepers[key] = nil }
      return due.values.map(\.continuation)
    }
    for continuation in woken { continuation.resume() }
  }

  /// A signal for tests: the returned stream yields once some task sleeps until exactly
  /// `deadline` (at once if one already does), so the clock can then be moved past it without
  /// racing the sleeper.
  func expectSleeper(until deadline: Int64) -> AsyncStream<Void> {
    let (stream, continuation) = AsyncStream<Void>.makeStream()
    // Watch first, then look: a sleeper registers itself first, then looks for watchers, so
    // one of the two sides always sees the other (both may; a finished stream ignores the rest).
    sleepWatchers.withLock { $0.append((deadline, continuation)) }
    if state.withLock({ $0.sleepers.values.contains { $0.deadline == deadline } }) {
      continuation.yield()
      continuation.finish()
    }
    return stream
  }

  func sleep(untilMicros deadline: Int64) async throws {
    let id = state.withLock { state -> UInt64 in
      state.next += 1
      return state.next
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let resumeNow = state.withLock { state -> Bool in
          if state.now >= deadline || Task.isCancelled { return true }
          state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
          return false
        }
        if resumeNow {
          continuation.resume()
        } else {
          let watchers = sleepWatchers.withLock { watchers in
            let matching = watchers.filter { $0.deadline == deadline }
            watchers.removeAll { $0.deadline == deadline }
            return matching
          }
          for watcher in watchers {
            watcher.continuation.yield()
            watcher.continuation.finish()
          }
        }
      }
    } onCancel: {
      let continuation = state.withLock { $0.sleepers.removeValue(forKey: id)?.continuation }
      continuation?.resume(throwing: CancellationError())
    }
    try Task.checkCancellation()
  }
}
