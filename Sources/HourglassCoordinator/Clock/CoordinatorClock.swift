import HourglassCore

/// The coordinator's sense of time: wall-clock instants in UTC microseconds, and sleeping until
/// one. Injected so tests can drive time by hand instead of sleeping.
public protocol CoordinatorClock: Sendable {
  /// The current instant, UTC microseconds since the Unix epoch.
  func nowMicros() -> Int64
  /// Suspends until `nowMicros() >= deadline`, or throws `CancellationError` when cancelled.
  func sleep(untilMicros deadline: Int64) async throws
}

/// The real clock: the system's wall clock, sleeping on the continuous clock.
public struct SystemCoordinatorClock: CoordinatorClock {
  /// Creates the system clock.
  public init() {}

  public func nowMicros() -> Int64 { WallClock.nowMicros() }

  public func sleep(untilMicros deadline: Int64) async throws {
    let delay = deadline - nowMicros()
    if delay > 0 {
      try await Task.sleep(for: .microseconds(delay))
    }
  }
}
