import Foundation
import HourglassCore

/// What the coordinator keeps in the store's opaque schedule column: the schedule and the retry
/// policy, as JSON. The store never reads it; the coordinator decodes it when a run ends.
///
/// Public so that tools which fill a store directly (the dispatch benchmark) write exactly the
/// bytes the coordinator expects.
public struct StoredTaskSpec: Codable, Sendable, Hashable {
  /// When the task runs.
  public var schedule: ScheduleSpec
  /// How failures are retried.
  public var retry: RetryPolicy

  /// Creates the stored form of a schedule and its retry policy.
  public init(schedule: ScheduleSpec, retry: RetryPolicy) {
    self.schedule = schedule
    self.retry = retry
  }

  /// The bytes for `NewTask.scheduleSpec` (JSON with sorted keys).
  public func encoded() throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Array(try encoder.encode(self))
  }

  /// Decodes what ``encoded()`` wrote.
  public static func decode(_ bytes: [UInt8]) throws -> StoredTaskSpec {
    try JSONDecoder().decode(StoredTaskSpec.self, from: Data(bytes))
  }
}
