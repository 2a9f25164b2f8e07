import Foundation

/// The `noop` operator: succeeds at once without running anything.
///
/// For benchmarks (it measures the scheduler, not the tasks) and tests. It ignores the blob.
public struct NoopOperator: Operator {
  /// `noop`.
  public var name: String { "noop" }

  /// Creates the operator.
  public init() {}

  public func run(_ request: RunRequest, cancellation: RunCancellation) async -> RunOutcome {
    Self.succeededNow()
  }

  /// Succeeded, now: the executor needs no task for a noop run.
  public func immediateOutcome(_ request: RunRequest) -> RunOutcome? {
    Self.succeededNow()
  }

  private static func succeededNow() -> RunOutcome {
    let now = Date()
    return RunOutcome(status: .succeeded, started: now, finished: now)
  }
}
