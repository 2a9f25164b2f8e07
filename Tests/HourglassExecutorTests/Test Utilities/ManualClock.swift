import Synchronization

/// A clock that moves only when a test advances it; sleepers wake when their deadline is
/// reached. A sleep whose deadline has already passed returns at once, so a test may advance
/// before the sleeper has started to wait.
final class ManualClock: Clock, Sendable {
  struct Instant: InstantProtocol, CustomStringConvertible {
    var offset: Duration

    func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
    func duration(to other: Instant) -> Duration { other.offset - offset }
    static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    var description: String { "t+\(offset)" }
  }

  private struct Sleeper {
    var deadline: Instant
    var continuation: CheckedContinuation<Void, any Error>
  }

  private struct State {
    var now = Instant(offset: .zero)
    var sleepers: [UInt64: Sleeper] = [:]
    var nextID: UInt64 = 0
    var watchers: [(within: Duration, continuation: CheckedContinuation<Void, Never>)] = []
  }

  private let state = Mutex(State())

  init() {}

  var now: Instant { state.withLock { $0.now } }
  var minimumResolution: Duration { .zero }

  func sleep(until deadline: Instant, tolerance: Duration?) async throws {
    let id = state.withLock { state in
      state.nextID += 1
      return state.nextID
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        var watchersToWake: [CheckedContinuation<Void, Never>] = []
        let resumeNow: Result<Void, any Error>? = state.withLock { state in
          if Task.isCancelled { return .failure(CancellationError()) }
          if deadline <= state.now { return .success(()) }
          state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
          let now = state.now
          let woken = state.watchers.filter { now.duration(to: deadline) <= $0.within }
          state.watchers.removeAll { now.duration(to: deadline) <= $0.within }
          watchersToWake = woken.map(\.continuation)
          return nil
        }
        for watcher in watchersToWake { watcher.resume() }
        if let resumeNow { continuation.resume(with: resumeNow) }
      }
    } onCancel: {
      let sleeper = state.withLock { $0.sleepers.removeValue(forKey: id) }
      sleeper?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Returns once someone sleeps until a deadline no more than `within` from now (a timer the
  /// code under test armed in reaction to an event the test cannot otherwise see).
  func waitForSleeper(dueWithin within: Duration) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let found: Bool = state.withLock { state in
        let now = state.now
        if state.sleepers.values.contains(where: { now.duration(to: $0.deadline) <= within }) { return true }
        state.watchers.append((within, continuation))
        return false
      }
      if found { continuation.resume() }
    }
  }

  /// Moves the clock forward and wakes every sleeper whose deadline is reached.
  func advance(by duration: Duration) {
    let due: [Sleeper] = state.withLock { state in
      state.now = state.now.advanced(by: duration)
      let now = state.now
      let due = state.sleepers.filter { $0.value.deadline <= now }
      for id in due.keys { state.sleepers[id] = nil }
      return due.values.sorted { $0.deadline < $1.deadline }
    }
    for sleeper in due { sleeper.continuation.resume() }
  }
}
