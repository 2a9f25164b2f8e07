/// The identity of one run of a task: the task id and the run's scheduled instant.
///
/// It is deterministic, so a retry or a re-dispatch after a lost lease is the *same* run, and two
/// coordinators that both compute "the 09:00 run of task X" name the same row.
/// The text form is `<task-uuid>@<scheduled UTC microseconds>`.
public struct RunID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// The task this run belongs to.
  public var taskID: TaskID
  /// When the run was scheduled to start (UTC microseconds), not when it actually started.
  public var scheduledMicros: Int64

  /// Names the run of `taskID` scheduled at `scheduledMicros` (UTC µs).
  public init(taskID: TaskID, scheduledMicros: Int64) {
    self.taskID = taskID
    self.scheduledMicros = scheduledMicros
  }

  /// The scheduled times a run id may name: years 1 to 9999, as a protobuf timestamp holds them
  /// (a schedule's runs fall in 1970 to 9999).
  public static let scheduledRange: ClosedRange<Int64> = -62_135_596_800_000_000...253_402_300_799_999_999

  /// Parses the `<task-uuid>@<micros>` form; nil also for a time no run can have (outside
  /// ``scheduledRange``), so that no arithmetic on a peer's run id can overflow.
  public init?(_ string: String) {
    guard let at = string.lastIndex(of: "@"),
      let task = TaskID(String(string[..<at])),
      let micros = Int64(string[string.index(after: at)...]),
      Self.scheduledRange.contains(micros)
    else { return nil }
    self.init(taskID: task, scheduledMicros: micros)
  }

  /// `<task-uuid>@<micros>`.
  public var description: String { "\(taskID)@\(scheduledMicros)" }

  public static func < (lhs: RunID, rhs: RunID) -> Bool {
    (lhs.taskID, lhs.scheduledMicros) < (rhs.taskID, rhs.scheduledMicros)
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    let text = try container.decode(String.self)
    guard let id = RunID(text) else {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "not a run id: \(text)")
    }
    self = id
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}
