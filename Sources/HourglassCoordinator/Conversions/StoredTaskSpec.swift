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

  /// The bytes for `NewTask.scheduleSpec`: `{"retry": …, "schedule": …}`, the documented JSON
  /// shapes with sorted keys — the same document `JSONEncoder` writes for this `Codable` value
  /// (with `/` unescaped), written without `Codable`, which cost ~20% of a Schedule call's CPU.
  public func encoded() -> [UInt8] {
    var writer = JSONBytesWriter()
    writer.object { w in
      w.member("retry", value: { retry.writeJSON(to: &$0) })
      w.member("schedule", value: { schedule.writeJSON(to: &$0) })
    }
    return writer.bytes
  }

  /// Decodes what ``encoded()`` (or `JSONEncoder`, in earlier versions) wrote.
  ///
  /// Every result of a run needs its task's spec, and many tasks share one (a recurring task's
  /// bytes never change; one-shot tasks made by one tool often look alike), so recent decodings
  /// are kept: a look-up by the bytes costs a fraction of even the Codable-free reader.
  public static func decode(_ bytes: [UInt8]) throws -> StoredTaskSpec {
    if let known = recent.withLock({ $0[bytes] }) { return known }
    let document = try JSONFields(try JSONValue.parse(bytes), path: "")
    guard let retry = document.value("retry"), let schedule = document.value("schedule") else {
      throw ScheduleValidationError(field: "stored spec", reason: "retry and schedule are required")
    }
    let spec = StoredTaskSpec(schedule: try ScheduleSpec(json: schedule), retry: try RetryPolicy(json: retry))
    recent.withLock { recent in
      if recent.count >= recentLimit { recent.removeAll(keepingCapacity: true) }
      recent[bytes] = spec
    }
    return spec
  }

  private static let recentLimit = 4096
  private static let recent = Mutex<[[UInt8]: StoredTaskSpec]>([:])
}
