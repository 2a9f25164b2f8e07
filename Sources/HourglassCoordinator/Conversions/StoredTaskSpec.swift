import Foundation
import HourglassCore
import Synchronization

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
  ///
  /// Every result of a run needs its task's spec, and many tasks share one (a recurring task's
  /// bytes never change; one-shot tasks made by one tool often look alike), so recent decodings
  /// are kept: a look-up by the bytes costs a fraction of a `JSONDecoder` run.
  public static func decode(_ bytes: [UInt8]) throws -> StoredTaskSpec {
    if let known = recent.withLock({ $0[bytes] }) { return known }
    let spec = try JSONDecoder().decode(StoredTaskSpec.self, from: Data(bytes))
    recent.withLock { recent in
      if recent.count >= recentLimit { recent.removeAll(keepingCapacity: true) }
      recent[bytes] = spec
    }
    return spec
  }

  private static let recentLimit = 4096
  private static let recent = Mutex<[[UInt8]: StoredTaskSpec]>([:])
}
