import Foundation
import HourglassCore

/// What the coordinator keeps in the store's opaque schedule column: the schedule and the retry
/// policy, as JSON. The store never reads it; the coordinator decodes it when a run ends.
struct StoredTaskSpec: Codable, Sendable, Hashable {
  /// When the task runs.
  var schedule: ScheduleSpec
  /// How failures are retried.
  var retry: RetryPolicy

  func encoded() throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Array(try encoder.encode(self))
  }

  static func decode(_ bytes: [UInt8]) throws -> StoredTaskSpec {
    try JSONDecoder().decode(StoredTaskSpec.self, from: Data(bytes))
  }
}
