/// Why a schedule (or one of its parts) was refused: the field at fault and the reason.
///
/// Every check in the schedule model throws this instead of crashing or guessing, so a user sees
/// exactly what to fix. ``description`` is `field: reason`, e.g. `cron: hour 24 out of range 0-23`
/// or `time-zone: unknown IANA time zone "Mars/Olympus"`.
public struct ScheduleValidationError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The field of the schedule at fault: `cron`, `every`, `at`, `time-zone`, `start`, `end`,
  /// `max-runs`, `jitter`, `misfire`, `retry`, `priority`, …
  public var field: String
  /// What is wrong with it, in words a user can act on.
  public var reason: String

  /// Creates an error for `field` explaining `reason`.
  public init(field: String, reason: String) {
    self.field = field
    self.reason = reason
  }

  /// `field: reason`.
  public var description: String { "\(field): \(reason)" }
}
